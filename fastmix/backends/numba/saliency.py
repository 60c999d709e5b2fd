"""OpenCV's StaticSaliencyFineGrained on CPU uint8 tensors with the numba kernel (bit-identical
to OpenCV and to the PyTorch path, fastmix/backends/pytorch/fine_grained_saliency.py, which
holds the derivation and the argument checks)."""
from __future__ import annotations

import torch

from ..pytorch import fine_grained_saliency as oracle
from . import _kernels
from ._runtime import kernel_call


def fine_grained_saliency(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] RGB / [B, 1, H, W] / [B, H, W] grey -> float32 [B, H, W] in [0, 1]."""
    oracle._check_uint8(images, "images")
    if images.dim() == 3:
        images = images[:, None]
    elif images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError("images must be [B, 3, H, W] (RGB), [B, 1, H, W] or [B, H, W] (grey), "
                         f"got shape {tuple(images.shape)}")
    oracle._check_spatial(images, "images")
    if images.shape[-1] > oracle.MAX_WIDTH:
        raise ValueError(f"width {images.shape[-1]} exceeds {oracle.MAX_WIDTH}: OpenCV's float32 row sums are "
                         "inexact there")
    batch, _, height, width = images.shape
    out = torch.zeros(batch, height, width, dtype=torch.float32)
    if height * width > 1:  # a 1x1 map is 0, as in OpenCV (0 / 0 surround mean)
        with kernel_call():
            _kernels.fine_grained_saliency(images.contiguous().numpy(), out.numpy())
    return out
