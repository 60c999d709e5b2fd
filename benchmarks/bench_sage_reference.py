"""fastmix's PyTorch SAGE against the reference's structure, same inputs, same device, one run.

The reference structure (benchmarks/reference_sage.py) loops over the batch and scores each
image's K candidate shifts with K nearest-neighbour grid_samples of a zero-padded 3H x 3W canvas.
Both receive the same blurred saliency, pairing, mass and candidate set; the script checks that
the chosen shifts are identical and the mixed images agree, then reports median times and the
ratio.

    python -m benchmarks.bench_sage_reference [--repeats 5] [--device cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics

import torch

import fastmix
from fastmix.backends.pytorch.sage import flat_to_shifts
from fastmix.bench.timing import timed_runs

from .reference_sage import reference_sage

CASES = [  # (batch, channels, side, rand_pos)
    (100, 3, 32, 0.01),
    (32, 3, 64, 0.01),
]



def run_case(batch, channels, side, rand_pos, repeats, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, side, side, generator=gen).to(device)
    blurred = torch.rand(batch, 1, side, side, generator=gen).to(device)
    perm = torch.randperm(batch, generator=gen).to(device)
    mass = 0.37
    population = (2 * side - 1) ** 2
    flat = torch.randperm(population, generator=gen)[: int(population * rand_pos)].to(device)
    shifts = flat_to_shifts(flat, side, side)

    (ref_x, ref_lam, ref_flat), ref_times = timed_runs(lambda: reference_sage(x, blurred, perm, mass, flat), repeats, device)
    result, fm_times = timed_runs(lambda: fastmix.sage_mix(x, saliency=blurred, kernel_size=1, perm=perm, mass=mass,
                                                        shifts=shifts, backend="pytorch"), repeats, device)
    chosen = flat[result.extras["best_index"]]
    ref_median, fm_median = statistics.median(ref_times), statistics.median(fm_times)
    return {
        "batch": batch, "shape": [channels, side, side], "rand_pos": rand_pos, "K": int(flat.numel()),
        "reference_ms": 1e3 * ref_median, "fastmix_pytorch_ms": 1e3 * fm_median,
        "speedup": ref_median / fm_median,
        "identical_shifts": bool((chosen.cpu() == ref_flat.cpu()).all()),
        "max_image_diff": float((result.images - ref_x).abs().max()),
        "max_lam_diff": float((result.lam - ref_lam).abs().max()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
            "python": platform.python_version(), "machine": platform.machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    rows = [run_case(*case, args.repeats, device) for case in CASES]
    print(f"device: {meta['device']} ({device.type}), torch {meta['torch']}, {meta['threads']} threads")
    print("| batch | shape | K | reference (ms) | fastmix pytorch (ms) | speedup | same shifts | max image diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {'x'.join(map(str, r['shape']))} | {r['K']} | {r['reference_ms']:.1f} | "
              f"{r['fastmix_pytorch_ms']:.2f} | {r['speedup']:.1f}x | {r['identical_shifts']} | {r['max_image_diff']:.1e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
