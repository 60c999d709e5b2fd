"""fastmix Copy-Paste on the CPU against mmdetection 3.3.0's real CopyPaste, side by side.

    python -m benchmarks.bench_copy_paste_mmdet [--batch 8] [--size 1024] [--instances 20]
        [--repeats 3] [--out benchmarks/results/cpu/copy_paste_mmdet.md]

mmdet 3.3.0, mmengine 0.10.7 and mmcv-lite 2.1.0 are pure-Python wheels (not in the test extra).
mmcv-lite lacks the compiled `mmcv.ops`, which mmdet imports at module level (mask structures
import roi_align) but which the transforms used here never call: this script installs a stub
package for `mmcv.ops.*` whose functions raise if called, then imports the real mmdet.

Both sides run on one thread (torch, numba, OpenCV) on the same batch (synthetic ellipse
objects, uint8 images) with the same pairing (image i receives from perm[i]) and the same pasted
subsets (mmdet's `_get_selected_inds` is handed fastmix's drawn subset):

* "LSJ + paste": per view (B receivers, B sources) mmdetection's LSJ pipeline of its
  copy-paste configs, `Resize(scale_factor=s, keep_ratio=True)` with fastmix's drawn scale s
  (in place of `RandomResize(ratio_range=(0.1, 2.0))`, so that both use the same scales),
  `RandomCrop(crop_size, crop_type='absolute_range', recompute_bbox=True,
  allow_negative_crop=True)`, `FilterAnnotations(min_gt_bbox_wh=(1e-2, 1e-2))`,
  `RandomFlip` (flipped when fastmix's view is), `Pad(size)`; then `CopyPaste(max_num_pasted=100)`
  per pair. fastmix: `copy_paste(batch, params=...)` with scale_range (0.1, 2.0), flip 0.5.
* "paste alone": no jitter; mmdet's `CopyPaste` per pair on the original images, fastmix with
  scale_range=(1, 1), flip_prob=0.

The median of `--repeats` timed runs after one warm-up, the two sides alternating run by run
(they share the machine's load); the object counts of both outputs are
reported as a check that they did the same work (the crop offsets differ: each side draws its own).
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import statistics
import sys
import time
import types

import numpy as np
import torch

from fastmix.bench.report import write_table_and_json
from fastmix.copy_paste import copy_paste, draw_copy_paste_params

from .bench_copy_paste import synthetic_batch


class _OpsStub(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"mmcv.ops.{name} is not available in mmcv-lite (stub)")
        return missing


class _OpsStubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "mmcv.ops" or name.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _OpsStub(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def import_mmdet():
    """(transforms module, HorizontalBoxes, BitmapMasks, versions) of the real mmdetection."""
    sys.meta_path.insert(0, _OpsStubFinder())
    import mmcv
    import mmdet
    import mmengine
    from mmdet.datasets import transforms
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    versions = {"mmdet": mmdet.__version__, "mmengine": mmengine.__version__, "mmcv": mmcv.__version__}
    return transforms, HorizontalBoxes, BitmapMasks, versions


def mmdet_samples(batch, HorizontalBoxes, BitmapMasks):
    """Per image the arrays an mmdet loader produces: HWC uint8 image, uint8 masks, boxes, labels."""
    images, masks, boxes, labels = batch.to_lists()
    out = []
    for image, mask, box, label in zip(images, masks, boxes, labels):
        out.append({"img": np.ascontiguousarray(image.permute(1, 2, 0).numpy()),
                    "masks": mask.numpy().astype(np.uint8), "boxes": box.numpy().astype(np.float32),
                    "labels": label.numpy().astype(np.int64)})
    return out


def results_dict(sample, HorizontalBoxes, BitmapMasks):
    h, w = sample["img"].shape[:2]
    return {"img": sample["img"], "img_shape": (h, w), "ori_shape": (h, w),
            "gt_bboxes": HorizontalBoxes(sample["boxes"].copy()), "gt_bboxes_labels": sample["labels"].copy(),
            "gt_masks": BitmapMasks(sample["masks"], h, w), "gt_ignore_flags": np.zeros(len(sample["labels"]), bool)}


def run_mmdet(samples, params, size, lsj, mm):
    transforms, HorizontalBoxes, BitmapMasks = mm
    batch = len(samples)
    perm = params.perm.tolist()
    paste = transforms.CopyPaste(max_num_pasted=100)
    pipeline_tail = [
        transforms.RandomCrop(crop_size=size, crop_type="absolute_range", recompute_bbox=True, allow_negative_crop=True),
        transforms.FilterAnnotations(min_gt_bbox_wh=(1e-2, 1e-2)),
    ]
    flip = transforms.RandomFlip(prob=1.0)
    pad = transforms.Pad(size=size)

    def view(index, jitter, k):
        results = results_dict(samples[index], HorizontalBoxes, BitmapMasks)
        if not lsj:
            return results
        results = transforms.Resize(scale_factor=float(jitter.scale[k]), keep_ratio=True)(results)
        for t in pipeline_tail:
            results = t(results)
            if results is None:  # FilterAnnotations drops an image with nothing left
                return None
        if bool(jitter.flip[k]):
            results = flip(results)
        return pad(results)

    outputs = []
    for i in range(batch):
        receiving = view(i, params.receiving, i)
        source = view(perm[i], params.pasted, i)
        if receiving is None or source is None:
            outputs.append(receiving)
            continue
        chosen = params.selected[i].nonzero().flatten().numpy()
        if lsj:  # objects the jitter removed are not there to select
            chosen = chosen[chosen < len(source["gt_bboxes_labels"])]
        paste._get_selected_inds = lambda n, chosen=chosen: chosen
        receiving["mix_results"] = [source]
        outputs.append(paste(receiving))
    return outputs


def timed_pair(first, second, repeats):
    """One warm-up each, then the two alternate run by run so that both see the same load."""
    results = [first(), second()]
    times = ([], [])
    for _ in range(repeats):
        for k, fn in enumerate((first, second)):
            start = time.perf_counter()
            results[k] = fn()
            times[k].append(time.perf_counter() - start)
    return results, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/cpu/copy_paste_mmdet.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import cv2
    cv2.setNumThreads(1)
    transforms, HorizontalBoxes, BitmapMasks, versions = import_mmdet()
    mm = (transforms, HorizontalBoxes, BitmapMasks)
    size = (args.size, args.size)
    batch = synthetic_batch(args.batch, args.size, args.instances, args.seed)
    samples = mmdet_samples(batch, HorizontalBoxes, BitmapMasks)
    rows = []
    for mode, lsj in (("LSJ + paste", True), ("paste alone", False)):
        options = {} if lsj else {"scale_range": (1.0, 1.0), "flip_prob": 0.0}
        params = draw_copy_paste_params(batch.counts, batch.image_sizes, size, max_instances=batch.max_instances,
                                        generator=torch.Generator().manual_seed(args.seed), **options)
        np.random.seed(args.seed)
        (ours, theirs), (our_times, their_times) = timed_pair(
            lambda: copy_paste(batch, params=params), lambda: run_mmdet(samples, params, size, lsj, mm), args.repeats)
        row = {"mode": mode, "fastmix_ms": 1e3 * statistics.median(our_times),
               "mmdet_ms": 1e3 * statistics.median(their_times),
               "fastmix_objects": int(sum(m.shape[0] for m in ours.masks)),
               "mmdet_objects": int(sum(len(r["gt_bboxes_labels"]) for r in theirs if r is not None)),
               "fastmix_times_ms": [1e3 * t for t in our_times], "mmdet_times_ms": [1e3 * t for t in their_times]}
        row["speedup"] = row["mmdet_ms"] / row["fastmix_ms"]
        rows.append(row)
        print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    import numba
    load = os.getloadavg()  # the machine is shared: the 1-minute load average when the run ended
    meta = {"load_average_1min": round(load[0], 1), "batch": args.batch, "size": args.size, "objects_per_image": float(batch.counts.float().mean()),
            "threads": 1, "torch": torch.__version__, "numba": numba.__version__, "numpy": np.__version__,
            "opencv": cv2.__version__, **versions}
    lines = ["# Copy-Paste on the CPU: fastmix vs mmdetection's CopyPaste (real code, side by side)", "",
             f"One run of `python -m benchmarks.bench_copy_paste_mmdet`: B={args.batch} uint8 "
             f"{args.size}x{args.size}, {meta['objects_per_image']:.1f} objects per image, one thread each "
             f"(torch, numba, OpenCV), median of {args.repeats} runs. mmdet {versions['mmdet']}, mmengine "
             f"{versions['mmengine']}, mmcv-lite {versions['mmcv']} (compiled mmcv.ops stubbed, never called), "
             f"torch {torch.__version__}, numba {numba.__version__}, 1-minute load average "
             f"{meta['load_average_1min']} at the end (a shared machine). Same pairing and pasted subsets on both sides; "
             "mmdet's LSJ is its copy-paste config's Resize/RandomCrop/FilterAnnotations/RandomFlip/Pad "
             "with fastmix's drawn scales and flips.", "",
             "| mode | fastmix ms | mmdet ms | fastmix speed-up | objects out (fastmix / mmdet) |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['fastmix_ms']:.0f} | {r['mmdet_ms']:.0f} | {r['speedup']:.2f}x | "
                     f"{r['fastmix_objects']} / {r['mmdet_objects']} |")
    write_table_and_json(args.out, lines, {"meta": meta, "rows": rows})


if __name__ == "__main__":
    main()
