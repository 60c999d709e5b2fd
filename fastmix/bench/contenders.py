"""Who runs in each row: fastmix's kernel and PyTorch paths, the reference-structure
implementations, and the peer libraries, one `Task` per (size, operator, contender).

Every task's `prepare(ctx)` runs once, outside the timed region, and returns `fn(input_set)`,
the timed call. It raises `Unavailable` when the contender cannot run here (a missing package),
which the suite records as skipped with that reason. Every contender of an operator and size
gets the same input sets.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

import fastmix

from . import references
from .peers import PEERS, Unavailable
from .workloads import ClassificationSize, InstanceSize

SAGE_OPTIONS = {"upper_lambda": 0.6, "rand_pos": 0.01}  # SAGE's CIFAR-10 recipe (algorithms.md 1.6)
PUZZLE_POOL = 8  # PuzzleMix's --mp default: graph cuts spread over a pool of 8 processes


@dataclass
class Task:
    suite: str               # "operators" or "train_step"
    size: str                # key into workloads.SIZES[...]
    operator: str
    contender: str           # shown in the tables
    kind: str                # fastmix-kernel | fastmix-pytorch | reference | peer | baseline | fastmix-auto
    library: str
    prepare: Callable | None = None
    floor_bytes: int | None = None
    mutates_input: bool = False
    batch_subset: int | None = None   # time on the first n images, scale by B/n (per-image work only)
    memory_bytes: int | None = None   # estimated peak temporaries; skipped when above the free memory
    same_as: str | None = None        # the row this one equals on this device (no second timing)
    skip_reason: str | None = None
    note: str = ""
    config: dict = field(default_factory=dict)


def _fastmix_library() -> str:
    return f"fastmix {fastmix.__version__}"


def auto_backend(operator: str, device: torch.device) -> str:
    """What backend="auto" runs for this operator on this device."""
    if operator == "copy_paste":
        return "cupy" if device.type == "cuda" else "pytorch"
    return fastmix.dispatch.resolve("auto", torch.empty(0, device=device))


def _fastmix_pair(size, operator: str, device, call: Callable, floor: int, subset=None) -> list[Task]:
    """The kernel-path row (backend="auto") and the PyTorch-path row of one fastmix operator."""
    pytorch_name = "fastmix (PyTorch path)"
    resolved = auto_backend(operator, device)
    kernel = Task("operators", size.name, operator, "fastmix (kernel path)", "fastmix-kernel", _fastmix_library(),
                  prepare=lambda ctx: (lambda s: call(s, "auto")), floor_bytes=floor, batch_subset=subset,
                  note=f'backend="auto" -> {resolved}')
    if resolved == "pytorch":
        kernel.prepare = None
        kernel.same_as = pytorch_name
        kernel.note = f'backend="auto" runs the PyTorch path on {device.type}: timed once, in the next row'
    torch_row = Task("operators", size.name, operator, pytorch_name, "fastmix-pytorch", _fastmix_library(),
                     prepare=lambda ctx: (lambda s: call(s, "pytorch")), floor_bytes=floor, batch_subset=subset,
                     note='backend="pytorch"')
    return [kernel, torch_row]


def _peer_tasks(size: ClassificationSize, operator: str, floor: int) -> list[Task]:
    tasks = []
    for name, (factory, note) in PEERS.items():
        def prepare(ctx, factory=factory):
            fn, _, _ = factory(operator, size.num_classes)
            return lambda s: fn(s["x"], s["y"])
        try:
            _, library, mutates = factory(operator, size.num_classes)
            skip = None
        except Unavailable as exc:
            library, mutates, skip = name, False, str(exc)
        tasks.append(Task("operators", size.name, operator, name, "peer", library, prepare=prepare, floor_bytes=floor,
                          mutates_input=mutates, skip_reason=skip, note=note))
    return tasks


def reference_sage_candidates(side: int) -> int:
    return int((2 * side - 1) ** 2 * SAGE_OPTIONS["rand_pos"])


def reference_sage_peak_bytes(side: int) -> int:
    """Per image, the reference holds K affine grids (2 floats per canvas pixel) and about five
    canvas-sized float temporaries at once: 7 floats per candidate and canvas pixel."""
    return reference_sage_candidates(side) * (3 * side) ** 2 * 4 * 7


def classification_tasks(size: ClassificationSize, device: torch.device, *, cpu_full: bool) -> list[Task]:
    images = size.image_bytes()
    targets = 4 * size.batch * size.num_classes
    mix_floor = 2 * images + targets           # read the batch, write the mix and the soft targets
    guided_floor = 3 * images + targets        # ... and read the input gradient
    classes = size.num_classes
    tasks: list[Task] = []

    # Mixup
    tasks += _fastmix_pair(size, "mixup", device, lambda s, b: fastmix.mixup(s["x"], s["y"], backend=b).targets(
        num_classes=classes), mix_floor)

    def ref_mixup(ctx):
        reference_mixup = references.get("reference_mixup")
        rng = np.random.RandomState(0)
        return lambda s: reference_mixup(s["x"], s["y"], 1.0, rng)
    tasks.append(Task("operators", size.name, "mixup", "reference (mixup-cifar10 train.py)", "reference",
                      "reference structure", prepare=ref_mixup, floor_bytes=mix_floor,
                      note="out of place; returns (x, y_a, y_b, lam), no soft targets"))
    tasks += _peer_tasks(size, "mixup", mix_floor)

    # CutMix
    tasks += _fastmix_pair(size, "cutmix", device, lambda s, b: fastmix.cutmix(s["x"], s["y"], backend=b).targets(
        num_classes=classes), mix_floor)

    def ref_cutmix(ctx):
        reference_cutmix = references.get("reference_cutmix")
        rng = np.random.RandomState(0)
        return lambda s: reference_cutmix(s["x"], s["y"], 1.0, 1.0, rng)
    tasks.append(Task("operators", size.name, "cutmix", "reference (CutMix-PyTorch train.py)", "reference",
                      "reference structure", prepare=ref_cutmix, floor_bytes=mix_floor, mutates_input=True,
                      note="in place: writes only the box"))
    tasks += _peer_tasks(size, "cutmix", mix_floor)

    # CutOut (no reference or peer asked for; fastmix's own two paths)
    tasks += _fastmix_pair(size, "cutout", device, lambda s, b: fastmix.cutout(s["x"], s["y"], backend=b), 2 * images)

    # SaliencyMix
    tasks += _fastmix_pair(size, "saliencymix", device, lambda s, b: fastmix.saliencymix(
        s["x"], s["y"], value_range=None, backend=b).targets(num_classes=classes), mix_floor)

    def ref_salmix(ctx):
        reference_saliencymix = references.get("reference_saliencymix")
        try:
            import cv2
            cv2.saliency.StaticSaliencyFineGrained_create()
        except Exception as exc:
            raise Unavailable(f"OpenCV with the contrib saliency module is needed: {type(exc).__name__}: {exc}") from None
        rng = np.random.RandomState(0)
        return lambda s: reference_saliencymix(s["x"], s["y"], 1.0, 1.0, rng)
    tasks.append(Task("operators", size.name, "saliencymix", "reference (SaliencyMix, OpenCV on the CPU)", "reference",
                      _opencv_library(), prepare=ref_salmix, floor_bytes=mix_floor, mutates_input=True,
                      note="one image's saliency on the CPU (normalised float bytes, as the official code); in place"))

    # Saliency-guided: SAGE (fastmix, reference) against Puzzle Mix's and Co-Mixup's mixing steps
    guided_subset = 4 if cpu_full and size.name == "imagenet" else None
    tasks += _fastmix_pair(size, "sage", device, lambda s, b: fastmix.sage_mix(
        s["x"], s["y"], grad=s["grad"], backend=b, **SAGE_OPTIONS).targets(num_classes=classes),
        guided_floor, subset=guided_subset)

    def ref_sage(ctx):
        reference_sage_mix = references.get("reference_sage_mix")
        rng = np.random.RandomState(0)
        return lambda s: reference_sage_mix(s["x"], s["grad"], rng=rng, **SAGE_OPTIONS)
    side = size.side
    candidates = reference_sage_candidates(side)
    sage_peak = reference_sage_peak_bytes(side)
    tasks.append(Task("operators", size.name, "sage", "reference SAGE (per-image loop, K grid_samples)", "reference",
                      "reference structure", prepare=ref_sage, floor_bytes=guided_floor, memory_bytes=sage_peak,
                      batch_subset=guided_subset, note=f"K={candidates} shifts on a {3 * side}x{3 * side} canvas"))

    puzzle_options = {} if side <= 64 else {"t_size": -1, "neigh_size": 2}
    puzzle_subset = 32 if cpu_full and size.name == "imagenet" else None
    for processes in (0, min(PUZZLE_POOL, os.cpu_count() or 1)):
        def ref_puzzle(ctx, processes=processes):
            reference_puzzlemix = references.get("reference_puzzlemix")
            _require_gco()
            rng = np.random.RandomState(0)
            pool = ctx.process_pool(processes) if processes else None
            return lambda s: reference_puzzlemix(s["x"], s["grad"], s["mean"], s["std"], rng=rng, pool=pool,
                                                 **puzzle_options)
        label = f"Puzzle Mix mixing step (graph cuts in a pool of {processes})" if processes else \
            "Puzzle Mix mixing step (graph cuts in-process)"
        tasks.append(Task("operators", size.name, "sage", label, "reference", _gco_library(), prepare=ref_puzzle,
                          floor_bytes=guided_floor, batch_subset=puzzle_subset,
                          note="pyGCO alpha-beta swap per image on the CPU" +
                               (f"; {puzzle_options}" if puzzle_options else "")))

    def ref_comix(ctx):
        reference_comixup = references.get("reference_comixup")
        _require_gco()
        rng = np.random.RandomState(0)
        return lambda s: reference_comixup(s["x"], s["grad"], torch.nn.functional.one_hot(s["y"], classes).float(),
                                           rng=rng)
    tasks.append(Task("operators", size.name, "sage", "Co-Mixup mixing step (graph-cut core)", "reference",
                      _gco_library(), prepare=ref_comix, floor_bytes=guided_floor,
                      batch_subset=40 if cpu_full and size.name == "imagenet" else None,
                      note="4 rounds x 20 pyGCO swaps per partition of 20 on the CPU"))
    return tasks


def copy_paste_tasks(size: InstanceSize, device: torch.device) -> list[Task]:
    floor = 2 * (size.image_bytes() + size.mask_bytes())
    from fastmix.copy_paste import copy_paste

    def call(s, backend):
        return copy_paste(s["batch"], params=s["params"], backend=backend)
    tasks = _fastmix_pair(size, "copy_paste", device, call, floor)
    output = (size.side, size.side)
    tasks.append(Task("operators", size.name, "copy_paste", "reference (per-image NumPy, mmdetection structure)",
                      "reference", "reference structure", floor_bytes=floor,
                      prepare=lambda ctx: _reference_copy_paste(output),
                      note="one image at a time in NumPy on the CPU, in one process (as one loader worker)"))
    return tasks


def _reference_copy_paste(output):
    reference_copy_paste = references.get("reference_copy_paste")
    return lambda s: reference_copy_paste(s["samples"], s["params"], output)


def _require_gco():
    try:
        import gco  # noqa: F401
    except Exception as exc:
        raise Unavailable(f"gco-wrapper not importable ({type(exc).__name__}: {exc}); PyPI has no wheel for "
                          "Python >= 3.12: build one with `pip wheel gco-wrapper==3.0.9 --no-deps` and install it") from None


def _gco_library() -> str:
    import importlib.metadata
    try:
        return f"gco-wrapper {importlib.metadata.version('gco-wrapper')}"
    except importlib.metadata.PackageNotFoundError:
        return "gco-wrapper (missing)"


def _opencv_library() -> str:
    try:
        import cv2
        return f"opencv {cv2.__version__}"
    except Exception:
        return "opencv (missing)"
