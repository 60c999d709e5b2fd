"""SAGE mask + blend in one pass over the images.

One program per (sample, pixel tile), batch fastest: it gathers the partner's saliency at the
chosen shift, forms the soft mask M = G1 / max(G1 + shift(G2), 1e-16) once, writes it, adds the
tile's share of mean(M) to a [B, tiles] partial (summed afterwards into lam: deterministic, no
atomics), and then loops over the channels writing M * x + (1 - M) * shift(x[perm]) with zero
fill outside the shifted partner. Images are addressed through their strides (NCHW or
channels_last); the output keeps the input's memory format.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _launch
from ._common import pixel_tile, plane_offset, to_output

MASK_EPS = 1e-16


@triton.jit
def _mask_blend_kernel(x_ptr, out_ptr, g1_ptr, g2_ptr, perm_ptr, shifts_ptr, mask_ptr, partial_ptr,
                       channels, height, width, sxb, sxc, sxh, sxw, sob, soc, soh, sow, n_tiles,
                       X_DENSE: tl.constexpr, OUT_DENSE: tl.constexpr, EPS: tl.constexpr,
                       MASK_ACC: tl.constexpr, IMAGE_ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    pixel, row, col, valid = pixel_tile(tile, height, width, BLOCK)
    dy = tl.load(shifts_ptr + 2 * b).to(tl.int32)
    dx = tl.load(shifts_ptr + 2 * b + 1).to(tl.int32)
    src_row = row - dy
    src_col = col - dx
    overlap = valid & (src_row >= 0) & (src_row < height) & (src_col >= 0) & (src_col < width)

    pixels = height * width
    src_pixel = pixel - dy * width - dx  # meaningful where `overlap`
    g = tl.load(g1_ptr + b * pixels + pixel, mask=valid, other=0).to(MASK_ACC)
    t = tl.load(g2_ptr + b * pixels + src_pixel, mask=overlap, other=0).to(MASK_ACC)
    weight = g / tl.maximum(g + t, EPS)
    tl.store(mask_ptr + b * pixels + pixel, weight, mask=valid)
    tl.store(partial_ptr + b * n_tiles + tile, tl.sum(tl.where(valid, weight, 0.0), axis=0) / pixels)

    weight = weight.to(IMAGE_ACC)
    own_ptr = x_ptr + b * sxb + plane_offset(row, col, pixel, sxh, sxw, X_DENSE)
    partner_ptr = (x_ptr + tl.load(perm_ptr + b) * sxb
                   + plane_offset(src_row, src_col, src_pixel, sxh, sxw, X_DENSE))
    dst_ptr = out_ptr + b * sob + plane_offset(row, col, pixel, soh, sow, OUT_DENSE)
    for c in range(channels):
        own = tl.load(own_ptr + c * sxc, mask=valid).to(IMAGE_ACC)
        partner = tl.load(partner_ptr + c * sxc, mask=overlap, other=0).to(IMAGE_ACC)
        mixed = weight * own + (1.0 - weight) * partner
        tl.store(dst_ptr + c * soc, to_output(mixed, out_ptr, False), mask=valid)


def sage_mask_blend(images: torch.Tensor, perm: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor,
                    shifts: torch.Tensor):
    """(mixed [B, C, H, W] like images, mask M [B, H, W], lam [B]) for chosen shifts [B, 2]."""
    _launch.check_launchable(_mask_blend_kernel, images, perm, g1, g2, shifts)
    batch, channels, height, width = images.shape
    g1, g2, shifts = g1.contiguous(), g2.contiguous(), shifts.contiguous()
    pixels = height * width
    block = _launch.pixel_block(pixels)
    n_tiles = triton.cdiv(pixels, block)
    mixed = _launch.empty_like(images)
    mask = _launch.empty((batch, height, width), g1.dtype, g1.device)
    partials = _launch.empty((batch, n_tiles), g1.dtype, g1.device)
    _mask_blend_kernel[(batch, n_tiles)](
        images, mixed, g1, g2, perm, shifts, mask, partials, channels, height, width,
        *images.stride(), *mixed.stride(), n_tiles,
        X_DENSE=_launch.dense_rows(images), OUT_DENSE=_launch.dense_rows(mixed), EPS=MASK_EPS,
        MASK_ACC=_launch.accumulator(g1.dtype), IMAGE_ACC=_launch.accumulator(images.dtype),
        BLOCK=block, num_warps=_launch.warps_for(block))
    lam = partials[:, 0] if n_tiles == 1 else partials.sum(dim=1)
    return mixed, mask, lam
