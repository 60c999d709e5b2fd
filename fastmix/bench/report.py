"""Writes a run's results (results.json, results.md, throughput.png) and the per-device index of a
results folder's README.md (benchmarks/results/README.md in the source checkout).

    python -m fastmix.bench.report benchmarks/results     # refresh the README's per-device sections

Ratios are always "contender time / fastmix time" on the same device, inputs and run: above 1
fastmix is faster. The fastmix time of an operator is its kernel-path row, or its PyTorch-path
row where the kernel path is the PyTorch path (the CPU).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

FASTMIX_KINDS = ("fastmix-kernel", "fastmix-pytorch")
SIZE_ORDER = ("cifar", "imagenet", "coco")
OPERATOR_NAMES = {"mixup": "Mixup", "cutmix": "CutMix", "cutout": "CutOut", "saliencymix": "SaliencyMix",
                  "sage": "SAGE / saliency-guided", "copy_paste": "Copy-Paste", "none": "no mixing"}
README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


def write_table_and_json(out: str | Path, markdown_lines: list[str], data) -> Path:
    """A side-by-side benchmark's two result files: `out` (markdown) and `out` with .json."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(markdown_lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(f"wrote {out}")
    return out


def fastmix_row(rows: list[dict], size: str, operator: str) -> dict | None:
    """The row that stands for fastmix: kernel path when timed, else the PyTorch path."""
    candidates = [r for r in rows if r["suite"] == "operators" and r["size"] == size and r["operator"] == operator
                  and r["kind"] in FASTMIX_KINDS and r["status"] == "ok"]
    candidates.sort(key=lambda r: FASTMIX_KINDS.index(r["kind"]))
    return candidates[0] if candidates else None


def key_ratios(rows: list[dict]) -> list[dict]:
    """fastmix against every other timed contender, per size and operator."""
    out = []
    for row in rows:
        if row["suite"] != "operators" or row["status"] != "ok" or row["kind"] in FASTMIX_KINDS:
            continue
        base = fastmix_row(rows, row["size"], row["operator"])
        if base is None:
            continue
        out.append({"size": row["size"], "size_label": row["size_label"], "operator": row["operator"],
                    "contender": row["contender"], "fastmix": base["contender"], "ratio": row["median_ms"] / base["median_ms"],
                    "contender_ms": row["median_ms"], "fastmix_ms": base["median_ms"],
                    "extrapolated": row.get("extrapolated") or base.get("extrapolated")})
    # the kernel path against the PyTorch path, where both were timed
    for size in SIZE_ORDER:
        for operator in OPERATOR_NAMES:
            pair = {r["kind"]: r for r in rows if r["suite"] == "operators" and r["size"] == size
                    and r["operator"] == operator and r["kind"] in FASTMIX_KINDS and r["status"] == "ok"}
            if len(pair) == 2:
                k, p = pair["fastmix-kernel"], pair["fastmix-pytorch"]
                out.append({"size": size, "size_label": k["size_label"], "operator": operator, "contender": p["contender"],
                            "fastmix": k["contender"], "ratio": p["median_ms"] / k["median_ms"], "contender_ms": p["median_ms"],
                            "fastmix_ms": k["median_ms"], "extrapolated": k.get("extrapolated") or p.get("extrapolated")})
    return out


def _ms(value) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _ratio(value: float) -> str:
    return f"{value:.3g}x" if value < 100 else f"{value:,.0f}x"


def _ratio_phrase(r: dict) -> str:
    speed = f"{_ratio(r['ratio'])} faster" if r["ratio"] >= 1 else f"{_ratio(1 / r['ratio'])} slower"
    mark = " (extrapolated)" if r["extrapolated"] else ""
    return (f"{OPERATOR_NAMES[r['operator']]}, {r['size_label']}: {r['fastmix']} {_ms(r['fastmix_ms'])} ms vs "
            f"{r['contender']} {_ms(r['contender_ms'])} ms: fastmix is **{speed}**{mark}")


def _versions_line(versions: dict) -> str:
    shown = [f"{k} {v}" for k, v in versions.items() if v and k not in ("torch_runtime",)]
    return ", ".join(shown)


def markdown(results: dict) -> str:
    meta, rows = results["meta"], results["rows"]
    bw = meta["copy_bandwidth"]
    lines = [f"# fastmix benchmarks: {meta['device_name']} ({meta['device']['type']})", "",
             f"- Run: {meta['started']}, {meta['duration_s']} s, size `{meta['size']}`, commit {meta.get('git_commit')}, "
             f"command `{meta['command']}`" + (f" (from `{meta['cwd']}`)" if meta.get("cwd") else "") + ".",
             f"- Device: {json.dumps(meta['device'])}.",
             f"- Versions: {_versions_line(meta['versions'])}.",
             f"- Copy bandwidth measured in this run: **{bw['GB_per_s']:.1f} GB/s** (read + write, "
             f"{bw['buffer_bytes'] / 2**20:.0f} MiB buffer); the floor of a row is the bytes it must move over it.",
             f"- Timing: {meta['timing_method']}. Settings: {json.dumps(meta['settings'])}.",
             ]
    if meta.get("load_average_start"):
        lines.append(f"- Load average (1, 5, 15 min) at start {meta['load_average_start']}, at end {meta.get('load_average_end')}: "
                     "other processes on the machine share its cores and inflate times.")
    lines += ["", "## Key ratios", "",
              "Contender median time over fastmix median time, same device, same inputs, same run.", ""]
    ratios = key_ratios(rows)
    lines += [f"- {_ratio_phrase(r)}" for r in ratios] or ["- none (no pair of timed rows)"]

    for size in SIZE_ORDER:
        size_rows = [r for r in rows if r["suite"] == "operators" and r["size"] == size]
        if not size_rows:
            continue
        lines += ["", f"## Operators: {size_rows[0]['size_label']}, {size_rows[0]['dtype']} on {meta['device_name']}", "",
                  "| operator | contender | library | median ms | IQR ms | images/s | vs fastmix | floor ms | % of floor | note |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in size_rows:
            lines.append(_operator_line(r, rows))
    step_rows = [r for r in rows if r["suite"] == "train_step"]
    if step_rows:
        lines += ["", f"## Training-step overhead (ResNet-18, SGD, float32) on {meta['device_name']}", "",
                  "| size | step | median ms | IQR ms | overhead vs no mixing | note |", "|---|---|---:|---:|---:|---|"]
        for r in step_rows:
            lines.append(_step_line(r, step_rows))
    problems = [r for r in rows if r["status"] in ("skipped", "failed")]
    if problems:
        lines += ["", "## Skipped and failed", ""]
        lines += [f"- {r['status']}: {r['size']} {r['suite']} {r['operator']} / {r['contender']}: {r['reason']}" for r in problems]
    lines.append("")
    return "\n".join(lines)


def _operator_line(r: dict, rows: list[dict]) -> str:
    name = OPERATOR_NAMES[r["operator"]]
    if r["status"] != "ok":
        status = {"same_as": f"= {r['reason']}", "skipped": f"skipped: {r['reason']}", "failed": f"FAILED: {r['reason']}"}
        note = status[r["status"]] if r["status"] != "same_as" else r["note"]
        return f"| {name} | {r['contender']} | {r['library']} | | | | | | | {note} |"
    base = fastmix_row(rows, r["size"], r["operator"])
    vs = _ratio(r["median_ms"] / base["median_ms"]) if base else ""
    floor = r.get("floor_ms")
    fraction = f"{100 * r['fraction_of_floor']:.2g}%" if r.get("fraction_of_floor") is not None else ""
    return (f"| {name} | {r['contender']} | {r['library']} | {_ms(r['median_ms'])} | {_ms(r['iqr_ms'])} | "
            f"{r['images_per_s']:,.0f} | {vs} | {_ms(floor)} | {fraction} | {r['note']} |")


def _step_line(r: dict, step_rows: list[dict]) -> str:
    if r["status"] != "ok":
        return f"| {r['size_label']} | {r['contender']} | | | | {r['status']}: {r['reason']} |"
    base = next((b for b in step_rows if b["size"] == r["size"] and b["kind"] == "baseline" and b["status"] == "ok"), None)
    overhead = ""
    if base is not None and r is not base:
        extra = r["median_ms"] - base["median_ms"]
        overhead = f"{extra:+.3g} ms ({100 * extra / base['median_ms']:+.0f}%)"
    return f"| {r['size_label']} | {r['contender']} | {_ms(r['median_ms'])} | {_ms(r['iqr_ms'])} | {overhead} | {r['note']} |"


def write_results(results: dict, out_dir: Path) -> list[str]:
    """Writes the files and returns their names; the plot is skipped (and the reason recorded in
    meta["plot_skipped"]) when matplotlib is not installed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401
        plot = True
    except ImportError:
        plot = False
        results["meta"]["plot_skipped"] = "matplotlib is not installed (pip install 'fastmix[bench]')"
    results = {**results, "key_ratios": key_ratios(results["rows"])}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "results.md").write_text(markdown(results))
    written = ["results.json", "results.md"]
    if plot:
        from .plot import plot_throughput

        plot_throughput(results, out_dir / "throughput.png")
        written.append("throughput.png")
    return written


def readme_sections(root: Path) -> str:
    """One section per results folder under `root`: device, key ratios, table link, plot."""
    parts = []
    for path in sorted(root.glob("*/results.json")):
        results = json.loads(path.read_text())
        meta = results["meta"]
        folder = path.parent.name
        label = "CPU" if meta["device"]["type"] == "cpu" else "GPU"
        parts += [f"### {label}: {meta['device_name']} (`{folder}/`, {meta['started']}, size `{meta['size']}`)", "",
                  f"Full table: [{folder}/results.md]({folder}/results.md); raw rows: "
                  f"[{folder}/results.json]({folder}/results.json).", ""]
        parts += [f"- {_ratio_phrase(r)}" for r in key_ratios(results["rows"])] or ["- no timed pairs"]
        parts += ["", f"![throughput on {meta['device_name']}]({folder}/throughput.png)", ""]
    return "\n".join(parts)


def update_readme(root: Path) -> Path:
    readme = root / "README.md"
    text = readme.read_text() if readme.exists() else f"# Benchmark results\n\n{README_BEGIN}\n{README_END}\n"
    if README_BEGIN not in text or README_END not in text:
        text = text.rstrip() + f"\n\n{README_BEGIN}\n{README_END}\n"
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{readme_sections(root)}\n{README_END}{tail}")
    return readme


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m fastmix.bench.report RESULTS_ROOT   (e.g. benchmarks/results)")
    print(f"updated {update_readme(Path(sys.argv[1]))}")
