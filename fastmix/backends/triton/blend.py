"""Mixup blend, box paste (CutMix, SaliencyMix) and box fill (CutOut): one pass each.

Each program handles one sample and one tile of pixels, looping over the channels, and
addresses images through their strides (NCHW, channels_last or any other layout; the output
keeps the input's memory format). The grid is (batch, tile) with the batch varying fastest, so
the programs that read a partner's tile run next to the program that reads the same tile as its
own sample: the second read of each image comes from L2, not from memory, and memory traffic is
one read and one write of the batch. Tiles are contiguous ranges of each NCHW channel plane, so
loads and stores are vectorised; box kernels therefore load whole tiles and select per pixel.
Arithmetic is float32 (float64 for float64 images); uint8 results are rounded half-to-even and
saturated, as the PyTorch path does.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _launch
from ._common import pixel_tile, plane_offset, to_output


@triton.jit
def _mixup_kernel(x_ptr, out_ptr, perm_ptr, lam_ptr, channels, height, width,
                  sxb, sxc, sxh, sxw, sob, soc, soh, sow,
                  X_DENSE: tl.constexpr, OUT_DENSE: tl.constexpr,
                  ACC: tl.constexpr, OUT_IS_UINT8: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    pixel, row, col, valid = pixel_tile(tl.program_id(1), height, width, BLOCK)
    partner = tl.load(perm_ptr + b)
    lam = tl.load(lam_ptr + b).to(ACC)
    x_offset = plane_offset(row, col, pixel, sxh, sxw, X_DENSE)
    own_ptr = x_ptr + b * sxb + x_offset
    partner_ptr = x_ptr + partner * sxb + x_offset
    dst_ptr = out_ptr + b * sob + plane_offset(row, col, pixel, soh, sow, OUT_DENSE)
    for c in range(channels):
        own = tl.load(own_ptr + c * sxc, mask=valid).to(ACC)
        other = tl.load(partner_ptr + c * sxc, mask=valid).to(ACC)
        mixed = lam * own + (1.0 - lam) * other
        tl.store(dst_ptr + c * soc, to_output(mixed, out_ptr, OUT_IS_UINT8), mask=valid)


@triton.jit
def _box_kernel(x_ptr, out_ptr, perm_ptr, boxes_ptr, fill_ptr, channels, height, width,
                sxb, sxc, sxh, sxw, sob, soc, soh, sow, X_DENSE: tl.constexpr, OUT_DENSE: tl.constexpr,
                PASTE: tl.constexpr, CONVERT: tl.constexpr, BLOCK: tl.constexpr):
    """PASTE: the partner's pixels inside the box; otherwise the value at fill_ptr inside the box.
    CONVERT (uint8 in, float out): values pass through float32, which holds every uint8 exactly."""
    b = tl.program_id(0).to(tl.int64)
    pixel, row, col, valid = pixel_tile(tl.program_id(1), height, width, BLOCK)
    y1 = tl.load(boxes_ptr + 4 * b)
    y2 = tl.load(boxes_ptr + 4 * b + 1)
    x1 = tl.load(boxes_ptr + 4 * b + 2)
    x2 = tl.load(boxes_ptr + 4 * b + 3)
    inside = (row >= y1) & (row < y2) & (col >= x1) & (col < x2)
    x_offset = plane_offset(row, col, pixel, sxh, sxw, X_DENSE)
    own_ptr = x_ptr + b * sxb + x_offset
    dst_ptr = out_ptr + b * sob + plane_offset(row, col, pixel, soh, sow, OUT_DENSE)
    out_ty = out_ptr.dtype.element_ty
    if PASTE:
        partner_ptr = x_ptr + tl.load(perm_ptr + b) * sxb + x_offset
    else:
        fill = tl.load(fill_ptr)
    for c in range(channels):
        # Whole-tile loads (masked by the frame only) stay vectorisable. The partner's tile is an
        # L2 hit (its own program reads it at about the same time); CutOut reads the few pixels
        # under its box needlessly.
        own = tl.load(own_ptr + c * sxc, mask=valid)
        if CONVERT:
            own = own.to(tl.float32).to(out_ty)
        if PASTE:
            pasted = tl.load(partner_ptr + c * sxc, mask=valid)
            if CONVERT:
                pasted = pasted.to(tl.float32).to(out_ty)
            tl.store(dst_ptr + c * soc, tl.where(inside, pasted, own), mask=valid)
        else:
            tl.store(dst_ptr + c * soc, tl.where(inside, fill, own), mask=valid)


def _grid_and_block(images: torch.Tensor):
    batch, _, height, width = images.shape
    block = _launch.pixel_block(height * width)
    return (batch, triton.cdiv(height * width, block)), block


def mixup_blend(images: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor,
                out_dtype: torch.dtype) -> torch.Tensor:
    """lam[i] * x[i] + (1 - lam[i]) * x[perm[i]], written as `out_dtype`."""
    _launch.check_launchable(_mixup_kernel, images, perm, lam)
    out = _launch.empty_like(images, dtype=out_dtype)
    grid, block = _grid_and_block(images)
    compute = torch.float64 if torch.float64 in (images.dtype, out_dtype) else torch.float32
    _mixup_kernel[grid](images, out, perm, lam, *images.shape[1:], *images.stride(), *out.stride(),
                        X_DENSE=_launch.dense_rows(images), OUT_DENSE=_launch.dense_rows(out),
                        ACC=_launch.accumulator(compute), OUT_IS_UINT8=out_dtype == torch.uint8,
                        BLOCK=block, num_warps=_launch.warps_for(block))
    return out


def box_paste(images: torch.Tensor, perm: torch.Tensor, boxes: torch.Tensor,
              out_dtype: torch.dtype) -> torch.Tensor:
    """Inside sample i's box (y1, y2, x1, x2) the pixels of sample perm[i], elsewhere sample i."""
    return _box(images, perm, boxes, boxes.new_zeros(1), out_dtype, paste=True)


def box_fill(images: torch.Tensor, boxes: torch.Tensor, value: float,
             out_dtype: torch.dtype) -> torch.Tensor:
    """Inside sample i's box `value` (converted to `out_dtype` as torch converts it), elsewhere sample i."""
    fill = torch.tensor([value], dtype=out_dtype).to(images.device)
    return _box(images, boxes.new_zeros(1), boxes, fill, out_dtype, paste=False)


def _box(images, perm, boxes, fill, out_dtype, *, paste):
    _launch.check_launchable(_box_kernel, images, perm, boxes)
    boxes = boxes.contiguous()
    out = _launch.empty_like(images, dtype=out_dtype)
    grid, block = _grid_and_block(images)
    _box_kernel[grid](images, out, perm, boxes, fill, *images.shape[1:], *images.stride(), *out.stride(),
                      X_DENSE=_launch.dense_rows(images), OUT_DENSE=_launch.dense_rows(out), PASTE=paste,
                      CONVERT=images.dtype != out_dtype, BLOCK=block, num_warps=_launch.warps_for(block))
    return out
