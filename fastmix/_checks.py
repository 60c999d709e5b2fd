"""Input validation shared by every operator: clear errors instead of silent corruption.

Value checks never read device memory: a check of a CPU tensor raises at once (ValueError); the
same check of a CUDA tensor is queued with `torch._assert_async` (a device-side assert that fails
the next synchronising call, with the message below in the CUDA error log), so that an operator
launches its work and returns without waiting for the GPU (issue 12.3). On "meta" tensors the
checks are skipped (there is no data), which is how the tests prove that no operator reads a
device value.
"""
from __future__ import annotations

import math

import numpy as np
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_images(images: torch.Tensor, *, name: str = "images", allow_uint8: bool = True) -> None:
    """Images must be a non-empty NCHW tensor of a float dtype (or uint8 where allowed)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must be a 4-D NCHW tensor [B, C, H, W], got shape {tuple(images.shape)}")
    allowed = FLOAT_DTYPES + ((torch.uint8,) if allow_uint8 else ())
    if images.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise TypeError(f"{name} must have dtype in ({names}), got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B == 0): there is nothing to mix")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} has an empty spatial size {tuple(images.shape[2:])}")


def check_out(out, images: torch.Tensor, dtype: torch.dtype) -> bool:
    """The operators' `out=` (and the numba kernels'): a tensor of the images' shape, the result's
    dtype, on the images' device, recording no gradient, and either the images themselves (the
    same tensor or an identical view: an in-place mix, True) or sharing no memory with them
    (False). A partly overlapping `out` would be read after it was written: refused."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if out.shape != images.shape or out.dtype != dtype or out.device != images.device:
        raise ValueError(f"out must have shape {tuple(images.shape)}, dtype {dtype} and device {images.device}, got "
                         f"{tuple(out.shape)} {out.dtype} on {out.device}")
    if torch.is_grad_enabled() and (out.requires_grad or images.requires_grad):
        raise ValueError("out= records no gradient: call without out= for a differentiable mix, or under "
                         "torch.no_grad()")
    if not out.numel() or out.untyped_storage().data_ptr() != images.untyped_storage().data_ptr():
        return False
    if out.data_ptr() == images.data_ptr() and out.stride() == images.stride() and out.dtype == images.dtype:
        return True
    raise ValueError("out must be the images themselves (an in-place mix) or share no memory with them")


def host_view(t: torch.Tensor):
    """A plain CPU tensor as a NumPy view (no copy), anything else unchanged. The checks of small
    parameter tensors (perm, lam, boxes: B values) compute on it: a NumPy op on a few hundred
    values costs about 1 us where a torch op costs 3-4 us, and an operator makes a dozen of them
    per call (on a CIFAR batch they had cost more than the mix itself)."""
    if type(t) is torch.Tensor and t.device.type == "cpu" and not t.requires_grad:
        return t.numpy()
    return t


_UNSIGNED = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def indices_in_range(values: np.ndarray, high: int) -> bool:
    """Every element of an integer array in [0, high), from one unsigned maximum (a negative
    index reads as a huge unsigned one): one NumPy reduction where min and max take two."""
    return values.size == 0 or int(values.view(_UNSIGNED[values.itemsize]).max()) < high


def require(condition, message: str, error: type = ValueError) -> None:
    """Raise `error(message)` unless every element of the bool tensor (or NumPy array, see
    host_view) `condition` is true.

    CPU tensors are checked now; device tensors by a device-side assert (no host sync)."""
    if isinstance(condition, np.ndarray):
        if not condition.all():
            raise error(message)
    elif condition.device.type == "cpu":
        if not bool(condition.all()):
            raise error(message)
    elif condition.device.type != "meta":
        torch._assert_async(condition.all(), message)


def check_same_device(reference: torch.Tensor, **tensors: torch.Tensor | None) -> None:
    for key, t in tensors.items():
        if t is not None and t.device != reference.device:
            raise ValueError(f"{key} is on {t.device} but the images are on {reference.device}")


def check_perm(perm: torch.Tensor, batch: int) -> torch.Tensor:
    """A pairing must be an int64 vector of indices into the batch (repeats are allowed).

    Returned on its own device; the range check on a device tensor is a device-side assert."""
    if not isinstance(perm, torch.Tensor):
        perm = torch.as_tensor(perm)
    if perm.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"perm must be an integer tensor, got {perm.dtype}")
    if perm.shape != (batch,):
        raise ValueError(f"perm must have shape [{batch}] (one partner per sample), got {tuple(perm.shape)}")
    values = host_view(perm)
    if isinstance(values, np.ndarray):
        if not indices_in_range(values, batch):
            raise ValueError(f"perm holds indices outside [0, {batch})")
    else:
        require((values >= 0) & (values < batch), f"perm holds indices outside [0, {batch})")
    return perm.long()


def check_lam(lam, batch: int, *, name: str = "lam") -> torch.Tensor:
    """Mixing weights: a scalar or a [B] vector of values in [0, 1]; returned as float32 [B]."""
    lam_t = torch.as_tensor(lam, dtype=torch.float32)
    if lam_t.dim() == 0:
        lam_t = lam_t.expand(batch).clone()
    if lam_t.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape [{batch}], got {tuple(lam_t.shape)}")
    # NaN fails both comparisons, so one test covers NaN, infinities and the range.
    values = host_view(lam_t)
    require((values >= 0) & (values <= 1), f"{name} must lie in [0, 1] (no NaN or infinite values)")
    return lam_t


def _boxes_fit(values: np.ndarray, height: int, width: int) -> bool:
    """int64 [B, 4] (y1, y2, x1, x2) rows with 0 <= y1 <= y2 <= height and 0 <= x1 <= x2 <= width,
    compared as unsigned (a negative coordinate reads as a huge one)."""
    unsigned = values.view(np.uint64)
    return bool((unsigned[:, 0::2] <= unsigned[:, 1::2]).all() and (unsigned[:, 1] <= height).all()
                and (unsigned[:, 3] <= width).all())


def check_boxes(boxes: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """Boxes are int64 [B, 4] rows of (y1, y2, x1, x2), half-open, inside the image."""
    boxes = torch.as_tensor(boxes)
    if boxes.dtype.is_floating_point or boxes.dtype == torch.bool:
        raise TypeError(f"boxes must be an integer tensor of (y1, y2, x1, x2), got {boxes.dtype}")
    if boxes.dim() == 1:
        boxes = boxes.expand(batch, 4)
    if boxes.shape != (batch, 4):
        raise ValueError(f"boxes must have shape [4] or [{batch}, 4] as (y1, y2, x1, x2), got {tuple(boxes.shape)}")
    boxes = boxes.long().contiguous()
    values = host_view(boxes)
    if isinstance(values, np.ndarray) and _boxes_fit(values, height, width):
        return boxes  # the common case in a few NumPy ops; the messages below say what is wrong
    y1, y2, x1, x2 = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    require((y1 >= 0) & (x1 >= 0) & (y2 <= height) & (x2 <= width),
            f"boxes must lie inside the {height}x{width} image")
    require((y2 >= y1) & (x2 >= x1), "boxes must have y1 <= y2 and x1 <= x2")
    return boxes


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_labels(labels, batch: int, images: torch.Tensor | None = None):
    """Labels (int [B] or soft [B, C]) with one entry per sample, on the images' device.

    Targets are computed on the labels' device, so labels elsewhere would silently move the
    loss computation off the images' device; the error names the fix instead."""
    if labels is None:
        return None
    labels = torch.as_tensor(labels)
    if labels.dim() == 0 or labels.shape[0] != batch:
        raise ValueError(f"labels must have one entry per sample ({batch}), got shape {tuple(labels.shape)}")
    if images is not None and labels.device != images.device:
        raise ValueError(f"labels are on {labels.device} but the images are on {images.device}: "
                         f"move them with labels.to({str(images.device)!r})")
    return labels


def check_fill_value(value, dtype: torch.dtype) -> float:
    """A fill value (CutOut) must be finite and representable in the output dtype (an integer in
    0..255 for uint8), so that it is never rounded or saturated silently."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"value must be a number, got {type(value).__name__}") from None
    if not math.isfinite(value):
        raise ValueError(f"value must be a finite number, got {value}")
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        if value != int(value) or not info.min <= value <= info.max:
            raise ValueError(f"{dtype} images hold integers {info.min}..{info.max}: value={value} cannot be "
                             f"represented (for a fraction f of the range, pass round(f * {info.max}))")
    elif abs(value) > torch.finfo(dtype).max:
        raise ValueError(f"value={value} overflows {dtype} (largest finite value {torch.finfo(dtype).max})")
    return value
