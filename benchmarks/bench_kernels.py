"""Kernel benchmark: every fastmix custom op on its Triton kernel and on the PyTorch path, on the
same device, against the memory-bandwidth floor measured in the same run; SAGE also against the
reference structure (a per-image loop of grid_samples, benchmarks/reference_sage.py).

    python -m benchmarks.bench_kernels OUT_DIR [--size full|tiny] [--device cuda|cpu]
                                               [--backends triton pytorch]

Writes OUT_DIR/kernels_<device>.json and .md. Each row is timed by benchmarks/timing.py (CUDA
events, warm-up, rotating input sets); the floor of a bandwidth-bound op is the bytes it must
read and write once (benchmarks/bandwidth.py: over the copy bandwidth measured in this run), and
`floor/measured` is the fraction of copy speed reached. The issue's targets are checked at the
end of the markdown. On a CPU the run is a smoke test at tiny sizes; the Triton rows run there
only under TRITON_INTERPRET=1 (their times are then the interpreter's, not a GPU's).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

import fastmix
from fastmix import dispatch, params
from fastmix.backends.pytorch import sage as torch_sage
from fastmix.backends.pytorch.gaussian import gaussian_smooth
from fastmix.bench import environment
from fastmix.bench.bandwidth import measure_copy_bandwidth
from fastmix.bench.timing import input_set_count, time_calls
from fastmix.bench.workloads import (CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, SIZES, ClassificationSize,
                                     classification_inputs)

from .reference_sage import reference_sage

RAND_POS = 0.01          # SAGE's CIFAR recipe: K = int((2w-1)^2 * 0.01) shared candidates
UPPER_LAMBDA = 0.6
TARGETS = {"sage_vs_reference": 100.0, "sage_imagenet_ms": 25.0, "exhaustive_cifar_ms": 2.0, "floor_ratio": 1.5}
TINY = {  # small enough for the Triton interpreter
    "cifar": ClassificationSize("cifar", 2, 3, 8, 10, CIFAR_MEAN, CIFAR_STD, "tiny CIFAR (B=2, 3x8x8)"),
    "imagenet": ClassificationSize("imagenet", 2, 3, 12, 10, IMAGENET_MEAN, IMAGENET_STD,
                                   "tiny ImageNet (B=2, 3x12x12)"),
}


@dataclass
class Settings:
    warmup: int
    repeats: int
    min_repeats: int
    budget_s: float

    @classmethod
    def defaults(cls, size: str, device: torch.device) -> "Settings":
        if size == "tiny":
            return cls(warmup=1, repeats=2, min_repeats=1, budget_s=0.5)
        if device.type == "cuda":
            return cls(warmup=3, repeats=50, min_repeats=3, budget_s=3.0)
        return cls(warmup=1, repeats=5, min_repeats=2, budget_s=5.0)


def backends_here(device: torch.device) -> list[str]:
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return ["triton", "pytorch"]
    return ["pytorch"]


def prepare_sets(size: ClassificationSize, device: torch.device, count: int) -> list[dict]:
    """Images, gradient and every injected SAGE / Mixup / CutMix parameter, per input set."""
    sets = []
    height = width = size.side
    population = (2 * height - 1) * (2 * width - 1)
    for index, base in enumerate(classification_inputs(size, count, device, seed=7)):
        gen = torch.Generator().manual_seed(100 + index)
        batch = size.batch
        lam = params.beta(1.0, batch, gen)
        boxes = params.box_from_lam(lam, height, width, params.randint(height, (batch,), gen),
                                    params.randint(width, (batch,), gen))
        perm = params.permutation(batch, gen)
        mass = params.beta(1.0, 1, gen).expand(batch) * UPPER_LAMBDA
        flat = params.choose_without_replacement(population, int(population * RAND_POS), gen)
        s = {"x": base["x"], "x16": base["x"].half(), "grad": base["grad"], "perm": perm.to(device),
             "lam": lam.to(device), "boxes": boxes.to(device), "mass": mass.to(device), "flat": flat.to(device),
             "candidates": torch_sage.flat_to_shifts(flat, height, width).to(device),
             "exhaustive": torch_sage.all_shifts(height, width, device=device)}
        s["g1"], s["g2"] = dispatch.sage_saliency(s["grad"], s["perm"], s["mass"], backend="pytorch")
        shift_gen = torch.Generator().manual_seed(200 + index)
        s["shifts"] = torch.stack([torch.randint(1 - height, height, (batch,), generator=shift_gen),
                                   torch.randint(1 - width, width, (batch,), generator=shift_gen)], dim=1).to(device)
        s["s_t"] = gaussian_smooth(torch_sage.saliency_from_grad(s["grad"]))[:, None]
        sets.append(s)
    return sets


def sage_pipeline(s: dict, backend: str, candidates: str = "candidates"):
    """SAGE's deterministic steps from the gradient: saliency prep, search, mask + blend."""
    g1, g2 = dispatch.sage_saliency(s["grad"], s["perm"], s["mass"], backend=backend)
    _, best = dispatch.sage_scores(g1, g2, s[candidates], backend=backend)
    return dispatch.sage_mask_and_blend(s["x"], s["perm"], g1, g2, s[candidates][best], backend=backend)


def overlap_terms(height: int, width: int, shifts: torch.Tensor) -> int:
    """Pixel terms the score kernel evaluates for one sample: the sum of the overlap areas."""
    dy, dx = shifts[:, 0].abs().cpu(), shifts[:, 1].abs().cpu()
    return int(((height - dy) * (width - dx)).sum())


def rows_for_size(size: ClassificationSize, sets: list[dict], device, settings: Settings,
                  backends: list[str]) -> list[dict]:
    batch, side = size.batch, size.side
    pixels = batch * side * side
    map_bytes = 4 * pixels
    rows = []

    def run(op, dtype, backend, fn, floor_bytes=None, note="", work=None):
        row = {"op": op, "size": size.name, "workload": size.label, "dtype": dtype, "backend": backend,
               "floor_bytes": floor_bytes, "note": note}
        try:
            timing = time_calls(fn, sets, device, warmup=settings.warmup, repeats=settings.repeats,
                                min_repeats=settings.min_repeats, budget_s=settings.budget_s)
            row.update(timing.as_dict())
            if work is not None:
                row["pixel_terms_per_s"] = work / (timing.median_ms / 1e3)
        except Exception as error:  # one failing row must not end the run
            row["error"] = f"{type(error).__name__}: {error}"
            row["traceback"] = traceback.format_exc()
        rows.append(row)

    for backend in backends:
        for dtype_name, key in (("float32", "x"), ("float16", "x16")):
            image_bytes = sets[0][key].numel() * sets[0][key].element_size()
            box_area = float(((sets[0]["boxes"][:, 1] - sets[0]["boxes"][:, 0]) *
                              (sets[0]["boxes"][:, 3] - sets[0]["boxes"][:, 2])).sum()) / pixels
            run("mixup_blend", dtype_name, backend,
                lambda s, key=key, b=backend: dispatch.mixup_blend(s[key], s["perm"], s["lam"], backend=b),
                2 * image_bytes, "per-sample lam")
            run("box_paste (CutMix)", dtype_name, backend,
                lambda s, key=key, b=backend: dispatch.box_paste(s[key], s["perm"], s["boxes"], backend=b),
                2 * image_bytes, "per-sample boxes")
            run("box_fill (CutOut)", dtype_name, backend,
                lambda s, key=key, b=backend: dispatch.box_fill(s[key], s["boxes"], 0.0, backend=b),
                int(image_bytes * (2 - box_area)), "per-sample boxes; reads outside the boxes only")
            run("sage_mask_blend", dtype_name, backend,
                lambda s, key=key, b=backend: dispatch.sage_mask_and_blend(s[key], s["perm"], s["g1"], s["g2"],
                                                                           s["shifts"], backend=b),
                2 * image_bytes + 3 * map_bytes, "reads x, G1, G2; writes mixed, M")
        grad_bytes = sets[0]["grad"].numel() * 4
        run("sage_saliency", "float32", backend,
            lambda s, b=backend: dispatch.sage_saliency(s["grad"], s["perm"], s["mass"], backend=b),
            grad_bytes + 2 * map_bytes, "5x5 Gaussian; reads grad, writes G1, G2")
        candidates = sets[0]["candidates"]
        run("sage_scores", "float32", backend,
            lambda s, b=backend: dispatch.sage_scores(s["g1"], s["g2"], s["candidates"], backend=b),
            note=f"reference candidate set, K={candidates.shape[0]} shared",
            work=batch * overlap_terms(side, side, candidates))
        if size.name == "cifar":
            run("sage_scores", "float32", backend,
                lambda s, b=backend: dispatch.sage_scores(s["g1"], s["g2"], s["exhaustive"], backend=b),
                note=f"exhaustive, K={(2 * side - 1) ** 2}", work=batch * side ** 4)
        else:
            run("sage_scores", "float32", backend,
                lambda s, b=backend: dispatch.sage_coarse_to_fine(s["g1"], s["g2"], backend=b),
                note="coarse_to_fine")
        run("sage (whole op)", "float32", backend, lambda s, b=backend: sage_pipeline(s, b),
            note=f"saliency prep + scores (K={candidates.shape[0]}) + mask/blend, injected parameters")
        run("sage_mix (operator)", "float32", backend,
            lambda s, b=backend: fastmix.sage_mix(s["x"], grad=s["grad"], upper_lambda=UPPER_LAMBDA,
                                                  rand_pos=RAND_POS, generator=torch.Generator().manual_seed(0),
                                                  backend=b),
            note="public operator: draws its parameters, validates inputs (host syncs)")
    if size.name == "cifar":
        a = float(sets[0]["mass"][0])
        run("sage (reference structure)", "float32", "reference",
            lambda s: reference_sage(s["x"], s["s_t"], s["perm"], a, s["flat"]),
            note="per-image loop of K grid_samples on a 3w x 3w canvas (from the blurred saliency)")
    return rows


def add_ratios(rows: list[dict], bandwidth) -> None:
    """floor_ms, floor/measured, GB/s and the Triton speedup over the PyTorch path."""
    medians = {(r["op"], r["size"], r["dtype"], r["note"], r["backend"]): r.get("median_ms") for r in rows}
    for r in rows:
        median = r.get("median_ms")
        if median is None:
            continue
        if r["floor_bytes"]:
            r["floor_ms"] = bandwidth.floor_ms(r["floor_bytes"])
            r["floor_fraction"] = r["floor_ms"] / median
            r["GB_per_s"] = r["floor_bytes"] / (median / 1e3) / 1e9
        torch_median = medians.get((r["op"], r["size"], r["dtype"], r["note"], "pytorch"))
        if r["backend"] == "triton" and torch_median:
            r["speedup_vs_pytorch"] = torch_median / median


def find(rows, op, size, backend, dtype="float32", note_start=""):
    for r in rows:
        if (r["op"], r["size"], r["backend"], r["dtype"]) == (op, size, backend, dtype) \
                and r["note"].startswith(note_start) and r.get("median_ms") is not None:
            return r
    return None


def check_targets(rows: list[dict], full: bool) -> list[dict]:
    """The issue's speed targets, each with its measured value and verdict (None: not measured)."""
    checks = []

    def add(name, value, limit, passed):
        checks.append({"target": name, "value": value, "limit": limit,
                       "passed": None if value is None else bool(passed(value))})

    kernel = find(rows, "sage (whole op)", "cifar", "triton")
    reference = find(rows, "sage (reference structure)", "cifar", "reference")
    speedup = reference["median_ms"] / kernel["median_ms"] if kernel and reference else None
    add("SAGE (CIFAR, K=39) vs the reference structure: speedup >=", speedup, TARGETS["sage_vs_reference"],
        lambda v: v >= TARGETS["sage_vs_reference"])
    whole = find(rows, "sage (whole op)", "imagenet", "triton")
    add("SAGE whole op (ImageNet, K=1998) ms <=", whole and whole["median_ms"], TARGETS["sage_imagenet_ms"],
        lambda v: v <= TARGETS["sage_imagenet_ms"])
    exhaustive = find(rows, "sage_scores", "cifar", "triton", note_start="exhaustive")
    add("exhaustive search (CIFAR, B=100) ms <=", exhaustive and exhaustive["median_ms"],
        TARGETS["exhaustive_cifar_ms"], lambda v: v <= TARGETS["exhaustive_cifar_ms"])
    for op in ("mixup_blend", "box_paste (CutMix)", "sage_mask_blend"):
        for dtype in ("float16", "float32"):
            r = find(rows, op, "imagenet", "triton", dtype)
            ratio = r["median_ms"] / r["floor_ms"] if r and r.get("floor_ms") else None
            add(f"{op} (ImageNet, {dtype}) measured / floor <=", ratio, TARGETS["floor_ratio"],
                lambda v: v <= TARGETS["floor_ratio"])
    if not full:
        for c in checks:
            c["passed"] = None  # tiny sizes say nothing about the targets
    return checks


def _fmt(value, digits=3):
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# fastmix kernels on {meta['device']['name']}", "",
             f"Run {meta['date']} at commit {meta['commit']}; size `{meta['size']}`; "
             f"copy bandwidth {meta['copy_bandwidth']['GB_per_s']:.1f} GB/s (read + write, measured in this run).",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v), "",
             "| op | workload | dtype | backend | median ms | IQR ms | floor ms | floor/measured | GB/s | "
             "vs PyTorch path | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['workload']} | {r['dtype']} | {r['backend']} | failed: "
                         f"{r['error'][:80]} | | | | | | {r['note']} |")
            continue
        lines.append(f"| {r['op']} | {r['workload']} | {r['dtype']} | {r['backend']} | {_fmt(r['median_ms'])} | "
                     f"{_fmt(r['iqr_ms'], 2)} | {_fmt(r.get('floor_ms'))} | {_fmt(r.get('floor_fraction'), 2)} | "
                     f"{_fmt(r.get('GB_per_s'))} | {_fmt(r.get('speedup_vs_pytorch'))} | {r['note']} |")
    lines += ["", "## Targets", "", "| target | limit | measured | verdict |", "|---|---|---|---|"]
    for c in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured here"}[c["passed"]]
        lines.append(f"| {c['target']} | {c['limit']} | {_fmt(c['value'])} | {verdict} |")
    return "\n".join(lines) + "\n"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for kernels_<device>.json and .md")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--size", choices=("full", "tiny"), default=None,
                        help="full on CUDA, tiny (a smoke test) on a CPU by default")
    parser.add_argument("--backends", nargs="+", choices=("triton", "pytorch"), default=None,
                        help="default: triton (on CUDA or under TRITON_INTERPRET=1) and pytorch")
    args = parser.parse_args(argv)
    device = environment.pick_device(args.device)
    backends = args.backends or backends_here(device)
    size_name = args.size or ("full" if device.type == "cuda" else "tiny")
    settings = Settings.defaults(size_name, device)
    sizes = SIZES["full"] if size_name == "full" else TINY

    bandwidth = measure_copy_bandwidth(device, buffer_bytes=None if size_name == "full" else 1 << 22)
    rows = []
    for name in ("cifar", "imagenet"):
        size = sizes[name]
        count = input_set_count(2 * size.image_bytes(), environment.cache_bytes(device), maximum=8,
                                memory_cap_bytes=environment.available_memory_bytes(device) // 8)
        sets = prepare_sets(size, device, count if size_name == "full" else 1)
        rows += rows_for_size(size, sets, device, settings, backends)
        del sets
        if device.type == "cuda":
            torch.cuda.empty_cache()
    add_ratios(rows, bandwidth)
    results = {"meta": {"device": environment.describe_device(device), "size": size_name,
                        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                        "commit": environment.git_commit(Path(__file__).resolve().parent.parent),
                        "versions": environment.library_versions(), "copy_bandwidth": bandwidth.as_dict(),
                        "settings": vars(settings), "triton_interpreter": os.environ.get("TRITON_INTERPRET") == "1"},
               "rows": rows, "targets": check_targets(rows, size_name == "full")}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kernels_{slug(environment.short_device_name(device))}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
    stem.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"FAILED {r['op']} {r['size']} {r['dtype']} {r['backend']}:\n{r['traceback']}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
