"""Torch ops (namespace ``fastmix``) for Copy-Paste and fine-grained saliency.

    fastmix::lsj_resample_images(images, views, out_height, out_width, backend="auto") -> float32 [V, C, H, W]
    fastmix::lsj_resample_masks(masks, views, active, out_height, out_width, backend="auto") -> bool [V, N, H, W]
    fastmix::occlusion_update(receiving_masks, pasted_masks, backend="auto") -> (alpha, updated)
    fastmix::copy_paste_blend(receiving, pasted, alpha, backend="auto") -> float32 [B, C, H, W]
    fastmix::instance_boxes_areas(masks, backend="auto") -> (boxes float32 [..., 4], areas int64 [...])
    fastmix::fine_grained_saliency(images, backend="auto") -> float32 [B, H, W]

``backend``: "auto" runs the CuPy kernels of ``kernels/*.cu`` (``fastmix.backends.cupy``) for
CUDA tensors and the PyTorch oracle (``fastmix.backends.pytorch``) otherwise; "pytorch" forces
the oracle on any device; "cupy" needs CUDA tensors. Every op has an explicit fake kernel that
checks the same metadata, so the ops work under FakeTensor, ``torch.compile`` and
``torch.export``. They are not differentiable: augmentation runs on data that needs no
gradient. ``views`` is the packed jitter geometry of
``fastmix.backends.pytorch.copy_paste.pack_views``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import FLOAT_DTYPES
from ..backends.pytorch import copy_paste as torch_copy_paste
from ..backends.pytorch import fine_grained_saliency as torch_saliency

__all__ = ["BACKENDS", "lsj_resample_images", "lsj_resample_masks", "occlusion_update", "copy_paste_blend",
           "instance_boxes_areas", "fine_grained_saliency"]

BACKENDS = ("auto", "pytorch", "cupy")


def _use_cupy(backend: str, tensor: Tensor) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cupy" and tensor.device.type != "cuda":
        raise ValueError(f"backend='cupy' needs CUDA tensors, got a tensor on {tensor.device}")
    return tensor.device.type == "cuda" and backend != "pytorch"


def _cupy_copy_paste():
    from ..backends.cupy import copy_paste

    return copy_paste


def _check(tensor: Tensor, name: str, dims: int, dtypes: tuple, device: torch.device) -> None:
    if tensor.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(tensor.shape)}")
    if tensor.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {dtypes}, got {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device}, expected {device}")


def _check_views(views: Tensor, device: torch.device) -> None:
    _check(views, "views", 2, (torch.int32, torch.int64), device)
    if views.shape[1] != torch_copy_paste.VIEW_FIELDS:
        raise ValueError(f"views must be [V, {torch_copy_paste.VIEW_FIELDS}] (see pack_views), got {tuple(views.shape)}")


def _check_out_size(out_height: int, out_width: int) -> None:
    if out_height < 1 or out_width < 1:
        raise ValueError(f"the output size must be positive, got {(out_height, out_width)}")


# ------------------------------------------------------------------------------------ resample


def _check_resample_images(images, views, out_height, out_width):
    _check(images, "images", 4, FLOAT_DTYPES + (torch.uint8,), images.device)
    _check_views(views, images.device)
    _check_out_size(out_height, out_width)


@torch.library.custom_op("fastmix::lsj_resample_images", mutates_args=())
def lsj_resample_images(images: Tensor, views: Tensor, out_height: int, out_width: int,
                        backend: str = "auto") -> Tensor:
    """Bilinear large-scale jittering of every view: float32 [V, C, out_height, out_width]."""
    _check_resample_images(images, views, out_height, out_width)
    if _use_cupy(backend, images):
        return _cupy_copy_paste().lsj_resample_images(images, views, out_height, out_width)
    return torch_copy_paste.lsj_resample_images(images, views, out_height, out_width)


@lsj_resample_images.register_fake
def _(images, views, out_height, out_width, backend="auto"):
    _check_resample_images(images, views, out_height, out_width)
    return images.new_empty((views.shape[0], images.shape[1], out_height, out_width), dtype=torch.float32)


def _check_resample_masks(masks, views, active, out_height, out_width):
    _check(masks, "masks", 4, (torch.bool,), masks.device)
    _check_views(views, masks.device)
    _check(active, "active", 2, (torch.bool,), masks.device)
    if tuple(active.shape) != (views.shape[0], masks.shape[1]):
        raise ValueError(f"active must be [V={views.shape[0]}, N={masks.shape[1]}], got {tuple(active.shape)}")
    _check_out_size(out_height, out_width)


@torch.library.custom_op("fastmix::lsj_resample_masks", mutates_args=())
def lsj_resample_masks(masks: Tensor, views: Tensor, active: Tensor, out_height: int, out_width: int,
                       backend: str = "auto") -> Tensor:
    """Nearest large-scale jittering of instance masks: bool [V, N, out_height, out_width]."""
    _check_resample_masks(masks, views, active, out_height, out_width)
    if _use_cupy(backend, masks):
        return _cupy_copy_paste().lsj_resample_masks(masks, views, active, out_height, out_width)
    return torch_copy_paste.lsj_resample_masks(masks, views, active, out_height, out_width)


@lsj_resample_masks.register_fake
def _(masks, views, active, out_height, out_width, backend="auto"):
    _check_resample_masks(masks, views, active, out_height, out_width)
    return masks.new_empty((views.shape[0], masks.shape[1], out_height, out_width), dtype=torch.bool)


# ------------------------------------------------------------------------- occlusion and blend


def _check_occlusion(receiving_masks, pasted_masks):
    _check(receiving_masks, "receiving_masks", 4, (torch.bool,), receiving_masks.device)
    _check(pasted_masks, "pasted_masks", 4, (torch.bool,), receiving_masks.device)
    b, _, h, w = receiving_masks.shape
    if pasted_masks.shape[0] != b or tuple(pasted_masks.shape[2:]) != (h, w):
        raise ValueError(f"pasted_masks must be [B={b}, M, {h}, {w}], got {tuple(pasted_masks.shape)}")


@torch.library.custom_op("fastmix::occlusion_update", mutates_args=())
def occlusion_update(receiving_masks: Tensor, pasted_masks: Tensor, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """(alpha bool [B, H, W], receiving masks without the pasted pixels bool [B, N, H, W])."""
    _check_occlusion(receiving_masks, pasted_masks)
    if _use_cupy(backend, receiving_masks):
        return _cupy_copy_paste().occlusion_update(receiving_masks, pasted_masks)
    return torch_copy_paste.occlusion_update(receiving_masks, pasted_masks)


@occlusion_update.register_fake
def _(receiving_masks, pasted_masks, backend="auto"):
    _check_occlusion(receiving_masks, pasted_masks)
    b, _, h, w = receiving_masks.shape
    return receiving_masks.new_empty((b, h, w)), torch.empty_like(receiving_masks)


def _check_blend(receiving, pasted, alpha):
    _check(receiving, "receiving", 4, FLOAT_DTYPES, receiving.device)
    _check(pasted, "pasted", 4, FLOAT_DTYPES, receiving.device)
    _check(alpha, "alpha", 3, FLOAT_DTYPES, receiving.device)
    b, _, h, w = receiving.shape
    if pasted.shape != receiving.shape or tuple(alpha.shape) != (b, h, w):
        raise ValueError(f"pasted must match receiving {tuple(receiving.shape)} and alpha must be [{b}, {h}, {w}], "
                         f"got {tuple(pasted.shape)} and {tuple(alpha.shape)}")


@torch.library.custom_op("fastmix::copy_paste_blend", mutates_args=())
def copy_paste_blend(receiving: Tensor, pasted: Tensor, alpha: Tensor, backend: str = "auto") -> Tensor:
    """float32 ``receiving * (1 - alpha) + pasted * alpha``; alpha [B, H, W] broadcast over C."""
    _check_blend(receiving, pasted, alpha)
    if _use_cupy(backend, receiving):
        return _cupy_copy_paste().copy_paste_blend(receiving, pasted, alpha)
    return torch_copy_paste.copy_paste_blend(receiving, pasted, alpha)


@copy_paste_blend.register_fake
def _(receiving, pasted, alpha, backend="auto"):
    _check_blend(receiving, pasted, alpha)
    return torch.empty_like(receiving, dtype=torch.float32, memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------ boxes and areas


def _check_masks_any_rank(masks):
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be bool, got {masks.dtype}")
    if masks.dim() < 2:
        raise ValueError(f"masks must be [..., H, W], got shape {tuple(masks.shape)}")


@torch.library.custom_op("fastmix::instance_boxes_areas", mutates_args=())
def instance_boxes_areas(masks: Tensor, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Boxes float32 [..., 4] (x1, y1, x2, y2 exclusive) and areas int64 [...] of masks [..., H, W]."""
    _check_masks_any_rank(masks)
    if _use_cupy(backend, masks):
        return _cupy_copy_paste().instance_boxes_areas(masks)
    return torch_copy_paste.instance_boxes_areas(masks)


@instance_boxes_areas.register_fake
def _(masks, backend="auto"):
    _check_masks_any_rank(masks)
    lead = masks.shape[:-2]
    return masks.new_empty((*lead, 4), dtype=torch.float32), masks.new_empty(lead, dtype=torch.int64)


# --------------------------------------------------------------------------- fine-grained saliency


def _check_saliency(images):
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {images.dtype}")
    if not (images.dim() == 3 or (images.dim() == 4 and images.shape[1] in (1, 3))):
        raise ValueError(f"images must be [B, 3, H, W] (RGB), [B, 1, H, W] or [B, H, W] (grey), "
                         f"got shape {tuple(images.shape)}")


@torch.library.custom_op("fastmix::fine_grained_saliency", mutates_args=())
def fine_grained_saliency(images: Tensor, backend: str = "auto") -> Tensor:
    """OpenCV ``StaticSaliencyFineGrained`` of uint8 [B, 3, H, W] RGB / [B, 1, H, W] / [B, H, W]
    images: float32 [B, H, W] in [0, 1], bit-identical to OpenCV on every device."""
    _check_saliency(images)
    if _use_cupy(backend, images):
        from ..backends.cupy import fine_grained_saliency as cupy_saliency

        return cupy_saliency.fine_grained_saliency(images)
    if backend == "auto" and images.device.type == "cpu":
        from ..backends import numba as numba_backend

        if numba_backend.available():
            from ..backends.numba import saliency as numba_saliency

            return numba_saliency.fine_grained_saliency(images)
    return torch_saliency.fine_grained_saliency(images)


@fine_grained_saliency.register_fake
def _(images, backend="auto"):
    _check_saliency(images)
    return images.new_empty((images.shape[0], images.shape[-2], images.shape[-1]), dtype=torch.float32)
