"""Mixup, CutMix and CutOut composed from DALI's own operators.

No python function is involved, so a pipeline holding them serializes (``pipe.serialize()``),
checkpoints, runs on DALI's worker threads without the GIL, and runs on the GPU as DALI's
kernels (the parameters are drawn on the CPU and reach the GPU operators as argument inputs).

The parameters are drawn by DALI's seeded random operators and the geometry repeats fastmix's
PyTorch code operation by operation (float64 box sizes, float32 blends), so the images equal
fastmix's PyTorch operators called with the parameters the pipeline outputs:

* Mixup: ``fn.permute_batch`` gives the partners; ``x * lam + x[perm] * (1 - lam)`` in float32
  (DALI arithmetic); ``fn.cast_like`` rounds half to even and saturates back to uint8.
* CutMix: ``fn.multi_paste`` pastes the whole image, then the partner's box (HWC). CHW images:
  ``fn.erase`` blanks the box in the image and the rest in the partner, and the two are added.
* CutOut: ``fn.erase`` with ``axis_names="HW"``, which takes the image's own layout.

A value shared by the batch (one lam and one box per batch, as in the official scripts) is the
first sample's draw, copied to every sample with ``fn.permute_batch``.
"""
from __future__ import annotations

import math

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode

from . import draws


def zero_index() -> DataNode:
    """int32 0 per sample."""
    return fn.zeros(dtype=types.INT32)


def first_sample(node: DataNode) -> DataNode:
    """Every sample replaced by the batch's first sample (a value shared by the batch)."""
    return fn.permute_batch(node, indices=zero_index())


def image_height_width(images: DataNode, layout: str) -> tuple[DataNode, DataNode]:
    """int64 H and W per sample, from the images' shape (no pixel is read)."""
    shape = images.shape(dtype=types.INT64, device="cpu")
    if layout == "HWC":
        return shape[0], shape[1]
    return shape[1], shape[2]


def uniform_index(size: DataNode) -> DataNode:
    """int64 uniform in [0, size) per sample: floor(u * size), u ~ U[0, 1) in float64 (clamped,
    since u * size can round up to size)."""
    u = fn.random.uniform(range=[0.0, 1.0], dtype=types.FLOAT64)
    return dmath.min(fn.cast(dmath.floor(u * size), dtype=types.INT64), size - 1)


def _clip(value: DataNode, high: DataNode) -> DataNode:
    return dmath.min(dmath.max(value, 0), high)


def box_around(cy, cx, half_h, half_w, height, width) -> tuple:
    """(y1, y2, x1, x2) int64: [c - half, c + half) on each axis, clipped to the image."""
    return (_clip(cy - half_h, height), _clip(cy + half_h, height),
            _clip(cx - half_w, width), _clip(cx + half_w, width))


def stack_box(box) -> DataNode:
    """int64 [4] (y1, y2, x1, x2) per sample."""
    return fn.stack(*box)


def area_lam(box, height, width) -> DataNode:
    """float32 1 - box area / (H * W), computed in float64 as fastmix's box_area_lam."""
    y1, y2, x1, x2 = box
    area = fn.cast((y2 - y1) * (x2 - x1), dtype=types.FLOAT64)
    return fn.cast(1.0 - area / fn.cast(height * width, dtype=types.FLOAT64), dtype=types.FLOAT)


def ones_per_sample() -> DataNode:
    return fn.full(types.Constant(1.0, dtype=types.FLOAT))


# ----------------------------------------------------------------------------------------------
# Mixing


def blend(images: DataNode, partner: DataNode, lam: DataNode) -> DataNode:
    """lam * x + (1 - lam) * partner in float32 (fastmix's order of operations), back in the
    images' dtype (uint8: round half to even, saturate)."""
    mixed = images * lam + partner * (1.0 - lam)
    return fn.cast_like(mixed, images)


def paste_box(images: DataNode, partner, box, height, width, layout: str, ids: DataNode | None = None) -> DataNode:
    """images with the box (y1, y2, x1, x2) taken from partner (a callable giving the permuted
    batch, called only when needed); `layout` HWC or CHW. With `ids` (int [2] per sample: its own
    index and its partner's), HWC images are pasted from the one batch without permuting it."""
    y1, y2, x1, x2 = box
    zero = fn.cast(height * 0, dtype=types.INT32)
    anchors = fn.stack(fn.stack(zero, zero), fn.cast(fn.stack(y1, x1), dtype=types.INT32))
    shapes = fn.cast(fn.stack(fn.stack(height, width), fn.stack(y2 - y1, x2 - x1)), dtype=types.INT32)
    if layout == "HWC" and ids is not None:
        return fn.multi_paste(images, in_ids=ids, in_anchors=anchors, out_anchors=anchors, shapes=shapes)
    partner = partner()
    if layout == "HWC":
        return fn.multi_paste(images, partner, in_anchors=anchors, out_anchors=anchors, shapes=shapes)
    # CHW: fn.multi_paste takes HWC only (and its FHWC path fails on the CPU in DALI 2.4), so the
    # box is erased from the image, everything but the box from the partner, and the two added:
    # one of the two addends is 0 at every pixel, so the sum is exact.
    outside = complement_regions(box, height, width)
    return erase_box(images, box, 0.0) + fn.erase(partner, anchor=outside[0], shape=outside[1], axis_names="HW",
                                                 fill_value=0.0)


def complement_regions(box, height, width) -> tuple[DataNode, DataNode]:
    """float32 anchors and shapes [8] of the (up to) four rectangles around the box (y1, y2, x1,
    x2): above, below, left and right of it; empty ones have a zero extent."""
    y1, y2, x1, x2 = box
    zero = height * 0
    anchors = fn.stack(zero, zero, y2, zero, y1, zero, y1, x2)
    shapes = fn.stack(y1, width, height - y2, width, y2 - y1, x1, y2 - y1, width - x2)
    return fn.cast(anchors, dtype=types.FLOAT), fn.cast(shapes, dtype=types.FLOAT)


def erase_box(images: DataNode, box, value: float) -> DataNode:
    y1, y2, x1, x2 = box
    anchor = fn.cast(fn.stack(y1, x1), dtype=types.FLOAT)
    shape = fn.cast(fn.stack(y2 - y1, x2 - x1), dtype=types.FLOAT)
    return fn.erase(images, anchor=anchor, shape=shape, axis_names="HW", fill_value=float(value))


# ----------------------------------------------------------------------------------------------
# Parameters


def lam_draw(alpha: float, per_sample: bool) -> DataNode:
    """float32 Beta(alpha, alpha) per sample or shared by the batch; 1 (no mixing) for alpha <= 0."""
    beta = draws.beta_weights(alpha)
    if beta is None:
        return ones_per_sample()
    return beta if per_sample else first_sample(beta)


def cutmix_box(lam: DataNode, height, width, per_sample: bool) -> tuple:
    """Official CutMix geometry (fastmix.params.box_from_lam): cut = floor(size * sqrt(1 - lam))
    in float64, a uniform integer centre, half-extent cut // 2 each way, clipped."""
    cy, cx = uniform_index(height), uniform_index(width)
    if not per_sample:
        cy, cx = first_sample(cy), first_sample(cx)
    return box_from_lam(lam, height, width, cy, cx)


def box_from_lam(lam: DataNode, height, width, cy, cx) -> tuple:
    """fastmix.params.box_from_lam in DALI arithmetic: cut = floor(size * sqrt(1 - lam)) in
    float64, half-extent cut // 2 around the integer centre (cy, cx), clipped."""
    ratio = dmath.sqrt(1.0 - fn.cast(lam, dtype=types.FLOAT64))
    cut_h = fn.cast(dmath.floor(height * ratio), dtype=types.INT64)
    cut_w = fn.cast(dmath.floor(width * ratio), dtype=types.INT64)
    return box_around(cy, cx, cut_h // 2, cut_w // 2, height, width)


def cutout_box(length: int | None, height, width, per_sample: bool) -> tuple:
    """A length x length square around a uniform integer centre, clipped (fastmix.cutout)."""
    if length is None:
        half = dmath.min(height, width) // 2 // 2
    else:
        half = int(length) // 2
    cy, cx = uniform_index(height), uniform_index(width)
    if not per_sample:
        cy, cx = first_sample(cy), first_sample(cx)
    return box_around(cy, cx, half, half, height, width)


# ----------------------------------------------------------------------------------------------
# Targets


def soft_targets(labels: DataNode, perm: DataNode | None, lam: DataNode, num_classes: int | None,
                 label_smoothing: float) -> DataNode:
    """float32 [C]: lam * t + (1 - lam) * t[perm], t = one-hot(labels) (num_classes given) or the
    float soft labels (num_classes None), smoothed as fastmix.one_hot."""
    if num_classes is not None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        targets = fn.one_hot(fn.reshape(labels, shape=[]), num_classes=int(num_classes))
        classes = float(num_classes)
    else:
        from .layouts import infer_dtype

        if infer_dtype(labels) in _INTEGER_TYPES:
            raise ValueError("integer class labels need num_classes (float soft labels [C] go without it)")
        targets = fn.cast(labels, dtype=types.FLOAT)
        classes = fn.cast(labels.shape(dtype=types.INT64, device="cpu")[0], dtype=types.FLOAT)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / classes
    if perm is None:
        return targets
    return lam * targets + (1.0 - lam) * fn.permute_batch(targets, indices=perm)


_INTEGER_TYPES = (types.INT8, types.INT16, types.INT32, types.INT64, types.UINT8, types.UINT16, types.UINT32,
                  types.UINT64, types.BOOL)


def check_alpha(alpha: float, operator: str) -> None:
    if alpha is None or not math.isfinite(alpha):
        raise ValueError(f"{operator}: alpha must be a finite number, got {alpha}")


def check_label_smoothing(label_smoothing: float, operator: str) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"{operator}: label_smoothing must be in [0, 1), got {label_smoothing}")
