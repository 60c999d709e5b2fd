"""Box operators: CutMix (Yun et al., ICCV 2019), CutOut (DeVries & Taylor, 2017) and
SaliencyMix (Uddin et al., ICLR 2021).

Boxes are int64 [B, 4] rows of (y1, y2, x1, x2), half-open, in pixels. The official CutMix and
SaliencyMix scripts use one box for the whole batch; `per_sample=True` gives every sample its own
lam and box. lam is always recomputed from the clipped box area (the weight of the sample's own
label).
"""
from __future__ import annotations

import torch

from .. import dispatch, params
from .._checks import check_boxes, check_images, check_lam
from ..backends.pytorch.blend import box_area_lam
from ..backends.pytorch.fine_grained_saliency import fine_grained_saliency
from ..result import MixResult
from ._common import check_labels, resolve_perm


def _lam_for_boxes(lam, alpha, batch, per_sample, generator):
    if lam is None:
        return params.lam_per_batch_or_sample(alpha, batch, per_sample, generator)
    return check_lam(lam, batch)


def _broadcast_box(boxes: torch.Tensor, batch: int, per_sample: bool) -> torch.Tensor:
    return boxes if per_sample else boxes[:1].expand(batch, 4).contiguous()


def cutmix(images: torch.Tensor, labels: torch.Tensor | None = None, *, alpha: float = 1.0,
           lam=None, perm=None, boxes=None, per_sample: bool = False,
           generator: torch.Generator | None = None, backend: str = "auto") -> MixResult:
    """Paste a box of the partner into each sample (official CutMix geometry).

    lam ~ Beta(alpha, alpha); the box is int(H*sqrt(1-lam)) x int(W*sqrt(1-lam)) around a
    uniform integer centre, extending cut//2 each way and clipped to the image; the returned lam
    is 1 - box area / (H*W). Inject `boxes` ([4] or [B, 4]) to skip the draw entirely.
    """
    check_images(images)
    batch, _, height, width = images.shape
    labels = check_labels(labels, batch)
    perm_t = resolve_perm(perm, batch, generator)
    if boxes is None:
        lam_t = _lam_for_boxes(lam, alpha, batch, per_sample, generator)
        rows = batch if per_sample else 1
        cy = params.randint(height, (rows,), generator)
        cx = params.randint(width, (rows,), generator)
        boxes_t = _broadcast_box(params.box_from_lam(lam_t[:rows], height, width, cy, cx), batch, per_sample)
    else:
        boxes_t = check_boxes(boxes, batch, height, width).cpu()
    mixed = dispatch.box_paste(images, perm_t, boxes_t, backend=backend)
    device = images.device
    return MixResult(images=mixed, lam=box_area_lam(boxes_t, height, width).to(device),
                     perm=perm_t.to(device), boxes=boxes_t.to(device), labels=labels)


def cutout(images: torch.Tensor, labels: torch.Tensor | None = None, *, length: int | None = None,
           boxes=None, value: float = 0.0, per_sample: bool = True,
           generator: torch.Generator | None = None, backend: str = "auto") -> MixResult:
    """Erase a length x length square (clipped at the borders) around a uniform integer centre.

    `length` defaults to half the shorter image side (16 px on CIFAR, the paper's CIFAR-10
    setting). Labels are untouched: lam is 1 and perm is the identity.
    """
    check_images(images)
    batch, _, height, width = images.shape
    labels = check_labels(labels, batch)
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
        boxes_t = check_boxes(boxes, batch, height, width).cpu()
    erased = dispatch.box_fill(images, boxes_t, float(value), backend=backend)
    device = images.device
    return MixResult(images=erased, lam=torch.ones(batch, device=device),
                     perm=torch.arange(batch, device=device), boxes=boxes_t.to(device), labels=labels)


def images_to_uint8(images: torch.Tensor, value_range=(0.0, 1.0)) -> torch.Tensor:
    """uint8 [B, C, H, W] for saliency: uint8 passes through; floats map value_range to 0..255.

    value_range=None stretches each image's own min..max to 0..255 (for normalised tensors).
    """
    if images.dtype == torch.uint8:
        return images
    x = images.detach().float()
    if value_range is None:
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
    else:
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    scaled = (x - low) / torch.as_tensor(high - low).clamp(min=1e-12)
    return (scaled.clamp(0, 1) * 255).round().to(torch.uint8)


def image_saliency(images: torch.Tensor, value_range=(0.0, 1.0)) -> torch.Tensor:
    """OpenCV StaticSaliencyFineGrained maps float32 [B, H, W] of RGB (or grey) images."""
    if images.shape[1] not in (1, 3):
        raise ValueError(f"saliency needs RGB (3) or grey (1) channels, got {images.shape[1]}")
    return fine_grained_saliency(images_to_uint8(images, value_range))


def saliency_peaks(saliency: torch.Tensor):
    """Row and column of each map's first maximum in row-major order: int64 [B] each."""
    width = saliency.shape[-1]
    flat = saliency.reshape(saliency.shape[0], -1).argmax(dim=1)
    return flat // width, flat % width


def saliencymix(images: torch.Tensor, labels: torch.Tensor | None = None, *, alpha: float = 1.0,
                lam=None, perm=None, saliency: torch.Tensor | None = None, per_sample: bool = False,
                value_range=(0.0, 1.0), generator: torch.Generator | None = None,
                backend: str = "auto") -> MixResult:
    """Paste the partner's most salient box at the same location (SaliencyMix).

    The box (CutMix size from lam ~ Beta(alpha, alpha)) is centred on the peak of the partner's
    fine-grained saliency (OpenCV's StaticSaliencyFineGrained on the uint8 grey image, computed in
    PyTorch for the whole batch). As in the official code, one box for the batch is taken from
    the saliency of images[perm[0]]; `per_sample=True` gives each sample a box at the peak of its
    own partner's saliency. `saliency` ([B, H, W], one map per image) may be supplied instead.
    Float images are mapped to uint8 through `value_range` (None: each image's min..max).
    """
    check_images(images)
    batch, _, height, width = images.shape
    labels = check_labels(labels, batch)
    perm_t = resolve_perm(perm, batch, generator)
    lam_t = _lam_for_boxes(lam, alpha, batch, per_sample, generator)
    sources = perm_t if per_sample else perm_t[:1]
    if saliency is None:
        maps = image_saliency(images[sources.to(images.device)], value_range)
    else:
        saliency = torch.as_tensor(saliency)
        if saliency.dim() == 4 and saliency.shape[1] == 1:
            saliency = saliency[:, 0]
        if saliency.shape != (batch, height, width):
            raise ValueError(f"saliency must have shape [{batch}, {height}, {width}], got {tuple(saliency.shape)}")
        if not bool(torch.isfinite(saliency).all()):
            raise ValueError("saliency holds NaN or infinite values")
        maps = saliency[sources.to(saliency.device)]
    peak_r, peak_c = (v.cpu() for v in saliency_peaks(maps))
    rows = batch if per_sample else 1
    boxes_t = _broadcast_box(params.box_from_lam(lam_t[:rows], height, width, peak_r, peak_c), batch, per_sample)
    mixed = dispatch.box_paste(images, perm_t, boxes_t, backend=backend)
    device = images.device
    return MixResult(images=mixed, lam=box_area_lam(boxes_t, height, width).to(device),
                     perm=perm_t.to(device), boxes=boxes_t.to(device), labels=labels,
                     extras={"saliency": maps})


__all__ = ["cutmix", "cutout", "saliencymix", "image_saliency", "images_to_uint8"]
