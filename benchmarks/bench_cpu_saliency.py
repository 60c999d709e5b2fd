"""SaliencyMix's per-sample saliency on the CPU: fastmix (numba kernel, and the PyTorch path)
against OpenCV's own StaticSaliencyFineGrained called per image, on the same cores, one run.

    python -m benchmarks.bench_cpu_saliency [--batch 32] [--size 224] [--repeats 5]
        [--out benchmarks/results/cpu/saliency_opencv.md]

Every contender gets the same uint8 batch (OpenCV the BGR HWC copies, made before timing) and
uses torch's thread count (OpenCV: cv2.setNumThreads with the same number); calls alternate
round by round. The maps are checked to be bit-identical.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from fastmix.backends.numba import saliency as numba_saliency
from fastmix.backends.pytorch import fine_grained_saliency as torch_saliency
from fastmix.bench.report import write_table_and_json


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/cpu/saliency_opencv.md")
    args = parser.parse_args(argv)
    import cv2
    threads = torch.get_num_threads()
    cv2.setNumThreads(threads)
    gen = torch.Generator().manual_seed(0)
    # Smooth random images (a 9x9 box filter of noise): saliency values spread over the range.
    noise = torch.randint(0, 256, (args.batch, 3, args.size, args.size), generator=gen).float()
    images = torch.nn.functional.avg_pool2d(noise, 9, 1, 4).round().to(torch.uint8)
    bgr = [np.ascontiguousarray(images[i].permute(1, 2, 0).numpy()[:, :, ::-1]) for i in range(args.batch)]
    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    calls = {"opencv": lambda: [detector.computeSaliency(image)[1] for image in bgr],
             "fastmix_numba": lambda: numba_saliency.fine_grained_saliency(images),
             "fastmix_pytorch": lambda: torch_saliency.fine_grained_saliency(images)}
    outputs = {name: fn() for name, fn in calls.items()}
    identical = bool(torch.equal(outputs["fastmix_numba"], torch.from_numpy(np.stack(outputs["opencv"]))))
    times = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - start))
    med = {name: statistics.median(t) for name, t in times.items()}
    row = {"batch": args.batch, "size": args.size, "threads": threads, **{f"{k}_ms": v for k, v in med.items()},
           "identical_to_opencv": identical}
    print(json.dumps(row))
    lines = ["# SaliencyMix saliency on the CPU: fastmix vs OpenCV StaticSaliencyFineGrained", "",
             f"One run of `python -m benchmarks.bench_cpu_saliency`: B={args.batch} uint8 3x{args.size}x{args.size}, "
             f"{threads} threads for every contender (cv2.setNumThreads({threads})), OpenCV {cv2.__version__} called "
             f"per image, torch {torch.__version__}; median of {args.repeats} alternating rounds.", "",
             "| contender | ms per batch | vs OpenCV |", "|---|---:|---:|"]
    for name in ("opencv", "fastmix_numba", "fastmix_pytorch"):
        lines.append(f"| {name} | {med[name]:.1f} | {med['opencv'] / med[name]:.2f}x |")
    lines += ["", f"fastmix numba maps bit-identical to OpenCV's: {identical}"]
    write_table_and_json(args.out, lines, row)


if __name__ == "__main__":
    main()
