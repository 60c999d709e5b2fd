"""Simple Copy-Paste as a DALI pipeline operator, around ``fastmix.copy_paste.copy_paste``.

The pairing comes from ``fn.batch_permutation``. On the CPU (``impl="auto"``/``"numba"``) the
whole step is one compiled ``numba_function`` whose jitter and object subsets are
``fn.random.uniform`` draws (:mod:`fastmix.dali.numba_copy_paste`); the python-function path
(``impl="python"``, the GPU) draws them with a ``torch.Generator`` seeded by
``fn.random.uniform``. Both follow the pipeline seed. Images may differ in size (give ``output_size`` then); each image brings its own
instance masks [N_i, H_i, W_i] (e.g. from :func:`fastmix.dali.polygon_masks`), labels [N_i]
and optionally boxes [N_i, 4] (x1, y1, x2, y2), as ``fn.readers.coco(ltrb=True)`` gives them.
"""
from __future__ import annotations

from functools import partial

import torch

import nvidia.dali.fn as fn
import nvidia.dali.types as types

from ..copy_paste import InstanceBatch
from ..copy_paste.params import check_draw_options
from ..copy_paste import copy_paste as copy_paste_batch
from . import draws, numba_ops
from ._batch import check_declared_layout, chw_to_layout, host_vector, sample_to_chw
from ._bridge import call_torch, pipeline_device
from .layouts import declare, declare_dtype, infer_dtype, resolve_layout
from .nodes import CopyPasteNodes

__all__ = ["copy_paste"]

OPERATOR = "fastmix.dali.copy_paste"
IMPLS = ("auto", "numba", "python")


def _instance_batch(images, layout: str, masks, labels, boxes) -> InstanceBatch:
    if any(image.dim() != 3 for image in images):
        raise ValueError(f"{OPERATOR} needs 3-D {layout} images, got shapes {[tuple(i.shape) for i in images]}")
    chw = [sample_to_chw(image, layout) for image in images]
    object_labels = [label.reshape(-1).long() for label in labels]
    object_boxes = None if boxes is None else [box.reshape(-1, 4).float() for box in boxes]
    return InstanceBatch.from_lists(chw, list(masks), object_boxes, object_labels)


def _copy_paste_batch(images, masks, labels, perm, seed, boxes=None, layout_samples=None, *, options, layout):
    if layout_samples is not None:  # CPU: the real layout against the one the graph gave
        check_declared_layout(layout_samples, layout, OPERATOR)
    layout_name = layout
    batch = _instance_batch(images, layout_name, masks, labels, boxes)
    seed_value = int(host_vector(seed, torch.int64)[0])
    result = copy_paste_batch(batch, perm=host_vector(perm, torch.int64),
                              generator=torch.Generator().manual_seed(seed_value), **options)
    device = result.images.device
    return {"images": chw_to_layout(result.images, layout_name), "masks": result.masks, "boxes": result.boxes,
            "labels": result.labels, "perm": result.perm,
            "seed": torch.full((len(images),), seed_value, dtype=torch.int64, device=device)}


def copy_paste(images, masks, labels, *, boxes=None, output_size=None, scale_range=(0.1, 2.0),
               flip_prob: float = 0.5, max_num_pasted: int = 100, paste_fraction: float | None = None,
               bbox_occluded_thr: float = 10, mask_occluded_thr: float = 300, blend: str = "hard",
               blend_sigma: float = 2.0, blend_kernel_size: int = 5, no_fixed_points: bool = True,
               layout: str | None = None, impl: str = "auto") -> CopyPasteNodes:
    """Simple Copy-Paste inside a DALI pipeline: image i receives a random subset of the objects of
    image perm[i] (all options as in ``fastmix.copy_paste.copy_paste``).

    images: HWC or CHW images (layout read off the graph, or given with ``layout``), on the CPU or
    the GPU; masks: per image uint8/bool [N_i, H_i, W_i]; labels: per image [N_i] integer class ids; boxes (optional): per
    image [N_i, 4] (x1, y1, x2, y2) pixels. ``output_size`` (rows, cols) is required when the
    images differ in size. Returns :class:`CopyPasteNodes` (images, masks, boxes, labels, perm,
    seed); the images output carries the input's layout.
    ``no_fixed_points=True`` (default) draws a pairing without self-pairs, as every Copy-Paste
    reference; at batch size 1 DALI returns [0] and nothing is pasted (an image never pastes
    into itself, see ``fastmix.copy_paste.params``).
    ``impl``: ``"numba"`` runs the whole step as one compiled kernel in DALI's ``numba_function``
    (:mod:`fastmix.dali.numba_copy_paste`: CPU uint8 / float32 images whose dtype the graph
    tells, ``output_size`` given, ``blend="hard"``), every draw a DALI random operator, without
    the GIL; it outputs ``jitter`` and ``selected`` instead of ``seed``. ``"python"`` runs
    ``fastmix.copy_paste`` in one python function (any case, the GPU; jitter and subsets from a
    torch.Generator seeded by DALI: other draws than the numba path's for the same seed);
    ``"auto"`` takes numba where it applies.
    """
    device = pipeline_device(images)
    image_layout = resolve_layout(images, layout, OPERATOR)
    if impl not in IMPLS:
        raise ValueError(f"{OPERATOR}: impl must be one of {IMPLS}, got {impl!r}")
    try:
        check_draw_options(scale_range, flip_prob, max_num_pasted, paste_fraction)
    except ValueError as error:
        raise ValueError(f"{OPERATOR}: {error}") from None
    if impl != "python":
        dtype = infer_dtype(images)
        usable = (device == "cpu" and dtype in (types.UINT8, types.FLOAT) and output_size is not None
                  and blend == "hard" and numba_ops.available())
        if impl == "numba" and not usable:
            raise ValueError(f"{OPERATOR}: impl='numba' needs CPU uint8 / float32 images whose dtype the graph tells "
                             f"(got {dtype}), output_size given, blend='hard', and numba installed, "
                             f"FASTMIX_DISABLE_NUMBA unset (available: {numba_ops.available()}); use impl='python'")
        if usable:
            return _copy_paste_numba(images, masks, labels, image_layout, dtype, output_size, scale_range, flip_prob,
                                     max_num_pasted, paste_fraction, bbox_occluded_thr, mask_occluded_thr,
                                     no_fixed_points)
    options = {"output_size": output_size, "scale_range": scale_range, "flip_prob": flip_prob,
               "max_num_pasted": max_num_pasted, "paste_fraction": paste_fraction,
               "bbox_occluded_thr": bbox_occluded_thr, "mask_occluded_thr": mask_occluded_thr, "blend": blend,
               "blend_sigma": blend_sigma, "blend_kernel_size": blend_kernel_size}
    compute = partial(_copy_paste_batch, options=options, layout=image_layout)
    inputs = {"images": images, "masks": masks, "labels": labels,
              "perm": draws.partner_permutation(no_fixed_points), "seed": draws.batch_seed(), "boxes": boxes}
    if device == "cpu":
        inputs["layout_samples"] = images.property("layout", device="cpu")
    outputs = ("images", "masks", "boxes", "labels", "perm", "seed")
    nodes = call_torch(compute, inputs, outputs, device=device, images_layout=image_layout)
    declare(nodes["images"], image_layout)
    return CopyPasteNodes(**nodes)


def _copy_paste_numba(images, masks, labels, layout, dtype, output_size, scale_range, flip_prob, max_num_pasted,
                      paste_fraction, bbox_occluded_thr, mask_occluded_thr, no_fixed_points) -> CopyPasteNodes:
    from . import numba_copy_paste

    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if len(output_size) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in output_size):
        raise ValueError(f"{OPERATOR}: output_size must be a positive int or (rows, cols), got {output_size}")
    for name, value in (("bbox_occluded_thr", bbox_occluded_thr), ("mask_occluded_thr", mask_occluded_thr)):
        if not value >= 0:
            raise ValueError(f"{OPERATOR}: {name} must be >= 0, got {value}")
    perm = draws.partner_permutation(no_fixed_points)
    out = numba_copy_paste.copy_paste(images, masks, labels, perm, layout=layout, dtype=dtype,
                                      output_size=tuple(int(v) for v in output_size), scale_range=scale_range,
                                      flip_prob=flip_prob, max_num_pasted=max_num_pasted,
                                      paste_fraction=paste_fraction, bbox_occluded_thr=bbox_occluded_thr,
                                      mask_occluded_thr=mask_occluded_thr)
    mixed = declare_dtype(fn.reshape(out["images"], layout=layout), dtype)  # numba_function sets no layout
    return CopyPasteNodes(images=declare(mixed, layout), masks=out["masks"], boxes=out["boxes"],
                          labels=out["labels"], perm=fn.cast(perm, dtype=types.INT64), seed=None,
                          jitter=out["jitter"], selected=out["selected"])
