"""Batched Copy-Paste (fastmix) against the per-image NumPy implementation of the same rules.

The reference (benchmarks/reference_copy_paste.py) is structured like mmdetection's
``CopyPaste`` transform: one image at a time, a loop over the masks. Both get the same batch
and the same drawn parameters (large-scale jittering, pairing, pasted subsets); the script
checks that masks, boxes and labels are identical and images agree, then reports median wall
times and speed-ups. Default case: a batch of 8 at 1024 x 1024 with about 20 instances per
image. fastmix runs on the CPU (PyTorch backend) and, when CUDA is present, on the GPU with the
CuPy kernels and with the PyTorch backend.

    python -m benchmarks.bench_copy_paste --json benchmarks/results/copy_paste.json [--batch 8]
        [--size 1024] [--instances 20] [--repeats 5] [--devices cpu cuda] [--threads N]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics

import numpy as np
import torch

from fastmix.bench.timing import timed_runs
from fastmix.copy_paste import InstanceBatch, copy_paste, draw_copy_paste_params

from .reference_copy_paste import reference_copy_paste


def synthetic_batch(batch: int, size: int, instances: int, seed: int = 0) -> InstanceBatch:
    """Random images with ellipse objects (instances +- 5 per image, overlapping allowed)."""
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks, labels = [], [], []
    for _ in range(batch):
        count = int(gen.integers(max(instances - 5, 0), instances + 6))
        m = np.zeros((count, size, size), dtype=bool)
        for n in range(count):
            cy, cx = gen.integers(0, size, 2)
            ry, rx = gen.integers(size // 40 + 1, size // 6 + 2, 2)
            m[n] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        images.append(torch.from_numpy(gen.integers(0, 256, (3, size, size), dtype=np.uint8)))
        masks.append(torch.from_numpy(m))
        labels.append(torch.from_numpy(gen.integers(0, 80, count)))
    return InstanceBatch.from_lists(images, masks, labels=labels)


def _to(batch: InstanceBatch, device: torch.device) -> InstanceBatch:
    return InstanceBatch(batch.images.to(device), batch.masks.to(device), batch.boxes.to(device),
                         batch.labels.to(device), batch.counts, batch.image_sizes)



def _compare(result, reference) -> dict:
    same = all(np.array_equal(m.cpu().numpy(), r["masks"]) and np.array_equal(b.cpu().numpy(), r["boxes"])
               and np.array_equal(lab.cpu().numpy(), r["labels"])
               for m, b, lab, r in zip(result.masks, result.boxes, result.labels, reference))
    diff = max(int(np.abs(img.permute(1, 2, 0).cpu().numpy().astype(int) - r["image"].astype(int)).max())
               for img, r in zip(result.images, reference))
    return {"masks_boxes_labels_identical": bool(same), "max_image_diff": diff}


def run(batch_size: int, size: int, instances: int, repeats: int, devices: list[str], seed: int = 0) -> dict:
    batch = synthetic_batch(batch_size, size, instances, seed)
    params = draw_copy_paste_params(batch.counts, batch.image_sizes, (size, size), max_instances=batch.max_instances,
                                    generator=torch.Generator().manual_seed(seed))
    images, masks, _, labels = batch.to_lists()
    samples = [{"image": im.permute(1, 2, 0).numpy(), "masks": m.numpy(), "labels": lab.numpy()}
               for im, m, lab in zip(images, masks, labels)]
    reference, ref_times = timed_runs(lambda: reference_copy_paste(samples, params, (size, size)), repeats,
                                  torch.device("cpu"))
    ref_median = statistics.median(ref_times)
    rows = [{"implementation": "reference (NumPy, per image)", "device": "cpu", "median_s": ref_median,
             "times_s": ref_times, "speedup_vs_reference": 1.0}]
    for name in devices:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            continue
        on_device = _to(batch, device)
        backends = ["cupy", "pytorch"] if device.type == "cuda" else ["pytorch"]
        for backend in backends:
            result, times = timed_runs(lambda: copy_paste(on_device, params=params, backend=backend), repeats, device)
            median = statistics.median(times)
            rows.append({"implementation": f"fastmix ({backend})", "device": name, "median_s": median,
                         "times_s": times, "speedup_vs_reference": ref_median / median, **_compare(result, reference)})
    return {
        "case": {"batch": batch_size, "size": size, "instances_per_image_mean": float(batch.counts.float().mean()),
                 "repeats": repeats, "seed": seed, "scale_range": [0.1, 2.0]},
        "rows": rows,
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
    }


def print_table(report: dict) -> None:
    case = report["case"]
    print(f"Copy-Paste, batch {case['batch']} at {case['size']}x{case['size']}, "
          f"{case['instances_per_image_mean']:.1f} instances per image, median of {case['repeats']} runs")
    print(f"{'implementation':32s} {'device':6s} {'median (ms)':>12s} {'speed-up':>9s}  check")
    for row in report["rows"]:
        check = ""
        if "max_image_diff" in row:
            check = f"identical={row['masks_boxes_labels_identical']} image diff={row['max_image_diff']}"
        print(f"{row['implementation']:32s} {row['device']:6s} {1000 * row['median_s']:12.1f} "
              f"{row['speedup_vs_reference']:8.1f}x  {check}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", help="write the report to this path")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args.batch, args.size, args.instances, args.repeats, args.devices, args.seed)
    print_table(report)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
