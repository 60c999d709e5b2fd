"""Images per second and CPU milliseconds per batch of a DALI loading pipeline with and without
each fastmix.dali operator, and with the same mixing done in the training loop after the pipeline.

For each operator, three loaders over the same data are timed, each until `--batches` batches
have come out (after `--warmup` batches):

* ``baseline``: the pipeline alone (read, decode, resize; CHW float for SAGE);
* ``in_pipeline``: the same pipeline with the fastmix.dali operator at its end;
* ``after_pipeline``: the baseline pipeline, then the fastmix PyTorch operator on each batch in
  the loop (the usual way today).

Each rate is given per wall-clock second and per CPU second of the process (all its threads),
and as process CPU milliseconds per batch: the CPU figures are the steadier ones on a shared
machine, and ``added_cpu_fraction`` (in_pipeline over baseline CPU per batch, minus 1) is what
the operator adds to the loader's CPU cost. ``--torch-threads`` sets PyTorch's
intra-op threads for the training-loop mixing; on a small CPU, several torch threads next to
DALI's worker threads oversubscribe the cores.

Classification operators read a generated image folder (``fn.readers.file``) and go through
``DALIGenericIterator``; Copy-Paste reads the generated COCO coins set (``fn.readers.coco`` +
``fastmix.dali.polygon_masks``) with ``pipeline.run()``, since its outputs differ in size.

    python -m benchmarks.bench_dali --json benchmarks/results/cpu_dali.json [--device cpu|gpu]

Defaults: batch 32, images decoded from 256x256 files and resized to 224x224 (HWC uint8).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch

import nvidia.dali
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

import fastmix
import fastmix.dali as fmd
from fastmix.bench import environment
from fastmix.bench.timing import synchronize
from fastmix.copy_paste import InstanceBatch, copy_paste
from examples.dali_classification import CLASSES, MEAN, STD, write_image_folder
from examples.dali_copy_paste_coco import write_coins_coco

OPERATORS = ("mixup", "mixup_dali", "cutmix", "cutout", "saliencymix", "saliencymix_python", "sage_mix",
             "sage_mix_python", "copy_paste", "copy_paste_python")
# Rows that time a non-default implementation: (fastmix.dali operator, its options).
VARIANTS = {"mixup_dali": ("mixup", {"impl": "dali"}), "saliencymix_python": ("saliencymix", {"impl": "python"}),
            "sage_mix_python": ("sage_mix", {"impl": "python"}),
            "copy_paste_python": ("copy_paste", {"impl": "python"})}
MECHANISM = {"mixup": "numba_function (impl='auto' on CPU uint8)", "mixup_dali": "DALI operators (impl='dali')",
             "cutmix": "DALI operators", "cutout": "DALI operators",
             "saliencymix": "numba_function saliency peaks + DALI operators (impl='auto' on CPU uint8)",
             "saliencymix_python": "python function (impl='python')",
             "sage_mix": "numba_function (impl='auto' on CPU float32, model-free saliency)",
             "sage_mix_python": "python function (impl='python': fastmix.sage_mix, PyTorch/numba kernels)",
             "copy_paste": "numba_function (impl='auto' on CPU uint8 / float32, output_size given, hard blend)",
             "copy_paste_python": "python function (impl='python': fastmix.copy_paste, numba kernels)"}


def source_size(size: int) -> int:
    """Side of the generated image files: a little larger than the resize target, as in ImageNet loading."""
    return size + size // 7


def _version(name: str):
    try:
        import importlib.metadata
        return importlib.metadata.version(name)
    except Exception:  # not installed
        return None
# SAGE mixes normalised CHW float images; the others the decoded HWC uint8
FLOAT_INPUT = ("sage_mix", "sage_mix_python")


def _classification_pipeline(root, operator, mode, *, batch, size, device_id, seed):
    decoder_device = "cpu" if device_id is None else "mixed"

    @pipeline_def(batch_size=batch, num_threads=max(1, min(4, os.cpu_count() or 1)), device_id=device_id, seed=seed)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="Reader")
        images = fn.resize(fn.decoders.image(jpegs, device=decoder_device), size=[size, size])
        if operator in FLOAT_INPUT:
            images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, mean=MEAN, std=STD)
        if mode != "in_pipeline":
            return images, labels
        name, options = VARIANTS.get(operator, (operator, {}))
        mix = getattr(fmd, name)(images, labels, num_classes=len(CLASSES), **options)
        return mix.images, mix.targets

    return pipe()


def _mix_in_loop(operator, images, labels, generator):
    """The training-loop version: the fastmix PyTorch operator on the iterator's batch."""
    operator = VARIANTS.get(operator, (operator, {}))[0]
    x = images if operator in FLOAT_INPUT else images.permute(0, 3, 1, 2)  # HWC batch -> channels_last NCHW
    if operator in ("sage_mix", "sage_mix_python"):
        result = fastmix.sage_mix(x, saliency=fastmix.image_saliency(x, None), generator=generator)
    elif operator == "saliencymix":
        result = fastmix.saliencymix(x, value_range=None, generator=generator)
    else:
        result = getattr(fastmix, operator)(x, generator=generator)
    return result.images, result.targets(labels.reshape(-1).long(), len(CLASSES))


class Clock:
    """Images per wall-clock second and per CPU second of this process, CPU ms per batch."""

    def __init__(self):
        self.wall, self.cpu, self.images, self.batches = time.perf_counter(), time.process_time(), 0, 0

    def add(self, images: int) -> None:
        self.images, self.batches = self.images + images, self.batches + 1

    def rates(self) -> dict:
        cpu = max(time.process_time() - self.cpu, 1e-9)
        return {"images_per_s": self.images / (time.perf_counter() - self.wall),
                "images_per_cpu_s": self.images / cpu, "cpu_ms_per_batch": 1000 * cpu / max(self.batches, 1)}


def _time_iterator(loader, batches, warmup, work=None):
    clock = None
    for index, (data,) in enumerate(loader):
        if index == warmup:
            clock = Clock()
        if work is not None:
            work(data)
        synchronize(data[next(iter(data))].device)
        if clock is not None:
            clock.add(data[next(iter(data))].shape[0])
        if index + 1 == warmup + batches:
            return clock.rates()
    raise ValueError(f"the data gave fewer than {warmup + batches} batches: write more images per class")


def bench_classification(root, operator, *, batch, size, batches, warmup, device_id, seed=0):
    rates = {}
    for mode in ("baseline", "in_pipeline", "after_pipeline"):
        pipe = _classification_pipeline(root, operator, mode, batch=batch, size=size, device_id=device_id, seed=seed)
        names = ["images", "targets"] if mode == "in_pipeline" else ["images", "labels"]
        loader = DALIGenericIterator([pipe], names, reader_name="Reader", auto_reset=True,
                                     last_batch_policy=LastBatchPolicy.DROP)
        generator = torch.Generator().manual_seed(seed)
        work = None
        if mode == "after_pipeline":
            work = lambda data: _mix_in_loop(operator, data["images"], data["labels"], generator)  # noqa: E731
        rates[mode] = _time_iterator(loader, batches, warmup, work)
        del loader, pipe
    return rates


def _copy_paste_pipeline(image_dir, annotations, mode, *, batch, size, device_id, seed, options=None):
    decoder_device = "cpu" if device_id is None else "mixed"

    @pipeline_def(batch_size=batch, num_threads=max(1, min(4, os.cpu_count() or 1)), device_id=device_id, seed=seed)
    def pipe():
        jpegs, boxes, labels, polygons, vertices = fn.readers.coco(
            file_root=image_dir, annotations_file=annotations, polygon_masks=True, ltrb=True, random_shuffle=True)
        masks = fmd.polygon_masks(polygons, vertices, labels, fn.peek_image_shape(jpegs))
        images = fn.decoders.image(jpegs, device=decoder_device)
        if device_id is not None:
            masks = masks.gpu()
        if mode != "in_pipeline":
            return images, masks, labels
        out = fmd.copy_paste(images, masks, labels, output_size=(size, size), **(options or {}))
        return out.images, out.masks, out.labels

    return pipe()


def _samples(tensor_list):
    if hasattr(tensor_list, "as_cpu"):
        tensor_list = tensor_list.as_cpu()
    return [torch.from_numpy(np.array(tensor_list[i])) for i in range(len(tensor_list))]


def bench_copy_paste(image_dir, annotations, *, batch, size, batches, warmup, device_id, seed=0, options=None):
    rates = {}
    device = "cpu" if device_id is None else "cuda"
    for mode in ("baseline", "in_pipeline", "after_pipeline"):
        pipe = _copy_paste_pipeline(image_dir, annotations, mode, batch=batch, size=size, device_id=device_id,
                                    seed=seed, options=options)
        pipe.build()
        generator = torch.Generator().manual_seed(seed)
        clock = None
        for index in range(warmup + batches):
            if index == warmup:
                clock = Clock()
            images, masks, labels = (_samples(out) for out in pipe.run())
            if mode == "after_pipeline":
                instances = InstanceBatch.from_lists([i.permute(2, 0, 1).to(device) for i in images],
                                                     [m.to(device) for m in masks], None,
                                                     [lab.reshape(-1).long().to(device) for lab in labels])
                copy_paste(instances, output_size=(size, size), generator=generator)
            if clock is not None:
                clock.add(len(images))
        rates[mode] = clock.rates()
        del pipe
    return rates


def run(operators=OPERATORS, *, batch=32, size=224, batches=10, warmup=2, device="cpu", seed=0):
    device_id = None if device == "cpu" else 0
    results = {}
    per_class = -(-batch * (warmup + batches) // len(CLASSES))  # one epoch covers every timed batch
    with tempfile.TemporaryDirectory() as tmp:
        root = write_image_folder(os.path.join(tmp, "folder"), per_class=per_class, size=source_size(size))
        coco = None
        for operator in operators:
            if operator in ("copy_paste", "copy_paste_python"):
                coco = coco or write_coins_coco(os.path.join(tmp, "coco"), tiles=(4, 4))
                rates = bench_copy_paste(*coco, batch=min(batch, 16), size=size, batches=batches, warmup=warmup,
                                         device_id=device_id, seed=seed, options=VARIANTS.get(operator, (None, {}))[1])
            else:
                rates = bench_classification(root, operator, batch=batch, size=size, batches=batches, warmup=warmup,
                                             device_id=device_id, seed=seed)
            row = {mode: {k: round(v, 1) for k, v in r.items()} for mode, r in rates.items()}
            base = max(rates["baseline"]["cpu_ms_per_batch"], 1e-9)
            row["added_cpu_fraction"] = round(rates["in_pipeline"]["cpu_ms_per_batch"] / base - 1, 3)
            row["after_pipeline_added_cpu_fraction"] = round(rates["after_pipeline"]["cpu_ms_per_batch"] / base - 1, 3)
            row["mechanism"] = MECHANISM[operator]
            for unit in ("images_per_s", "images_per_cpu_s"):
                row[f"in_pipeline_vs_baseline_{unit}"] = round(rates["in_pipeline"][unit] / rates["baseline"][unit], 3)
                row[f"in_pipeline_vs_after_pipeline_{unit}"] = round(
                    rates["in_pipeline"][unit] / rates["after_pipeline"][unit], 3)
            results[operator] = row
            print(f"{operator:12s} " + "  ".join(f"{mode} {row[mode]['images_per_s']}/s "
                                                 f"{row[mode]['cpu_ms_per_batch']} cpu-ms/batch" for mode in rates)
                  + f"  added CPU {row['added_cpu_fraction']:+.0%}", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="write the results here")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224, help="images are resized to size x size")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per loader")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--operators", nargs="+", choices=OPERATORS, default=list(OPERATORS))
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the training-loop mixing (default: PyTorch's choice)")
    args = parser.parse_args(argv)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    if args.device == "gpu" and not torch.cuda.is_available():
        parser.error("--device gpu needs a CUDA build of torch and a GPU")
    results = run(args.operators, batch=args.batch, size=args.size, batches=args.batches, warmup=args.warmup,
                  device=args.device)
    report = {
        "what": "images per second (wall clock, and per CPU second of the process) and process CPU ms per batch: "
                "the DALI pipeline alone (baseline), with the fastmix.dali operator (in_pipeline), and the baseline "
                "followed by the fastmix PyTorch operator in the training loop (after_pipeline); added_cpu_fraction "
                "= in_pipeline / baseline CPU ms per batch - 1",
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "gpu" else None,
        "cpu": environment.cpu_model(), "cpu_count": os.cpu_count(),
        "load_average_1_5_15min_at_end": [round(v, 2) for v in os.getloadavg()],  # other work on the machine
        "torch": torch.__version__, "dali": nvidia.dali.__version__, "python": platform.python_version(),
        "numba": _version("numba"),
        "batch": args.batch, "copy_paste_batch": min(args.batch, 16), "size": args.size,
        "source_image_size": source_size(args.size), "batches": args.batches,
        "warmup": args.warmup, "torch_threads": torch.get_num_threads(), "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
