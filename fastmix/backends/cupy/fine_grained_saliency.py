"""Launcher of the fine-grained saliency kernels (``kernels/fine_grained_saliency.cu``).

Same contract as ``fastmix.backends.pytorch.fine_grained_saliency.fine_grained_saliency``
(bit-identical output), for CUDA tensors, without a host copy: SaliencyMix can pick its box on
the GPU.
"""
from __future__ import annotations

import numpy as np
import torch

# The grey conversion's fixed-point coefficients are passed to the kernel from the oracle, the
# single source of truth (they are private there; fastmix/backends/pytorch owns them).
from ..pytorch.fine_grained_saliency import _B2Y, _G2Y, _GRAY_SHIFT, _R2Y, MAX_WIDTH
from ._runtime import as_cupy, blocks, get_kernel, on_torch_stream, require_cuda

MODULE = "fine_grained_saliency"
TILE_X, TILE_Y = 32, 8
THREADS = 256
MAX_GRID_YZ = 65535


def _checked_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] with C in (1, 3), contiguous; errors as the PyTorch oracle's."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {images.dtype}")
    if images.dim() == 3:
        images = images[:, None]
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, 3, H, W] (RGB), [B, 1, H, W] or [B, H, W] (grey), "
                         f"got shape {tuple(images.shape)}")
    batch, _, rows, cols = images.shape
    if batch == 0 or rows == 0 or cols == 0:
        raise ValueError(f"images must be non-empty, got shape {tuple(images.shape)}")
    if cols > MAX_WIDTH:
        raise ValueError(f"width {cols} exceeds {MAX_WIDTH}: OpenCV's float32 row sums are inexact there")
    if batch > MAX_GRID_YZ or blocks(rows, TILE_Y) > MAX_GRID_YZ:
        raise ValueError(f"batch {batch} or height {rows} exceeds the CUDA grid limits of the saliency kernels")
    return images.contiguous()


def fine_grained_saliency(images: torch.Tensor) -> torch.Tensor:
    """float32 [B, H, W] saliency of uint8 CUDA images (see the module docstring)."""
    device = require_cuda(images)
    images = _checked_images(images)
    batch, channels, rows, cols = images.shape
    plane = rows * cols
    grey = torch.empty((batch, rows, cols), dtype=torch.int32, device=device)
    blurred = torch.empty_like(grey)
    rowsum = torch.empty_like(grey)
    integral = torch.empty((batch, rows + 1, cols + 1), dtype=torch.float32, device=device)
    on = torch.empty_like(grey)
    off = torch.empty_like(grey)
    maxima = torch.zeros((batch, 2), dtype=torch.int32, device=device)
    mixed_max = torch.zeros((batch,), dtype=torch.int32, device=device)
    out = torch.empty((batch, rows, cols), dtype=torch.float32, device=device)
    i32 = np.int32
    tiles = (blocks(cols, TILE_X), blocks(rows, TILE_Y), batch)
    tile = (TILE_X, TILE_Y, 1)
    flat = (blocks(plane, THREADS), batch, 1)
    with on_torch_stream(device):
        k = lambda name: get_kernel(MODULE, name, device)  # noqa: E731
        k("fgs_grey")(flat, (THREADS, 1, 1), (as_cupy(images), as_cupy(grey), i32(channels), i32(plane),
                                              i32(_B2Y), i32(_G2Y), i32(_R2Y), i32(_GRAY_SHIFT)))
        k("fgs_blur3x3")(tiles, tile, (as_cupy(grey), as_cupy(blurred), i32(rows), i32(cols)))
        k("fgs_blur3x3")(tiles, tile, (as_cupy(blurred), as_cupy(grey), i32(rows), i32(cols)))
        k("fgs_row_prefix")((blocks(batch * rows, THREADS), 1, 1), (THREADS, 1, 1),
                            (as_cupy(grey), as_cupy(rowsum), i32(batch * rows), i32(cols)))
        k("fgs_column_integral")((blocks(cols + 1, THREADS), batch, 1), (THREADS, 1, 1),
                                 (as_cupy(rowsum), as_cupy(integral), i32(rows), i32(cols)))
        k("fgs_on_off")(tiles, tile, (as_cupy(integral), as_cupy(grey), as_cupy(on), as_cupy(off),
                                      as_cupy(maxima), i32(rows), i32(cols)))
        k("fgs_rescale")(flat, (THREADS, 1, 1), (as_cupy(on), as_cupy(off), as_cupy(maxima),
                                                 as_cupy(mixed_max), i32(plane)))
        k("fgs_mix")(flat, (THREADS, 1, 1), (as_cupy(on), as_cupy(off), as_cupy(mixed_max), as_cupy(out),
                                             i32(plane)))
    return out
