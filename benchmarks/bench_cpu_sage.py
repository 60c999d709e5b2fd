"""SAGE on the CPU: fastmix (numba kernels, and the PyTorch path) against the reference structure
and, when given, the official sage() itself, on the same inputs, in one run.

    python -m benchmarks.bench_cpu_sage [--official DIR] [--threads N] [--repeats 5]
        [--out benchmarks/results/cpu/sage_cpu.md]

--official DIR: a scratch folder holding SamsungLabs/SAGE's utils_SAGE.py (00ce751a) and stub
modules for its unused imports (torchvision, wandb, ipdb, tqdm, mixup.to_one_hot) on DIR/stubs;
it is never part of this repository. The official function draws its own pairing and candidate
set (torch's global generator), so its row is timed on the same tensors and the same K, not on
the same draws; benchmarks/reference_sage.py takes injected draws and must cost what sage()
costs, which its column shows.

Cases: B=100 3x32x32 K=39 and B=32 3x64x64 K=161 (CIFAR / Tiny ImageNet, rand_pos=0.01), and
B=32 3x224x224 with the reference's K = int(447^2 * 0.01) = 1998 random candidates
(search="random"; fastmix's default there is the coarse-to-fine search). Saliency is a given
blurred map (kernel_size=1: no further smoothing), mass a = 0.37.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import fastmix
from fastmix.backends.pytorch.sage import flat_to_shifts
from fastmix.bench.report import write_table_and_json

from .reference_sage import reference_sage

CASES = [(100, 3, 32, 0.01), (32, 3, 64, 0.01), (32, 3, 224, 0.01)]
REFERENCE_MAX_SIDE = 64


def load_official(folder: str | None):
    if folder is None:
        return None
    sys.path[:0] = [str(Path(folder) / "stubs"), str(folder)]
    return importlib.import_module("utils_SAGE").sage


def run_case(batch, channels, side, rand_pos, repeats, official, slow_budget_s):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, side, side, generator=gen)
    labels = torch.randint(0, 10, (batch,), generator=gen)
    saliency = torch.rand(batch, 1, side, side, generator=gen)
    perm = torch.randperm(batch, generator=gen)
    population = (2 * side - 1) ** 2
    flat = torch.randperm(population, generator=gen)[: int(population * rand_pos)]
    shifts = flat_to_shifts(flat, side, side)

    def fastmix_call(backend):
        return lambda: fastmix.sage_mix(x, saliency=saliency, kernel_size=1, perm=perm, mass=0.37, shifts=shifts,
                                        backend=backend)
    calls = {"fastmix_numba": fastmix_call("numba"), "fastmix_pytorch": fastmix_call("pytorch")}
    # At 224 px the official code's sampling grid alone is K x 672 x 672 x 2 floats (7 GB for
    # K = 1998): neither it nor the reference structure runs there.
    if side <= REFERENCE_MAX_SIDE:
        calls["reference"] = lambda: reference_sage(x, saliency, perm, 0.37, flat)
        if official is not None:
            calls["official"] = lambda: official(x, labels, saliency, 0.37, rand_pos)
    times = {name: [] for name in calls}
    results = {name: fn() for name, fn in calls.items()}  # warm-up (numba compile or cache load)
    for round_ in range(repeats):  # round-robin: every contender sees the same machine load
        for name, fn in calls.items():
            if round_ and times[name] and times[name][0] > slow_budget_s:
                continue  # a contender taking longer than the budget is timed once
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ours, ref = results["fastmix_numba"], results.get("reference")
    row = {"case": f"B={batch} {channels}x{side}x{side}", "K": int(flat.numel()),
           **{f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()}}
    if ref is not None:
        row["same_shifts_as_reference"] = bool((flat[ours.extras["best_index"]] == ref[2]).all())
        row["max_image_diff_vs_reference"] = float((ours.images - ref[0]).abs().max())
    else:
        pytorch = results["fastmix_pytorch"]
        row["same_shifts_as_pytorch"] = bool(torch.equal(ours.shifts, pytorch.shifts))
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", help="folder with utils_SAGE.py and stubs/ (never committed)")
    parser.add_argument("--threads", type=int, help="torch and numba threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow-budget-s", type=float, default=20.0)
    parser.add_argument("--max-side", type=int, default=224, help="skip the cases with larger images")
    parser.add_argument("--out", default="benchmarks/results/cpu/sage_cpu.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    official = load_official(args.official)
    load_before = os.getloadavg()[0]
    rows = [run_case(*case, args.repeats, official, args.slow_budget_s) for case in CASES if case[2] <= args.max_side]
    load_after = os.getloadavg()[0]
    for r in rows:  # the machine is shared: its load belongs with every number
        r["load_average_1min_start_end"] = [round(load_before, 2), round(load_after, 2)]
    lines = ["# SAGE on the CPU: fastmix vs the official sage() and the reference structure", "",
             f"One run of `python -m benchmarks.bench_cpu_sage`, {torch.get_num_threads()} thread(s), torch "
             f"{torch.__version__}; median ms per call, contenders interleaved. official = SamsungLabs/SAGE "
             "utils_SAGE.py sage() run from a scratch folder (not in the repo) on the same tensors and K; "
             "reference = benchmarks/reference_sage.py (injected draws). numba = fastmix.sage_mix(backend='numba'), "
             "the CPU default when numba is installed; pytorch = the PyTorch path (the CPU path before the "
             "numba kernels). Machine load (1-minute load average, "
             f"{os.cpu_count()} CPUs, shared with other jobs): {load_before:.2f} at the start, "
             f"{load_after:.2f} at the end.", "",
             "| case | K | official ms | reference ms | reference / official | fastmix numba ms | "
             "official / numba | fastmix PyTorch ms | PyTorch / numba | same shifts as reference |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    def cell(value, fmt):
        return "n/a" if value is None else fmt % value

    for r in rows:
        off, ref, ours = r.get("official_ms"), r.get("reference_ms"), r["fastmix_numba_ms"]
        same = r.get("same_shifts_as_reference", f"{r.get('same_shifts_as_pytorch')} (vs PyTorch path)")
        lines.append(f"| {r['case']} | {r['K']} | {cell(off, '%.1f')} | {cell(ref, '%.1f')} | "
                     f"{cell(ref / off if off and ref else None, '%.2f')} | {ours:.2f} | "
                     f"{cell(off / ours if off else None, '%.1fx')} | {r['fastmix_pytorch_ms']:.1f} | "
                     f"{r['fastmix_pytorch_ms'] / ours:.1f}x | {same} |")
    write_table_and_json(args.out, lines, rows)


if __name__ == "__main__":
    main()
