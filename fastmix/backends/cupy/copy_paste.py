"""Launchers of the Copy-Paste kernels (``kernels/copy_paste.cu``).

Each function has the signature and the result of its oracle in
``fastmix.backends.pytorch.copy_paste``; the torch ops in ``fastmix.ops.copy_paste`` call them
for CUDA tensors. Nothing here copies to the host.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._runtime import as_cupy, blocks, get_kernel, on_torch_stream, require_cuda

MODULE = "copy_paste"
TILE_X, TILE_Y = 32, 8         # 2-D pixel tiles of the resampling kernels
THREADS = 256                  # 1-D kernels; a multiple of 32 (instance_box_stats reduces per warp)
PIXELS_PER_STATS_BLOCK = 16384
MAX_GRID_YZ = 65535
INT32_MAX = 2**31 - 1
BOX_STATS = 5


def _i32(value: int) -> np.int32:
    return np.int32(value)


def _check_grid(name: str, value: int) -> None:
    if value > MAX_GRID_YZ:
        raise ValueError(f"{name} = {value} exceeds the CUDA grid limit {MAX_GRID_YZ} of the CuPy kernels")


def lsj_resample_images(images: torch.Tensor, views: torch.Tensor, out_height: int, out_width: int) -> torch.Tensor:
    device = require_cuda(images, views)
    source = images.to(torch.float32).contiguous()
    geometry = views.to(torch.int32).contiguous()
    count, channels = geometry.shape[0], source.shape[1]
    out = torch.empty((count, channels, out_height, out_width), dtype=torch.float32, device=device)
    if out.numel() == 0:
        return out
    _check_grid("number of views", count)
    _check_grid("row tiles", blocks(out_height, TILE_Y))
    with on_torch_stream(device):
        kernel = get_kernel(MODULE, "lsj_resample_images", device)
        kernel((blocks(out_width, TILE_X), blocks(out_height, TILE_Y), count), (TILE_X, TILE_Y, 1),
               (as_cupy(source), as_cupy(geometry), as_cupy(out), _i32(channels), _i32(source.shape[2]),
                _i32(source.shape[3]), _i32(out_height), _i32(out_width)))
    return out


def lsj_resample_masks(masks: torch.Tensor, views: torch.Tensor, active: torch.Tensor,
                       out_height: int, out_width: int) -> torch.Tensor:
    device = require_cuda(masks, views, active)
    source = masks.bool().contiguous()
    geometry = views.to(torch.int32).contiguous()
    enabled = active.bool().contiguous()
    count, instances = geometry.shape[0], source.shape[1]
    out = torch.empty((count, instances, out_height, out_width), dtype=torch.bool, device=device)
    if out.numel() == 0:
        return out
    _check_grid("number of views", count)
    _check_grid("row tiles", blocks(out_height, TILE_Y))
    with on_torch_stream(device):
        kernel = get_kernel(MODULE, "lsj_resample_masks", device)
        kernel((blocks(out_width, TILE_X), blocks(out_height, TILE_Y), count), (TILE_X, TILE_Y, 1),
               (as_cupy(source), as_cupy(geometry), as_cupy(enabled), as_cupy(out), _i32(instances),
                _i32(source.shape[2]), _i32(source.shape[3]), _i32(out_height), _i32(out_width)))
    return out


def occlusion_update(receiving_masks: torch.Tensor, pasted_masks: torch.Tensor):
    device = require_cuda(receiving_masks, pasted_masks)
    receiving = receiving_masks.bool().contiguous()
    pasted = pasted_masks.bool().contiguous()
    batch, height, width = receiving.shape[0], receiving.shape[2], receiving.shape[3]
    alpha = torch.empty((batch, height, width), dtype=torch.bool, device=device)
    updated = torch.empty_like(receiving)
    plane = height * width
    if alpha.numel() == 0:
        return alpha, updated
    # Without objects on one side there is nothing to launch for; this also keeps empty tensors
    # (null data pointers) away from DLPack.
    if pasted.shape[1] == 0:
        alpha.zero_()
        updated.copy_(receiving)
        return alpha, updated
    if receiving.shape[1] == 0:
        torch.any(pasted, dim=1, out=alpha)
        return alpha, updated
    _check_grid("batch size", batch)
    with on_torch_stream(device):
        kernel = get_kernel(MODULE, "occlusion_update", device)
        kernel((blocks(plane, THREADS), batch, 1), (THREADS, 1, 1),
               (as_cupy(receiving), as_cupy(pasted), as_cupy(alpha), as_cupy(updated),
                _i32(receiving.shape[1]), _i32(pasted.shape[1]), _i32(plane)))
    return alpha, updated


def copy_paste_blend(receiving: torch.Tensor, pasted: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    device = require_cuda(receiving, pasted, alpha)
    below = receiving.to(torch.float32).contiguous()
    above = pasted.to(torch.float32).contiguous()
    weight = alpha.to(torch.float32).contiguous()
    out = torch.empty_like(below)
    if out.numel() == 0:
        return out
    batch, channels = below.shape[0], below.shape[1]
    plane = below.shape[2] * below.shape[3]
    _check_grid("batch size", batch)
    with on_torch_stream(device):
        kernel = get_kernel(MODULE, "copy_paste_blend", device)
        kernel((blocks(plane, THREADS), batch, 1), (THREADS, 1, 1),
               (as_cupy(below), as_cupy(above), as_cupy(weight), as_cupy(out), _i32(channels), _i32(plane)))
    return out


def instance_boxes_areas(masks: torch.Tensor):
    device = require_cuda(masks)
    lead, (rows, cols) = tuple(masks.shape[:-2]), tuple(masks.shape[-2:])
    instances = math.prod(lead)
    boxes = torch.zeros((instances, 4), dtype=torch.float32, device=device)
    areas = torch.zeros((instances,), dtype=torch.int64, device=device)
    if instances == 0 or rows == 0 or cols == 0:
        return boxes.reshape(lead + (4,)), areas.reshape(lead)
    if instances > INT32_MAX:
        raise ValueError(f"{instances} masks exceed the kernel's int32 instance index")
    flat = masks.bool().reshape(instances, rows, cols).contiguous()
    # (min_row, max_row, min_col, max_col, area) start at (INT_MAX, -1, INT_MAX, -1, 0).
    stats = torch.full((instances, BOX_STATS), -1, dtype=torch.int32, device=device)
    stats[:, 0::2] = INT32_MAX
    stats[:, 4] = 0
    rows_per_block = max(1, PIXELS_PER_STATS_BLOCK // cols, -(-rows // MAX_GRID_YZ))
    with on_torch_stream(device):
        get_kernel(MODULE, "instance_box_stats", device)(
            (instances, blocks(rows, rows_per_block), 1), (THREADS, 1, 1),
            (as_cupy(flat), as_cupy(stats), _i32(rows), _i32(cols), _i32(rows_per_block)))
        get_kernel(MODULE, "finalize_boxes", device)(
            (blocks(instances, THREADS), 1, 1), (THREADS, 1, 1),
            (as_cupy(stats), as_cupy(boxes), as_cupy(areas), _i32(instances)))
    return boxes.reshape(lead + (4,)), areas.reshape(lead)
