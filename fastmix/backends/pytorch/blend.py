"""Deterministic mixing kernels (PyTorch path): Mixup blend, box paste and box fill.

All take injected parameters (perm, lam, boxes) and return a new tensor with the input's dtype
and memory format. Arithmetic happens in float32 (float64 for float64 input); uint8 results are
rounded half-to-even and saturated.
"""
from __future__ import annotations

import numpy as np
import torch

from ..._checks import host_view


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def to_output(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cast back to `like`'s dtype and memory format (uint8: round and saturate).

    `values` must be a fresh result (never `like` or a view of it): it is returned as it is when
    it already has `like`'s dtype and strides, which saves a full copy of the batch."""
    if like.dtype == torch.uint8:
        values = values.round().clamp_(0, 255)
    if values.dtype == like.dtype and values.stride() == like.stride():
        return values
    out = torch.empty_like(like)
    out.copy_(values)
    return out


def mixup_blend(images: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """lam[i] * x[i] + (1 - lam[i]) * x[perm[i]] for float32 lam [B]."""
    ct = compute_dtype(images.dtype)
    x = images.to(ct)
    weight = lam.to(device=images.device, dtype=ct).view(-1, 1, 1, 1)
    return to_output(weight * x + (1.0 - weight) * x[perm.to(images.device)], images)


def box_mask(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """bool [B, 1, H, W]: True inside each sample's half-open box (y1, y2, x1, x2)."""
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    y1, y2, x1, x2 = (v.view(-1, 1) for v in boxes.unbind(1))
    in_rows = (rows >= y1) & (rows < y2)
    in_cols = (cols >= x1) & (cols < x2)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def shared_box(boxes: torch.Tensor, height: int, width: int):
    """(y1, y2, x1, x2) when every sample has the same box and `boxes` lives on the CPU (the
    per-batch mode of CutMix / SaliencyMix / CutOut), else None. Checked only on the CPU, where
    it costs no device synchronisation. The box is clipped to the frame as the masked path and
    the kernels clip it: a negative start must not become a Python slice from the end."""
    if boxes.device.type != "cpu" or boxes.shape[0] == 0 or not bool((boxes == boxes[:1]).all()):
        return None
    y1, y2, x1, x2 = (int(v) for v in boxes[0])
    y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
    x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
    return y1, max(y1, y2), x1, max(x1, x2)


def box_paste(images: torch.Tensor, perm: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Inside sample i's box, copy the pixels of sample perm[i]; elsewhere keep sample i."""
    box = shared_box(boxes, images.shape[2], images.shape[3])
    perm = perm.to(images.device)
    if box is not None:  # one box: copy the batch, then only the box's pixels of the partners
        y1, y2, x1, x2 = box
        out = images.clone()
        out[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
        return out
    inside = box_mask(boxes.to(images.device), images.shape[2], images.shape[3])
    return to_output(torch.where(inside, images[perm], images), images)


def box_fill(images: torch.Tensor, boxes: torch.Tensor, value: float) -> torch.Tensor:
    """Inside sample i's box, write `value` (CutOut)."""
    fill = torch.full((), value, dtype=images.dtype, device=images.device)  # no host-to-device copy
    box = shared_box(boxes, images.shape[2], images.shape[3])
    if box is not None:
        y1, y2, x1, x2 = box
        out = images.clone()
        out[:, :, y1:y2, x1:x2] = fill
        return out
    inside = box_mask(boxes.to(images.device), images.shape[2], images.shape[3])
    return to_output(torch.where(inside, fill, images), images)


def box_area_lam(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float32 [B]: the fraction of each image outside its box (the weight of its own label),
    computed in float64 (on CPU boxes in NumPy, see fastmix._checks.host_view: the same IEEE
    operations)."""
    values = host_view(boxes)
    area = (values[:, 1] - values[:, 0]) * (values[:, 3] - values[:, 2])
    if isinstance(values, np.ndarray):
        return torch.from_numpy((1.0 - area / (height * width)).astype(np.float32))
    return (1.0 - area.double() / (height * width)).float()
