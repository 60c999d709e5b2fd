"""Box operators: CutMix (Yun et al., ICCV 2019), CutOut (DeVries & Taylor, 2017) and
SaliencyMix (Uddin et al., ICLR 2021).

Box order: every box these operators take or return is an int64 [B, 4] row of
(y1, y2, x1, x2) -- rows first, half-open, in pixels (`MixResult.BOX_ORDER`; torchvision's
(x1, y1, x2, y2) order is `MixResult.boxes_xyxy()`). The official CutMix and SaliencyMix scripts
use one box for the whole batch; `per_sample=True` gives every sample its own lam and box, and so
does an injected `lam` of shape [B] (the rule of every fastmix operator: a [B] lam is one weight
per sample). lam is always recomputed from the clipped box area (the weight of the sample's own
label).

No operator reads device memory on the host: the boxes of SaliencyMix are computed on the
device from the saliency peaks, and the value checks of device tensors are device-side asserts.
"""
from __future__ import annotations

import math

import torch

from .. import dispatch, params
from ..dispatch import to_device
from .._checks import check_boxes, check_fill_value, check_images, check_lam, require  # noqa: F401 (re-exported)
from ..backends.pytorch.blend import box_area_lam
from ..backends.pytorch.fine_grained_saliency import fine_grained_saliency
from ..result import MixResult
from ._common import check_labels, lam_is_per_sample, resolve_perm


def _lam_for_boxes(lam, alpha, batch, per_sample, generator):
    if lam is None:
        return params.lam_per_batch_or_sample(alpha, batch, per_sample, generator)
    return check_lam(lam, batch)


def _broadcast_box(boxes: torch.Tensor, batch: int, per_sample: bool) -> torch.Tensor:
    return boxes if per_sample else boxes[:1].expand(batch, 4).contiguous()


def cutmix(images: torch.Tensor, labels: torch.Tensor | None = None, *, alpha: float = 1.0,
           lam=None, perm=None, boxes=None, per_sample: bool = False,
           generator: torch.Generator | None = None, backend: str = "auto",
           out: torch.Tensor | None = None) -> MixResult:
    """Paste a box of the partner into each sample (official CutMix geometry).

    lam ~ Beta(alpha, alpha); the box is int(H*sqrt(1-lam)) x int(W*sqrt(1-lam)) around a
    uniform integer centre, extending cut//2 each way and clipped to the image; the returned lam
    is 1 - box area / (H*W). An injected `lam` is a scalar (one box for the batch) or a [B]
    vector (one box per sample, whatever `per_sample` says). Inject `boxes` ([4] or [B, 4],
    (y1, y2, x1, x2)) to skip the draw entirely. Returned boxes: int64 [B, 4] (y1, y2, x1, x2).
    `out`: a tensor to write the mixed images into (the images' shape, dtype and device) and
    return as `images`; `out=images` mixes in place (a loader's batch: on the CPU the numba
    kernels then touch only what changes). `out` must be the images themselves or share no
    memory with them, and records no gradient.
    """
    check_images(images)
    batch, _, height, width = images.shape
    labels = check_labels(labels, batch, images)
    per_sample = per_sample or lam_is_per_sample(lam)
    perm_t = resolve_perm(perm, batch, generator)
    if boxes is None:
        lam_t = _lam_for_boxes(lam, alpha, batch, per_sample, generator)
        rows = batch if per_sample else 1
        cy = to_device(params.randint(height, (rows,), generator), lam_t.device)
        cx = to_device(params.randint(width, (rows,), generator), lam_t.device)
        boxes_t = _broadcast_box(params.box_from_lam(lam_t[:rows], height, width, cy, cx), batch, per_sample)
    else:
        boxes_t = check_boxes(boxes, batch, height, width)
    mixed = dispatch.box_paste(images, perm_t, boxes_t, backend=backend, out=out)
    device = images.device
    return MixResult(images=mixed, lam=to_device(box_area_lam(boxes_t, height, width), device),
                     perm=to_device(perm_t, device), boxes=to_device(boxes_t, device), labels=labels)


def cutout(images: torch.Tensor, labels: torch.Tensor | None = None, *, length: int | None = None,
           boxes=None, value: float = 0.0, per_sample: bool = True,
           generator: torch.Generator | None = None, backend: str = "auto",
           out: torch.Tensor | None = None) -> MixResult:
    """Erase a length x length square (clipped at the borders) around a uniform integer centre.

    `length` defaults to half the shorter image side (16 px on CIFAR, the paper's CIFAR-10
    setting). `value` must be finite and exact in the images' dtype (an integer 0..255 for uint8).
    Labels are untouched: lam is 1 and perm is the identity. Returned boxes: int64 [B, 4]
    (y1, y2, x1, x2).
    `out`: a tensor to write the mixed images into (the images' shape, dtype and device) and
    return as `images`; `out=images` mixes in place (a loader's batch: on the CPU the numba
    kernels then touch only what changes). `out` must be the images themselves or share no
    memory with them, and records no gradient.
    """
    check_images(images)
    batch, _, height, width = images.shape
    labels = check_labels(labels, batch, images)
    if boxes is None:
        length = min(height, width) // 2 if length is None else int(length)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        rows = batch if per_sample else 1
        cy = params.randint(height, (rows,), generator)
        cx = params.randint(width, (rows,), generator)
        half = length // 2
        boxes_t = torch.stack([(cy - half).clamp(0, height), (cy + half).clamp(0, height),
                               (cx - half).clamp(0, width), (cx + half).clamp(0, width)], dim=1)
        boxes_t = _broadcast_box(boxes_t, batch, per_sample)
    else:
        boxes_t = check_boxes(boxes, batch, height, width)
    erased = dispatch.box_fill(images, boxes_t, value, backend=backend, out=out)
    device = images.device
    return MixResult(images=erased, lam=torch.ones(batch, device=device),
                     perm=torch.arange(batch, device=device), boxes=to_device(boxes_t, device), labels=labels)


def _channel_vector(values, name: str, channels: int, device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32)
    if t.dim() == 0:
        t = t.expand(channels)
    if t.shape != (channels,):
        raise ValueError(f"{name} must be a number or have one value per channel ({channels}), "
                         f"got shape {tuple(t.shape)}")
    if t.device.type == "cpu" and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return to_device(t, device).view(1, channels, 1, 1)


def images_to_uint8(images: torch.Tensor, value_range=(0.0, 1.0), *, mean=None, std=None) -> torch.Tensor:
    """uint8 [B, C, H, W] for saliency: uint8 passes through; floats map value_range to 0..255.

    `mean`/`std` (per channel) undo a normalisation first (x * std + mean), so normalised images
    give exactly the uint8 image, and so the saliency and the boxes, of the original ones.
    value_range=None stretches each image's own min..max to 0..255 instead.

    Float images outside value_range are refused (never clipped: clipping moves the saliency
    peak, so the box): values more than half a uint8 step outside raise a ValueError that names
    the fix. On CUDA tensors the check is a device-side assert (no host sync; the error surfaces
    at the next synchronising call, with the same message in the CUDA log).
    """
    if images.dtype == torch.uint8:
        if mean is not None or std is not None:
            raise ValueError("mean=/std= undo a float normalisation; uint8 images are used as they are")
        return images
    if (mean is None) != (std is None):
        raise ValueError("pass both mean= and std= (the normalisation x = (image - mean) / std), or neither")
    x = images.detach().float()
    if mean is not None:
        channels = images.shape[1]
        std_t = _channel_vector(std, "std", channels, images.device)
        if std_t.device.type == "cpu" and bool((std_t == 0).any()):
            raise ValueError("std must be non-zero")
        x = x * std_t + _channel_vector(mean, "mean", channels, images.device)
    if value_range is None:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        scaled = (x - low) / (high - low).clamp(min=1e-12)
    else:
        if len(value_range) != 2:
            raise ValueError(f"value_range must be (low, high) or None, got {value_range}")
        low, high = (float(v) for v in value_range)
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
        scaled = (x - low) / (high - low)
        # Within half a uint8 step, clipping does not change the rounded value: nothing is lost.
        tolerance = 0.5 / 255
        require((scaled >= -tolerance) & (scaled <= 1 + tolerance),
                f"images hold values outside value_range=({low:g}, {high:g}) (e.g. normalised images); "
                "SaliencyMix would have to clip them, which moves the saliency box. Pass mean=/std= of the "
                "normalisation (the boxes are then those of the original images), value_range=(min, max) "
                "of your data, or value_range=None to stretch each image's own min..max")
    return (scaled.clamp(0, 1) * 255).round().to(torch.uint8)


def image_saliency(images: torch.Tensor, value_range=(0.0, 1.0), *, mean=None, std=None) -> torch.Tensor:
    """OpenCV StaticSaliencyFineGrained maps float32 [B, H, W] of RGB (or grey) images
    (see :func:`images_to_uint8` for value_range, mean and std)."""
    if images.shape[1] not in (1, 3):
        raise ValueError(f"saliency needs RGB (3) or grey (1) channels, got {images.shape[1]}")
    grey = images_to_uint8(images, value_range, mean=mean, std=std)
    from ..backends import numba as numba_backend

    if grey.device.type == "cpu" and numba_backend.available():  # the same maps, one compiled pass per image
        from ..backends.numba import saliency as numba_saliency

        return numba_saliency.fine_grained_saliency(grey)
    return fine_grained_saliency(grey)


def saliency_peaks(saliency: torch.Tensor):
    """Row and column of each map's first maximum in row-major order: int64 [B] each (on the
    maps' device: nothing is read on the host)."""
    width = saliency.shape[-1]
    flat = saliency.reshape(saliency.shape[0], -1).argmax(dim=1)
    return flat // width, flat % width


def saliencymix(images: torch.Tensor, labels: torch.Tensor | None = None, *, alpha: float = 1.0,
                lam=None, perm=None, saliency: torch.Tensor | None = None, per_sample: bool = False,
                value_range=(0.0, 1.0), mean=None, std=None, generator: torch.Generator | None = None,
                backend: str = "auto", out: torch.Tensor | None = None) -> MixResult:
    """Paste the partner's most salient box at the same location (SaliencyMix).

    The box (CutMix size from lam ~ Beta(alpha, alpha)) is centred on the peak of the partner's
    fine-grained saliency (OpenCV's StaticSaliencyFineGrained on the uint8 grey image, computed in
    PyTorch for the whole batch). As in the official code, one box for the batch is taken from
    the saliency of images[perm[0]]; `per_sample=True` (or an injected `lam` of shape [B]) gives
    each sample a box at the peak of its own partner's saliency. `saliency` ([B, H, W], one map
    per image) may be supplied instead. Returned boxes: int64 [B, 4] (y1, y2, x1, x2).

    Float images are mapped to uint8 through `value_range` (default (0, 1); None: each image's
    min..max). Images normalised with mean/std: pass `mean=` and `std=` and the operator undoes
    the normalisation, giving exactly the boxes of the un-normalised images. Images outside
    value_range raise a ValueError (on CUDA: a device-side assert), they are never clipped.
    `out`: a tensor to write the mixed images into (the images' shape, dtype and device) and
    return as `images`; `out=images` mixes in place (a loader's batch; the saliency is computed
    first, and on the CPU the numba kernels then touch only what changes). `out` must be the
    images themselves or share no memory with them, and records no gradient.
    """
    check_images(images)
    batch, _, height, width = images.shape
    labels = check_labels(labels, batch, images)
    per_sample = per_sample or lam_is_per_sample(lam)
    perm_t = resolve_perm(perm, batch, generator)
    lam_t = _lam_for_boxes(lam, alpha, batch, per_sample, generator)
    sources = perm_t if per_sample else perm_t[:1]
    if saliency is None:
        maps = image_saliency(images[to_device(sources, images.device)], value_range, mean=mean, std=std)
    else:
        saliency = torch.as_tensor(saliency)
        if saliency.dim() == 4 and saliency.shape[1] == 1:
            saliency = saliency[:, 0]
        if saliency.shape != (batch, height, width):
            raise ValueError(f"saliency must have shape [{batch}, {height}, {width}], got {tuple(saliency.shape)}")
        require(torch.isfinite(saliency), "saliency holds NaN or infinite values")
        maps = saliency[to_device(sources, saliency.device)]
    peak_r, peak_c = saliency_peaks(maps)
    rows = batch if per_sample else 1
    lam_rows = to_device(lam_t[:rows], peak_r.device)
    boxes_t = _broadcast_box(params.box_from_lam(lam_rows, height, width, peak_r, peak_c), batch, per_sample)
    mixed = dispatch.box_paste(images, perm_t, boxes_t, backend=backend, out=out)
    device = images.device
    return MixResult(images=mixed, lam=to_device(box_area_lam(boxes_t, height, width), device),
                     perm=to_device(perm_t, device), boxes=to_device(boxes_t, device), labels=labels,
                     extras={"saliency": maps})


__all__ = ["cutmix", "cutout", "saliencymix", "image_saliency", "images_to_uint8", "check_fill_value"]
