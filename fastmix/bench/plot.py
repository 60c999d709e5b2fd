"""Throughput (images per second) by operator, contender and size, on a log scale: one panel per
size, one bar per timed operator row. Extrapolated rows are hatched."""
from __future__ import annotations

import math
from pathlib import Path

KIND_COLOURS = {"fastmix-kernel": "#1b7837", "fastmix-pytorch": "#7fbf7b", "reference": "#b2182b", "peer": "#2166ac"}
KIND_LABELS = {"fastmix-kernel": "fastmix kernel path", "fastmix-pytorch": "fastmix PyTorch path",
               "reference": "reference structure", "peer": "peer library"}
SIZE_ORDER = ("cifar", "imagenet", "coco")
OPERATOR_ORDER = ("mixup", "cutmix", "cutout", "saliencymix", "sage", "copy_paste")


def plot_throughput(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [r for r in results["rows"] if r["suite"] == "operators" and r["status"] == "ok"]
    sizes = [s for s in SIZE_ORDER if any(r["size"] == s for r in rows)]
    if not sizes:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no timed rows", ha="center", va="center")
        ax.axis("off")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return
    heights = [max(2.0, 0.28 * sum(r["size"] == s for r in rows) + 1.0) for s in sizes]
    fig, axes = plt.subplots(len(sizes), 1, figsize=(11, sum(heights)), gridspec_kw={"height_ratios": heights},
                             squeeze=False)
    for ax, size in zip(axes[:, 0], sizes):
        size_rows = sorted((r for r in rows if r["size"] == size),
                           key=lambda r: (OPERATOR_ORDER.index(r["operator"]), -r["images_per_s"]))
        labels = [f"{r['operator']}: {r['contender']}" for r in size_rows]
        values = [r["images_per_s"] for r in size_rows]
        bars = ax.barh(range(len(values)), values, color=[KIND_COLOURS.get(r["kind"], "grey") for r in size_rows])
        for bar, r in zip(bars, size_rows):
            if r.get("extrapolated"):
                bar.set_hatch("//")
        ax.set_yticks(range(len(values)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        # Whole decades on both sides: an autoscaled log axis over a narrow range makes a 10%
        # difference look like a factor of ten.
        low, high = min(values), max(values)
        ax.set_xlim(10 ** math.floor(math.log10(low)), 10 ** math.ceil(math.log10(high) + 1e-9))
        ax.set_xlabel("images per second (log scale)")
        ax.set_title(size_rows[0]["size_label"], fontsize=9)
        ax.grid(axis="x", which="both", alpha=0.3)
    handles = [Patch(color=c, label=KIND_LABELS[k]) for k, c in KIND_COLOURS.items()]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="extrapolated from a sub-batch"))
    axes[0, 0].legend(handles=handles, fontsize=7, loc="lower right")
    meta = results["meta"]
    fig.suptitle(f"fastmix throughput on {meta['device_name']} ({meta['started']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
