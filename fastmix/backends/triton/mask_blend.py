"""SAGE mask + blend in one pass over the images.

Programs run on the element chunks of the blend kernels (`blend.py`, `_common.element_tile`):
a 1-D grid of (sample, chunk), sample fastest; a chunk is a contiguous piece of a channels_last
sample or a pixel tile of one NCHW channel plane (channel fastest, so the C programs of one
tile share the saliency maps in L2). Each element gathers the partner's saliency at the chosen
shift and forms the soft mask M = G1 / max(G1 + shift(G2), 1e-16) (NaN propagates), then writes
M * x + (1 - M) * shift(x[perm]) with zero fill outside the shifted partner. The elements of
channel 0 write M and add their share of mean(M) to a [B, chunks] partial (summed afterwards
into lam: deterministic, no atomics). Dense inputs keep their memory format; others are read
through their strides into a dense NCHW output.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _launch
from ._common import element_tile, max_nan, sample_and_chunk, strided_offset, to_output

MASK_EPS = 1e-16


@triton.jit(do_not_specialize=["batch", "channels", "height", "width", "chunks", "sxc", "sxh", "sxw"])
def _mask_blend_kernel(x_ptr, out_ptr, g1_ptr, g2_ptr, perm_ptr, shifts_ptr, mask_ptr, partial_ptr,
                       batch, channels, height, width, plane, sample_numel, chunks, sxb, sxc, sxh, sxw, sob,
                       X_SAME: tl.constexpr, CHANNELS_LAST: tl.constexpr, EPS: tl.constexpr,
                       MASK_ACC: tl.constexpr, IMAGE_ACC: tl.constexpr, BLOCK: tl.constexpr):
    b, chunk = sample_and_chunk(batch)
    offset, channel, pixel, row, col, valid = element_tile(chunk, channels, width, plane, sample_numel,
                                                           CHANNELS_LAST, BLOCK)
    dy = tl.load(shifts_ptr + 2 * b).to(tl.int32)
    dx = tl.load(shifts_ptr + 2 * b + 1).to(tl.int32)
    src_row = row - dy
    src_col = col - dx
    overlap = valid & (src_row >= 0) & (src_row < height) & (src_col >= 0) & (src_col < width)
    step = dy * width + dx  # pixels between an output pixel and its source (where `overlap`)
    g = tl.load(g1_ptr + b * plane + pixel, mask=valid, other=0).to(MASK_ACC)
    t = tl.load(g2_ptr + b * plane + pixel - step, mask=overlap, other=0).to(MASK_ACC)
    weight = g / max_nan(g + t, EPS)
    first = valid & (channel == 0)
    tl.store(mask_ptr + b * plane + pixel, weight, mask=first)
    tl.store(partial_ptr + b * chunks + chunk, tl.sum(tl.where(first, weight, 0.0), axis=0) / plane)

    partner = tl.minimum(tl.maximum(tl.load(perm_ptr + b), 0), batch - 1)  # never outside the batch
    if X_SAME:
        x_offset = offset
        src_offset = offset - step * (channels if CHANNELS_LAST else 1)
    else:
        x_offset = strided_offset(channel, row, col, sxc, sxh, sxw)
        src_offset = strided_offset(channel, src_row, src_col, sxc, sxh, sxw)
    weight = weight.to(IMAGE_ACC)
    own = tl.load(x_ptr + b * sxb + x_offset, mask=valid).to(IMAGE_ACC)
    shifted = tl.load(x_ptr + partner * sxb + src_offset, mask=overlap, other=0).to(IMAGE_ACC)
    mixed = weight * own + (1.0 - weight) * shifted
    tl.store(out_ptr + b * sob + offset, to_output(mixed, out_ptr, False), mask=valid)


def sage_mask_blend(images: torch.Tensor, perm: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor,
                    shifts: torch.Tensor):
    """(mixed [B, C, H, W] like images, mask M [B, H, W], lam [B]) for chosen shifts [B, 2]."""
    _launch.check_launchable(_mask_blend_kernel, images, perm, g1, g2, shifts)
    batch, channels, height, width = images.shape
    g1, g2, shifts = g1.contiguous(), g2.contiguous(), shifts.contiguous()
    _launch.check_sample_offsets(images)
    mixed = _launch.output_like(images)
    chunks, block = _launch.element_chunks(mixed)
    mask = _launch.empty((batch, height, width), g1.dtype, g1.device)
    partials = _launch.empty((batch, chunks), g1.dtype, g1.device)
    if mixed.numel():
        plane = height * width
        _mask_blend_kernel[_launch.sample_grid(batch, chunks)](
            images, mixed, g1, g2, perm, shifts, mask, partials, batch, channels, height, width, plane,
            channels * plane, chunks, images.stride(0), *images.stride()[1:], mixed.stride(0),
            X_SAME=_launch.same_sample_layout(images, mixed), CHANNELS_LAST=_launch.is_channels_last(mixed),
            EPS=MASK_EPS, MASK_ACC=_launch.accumulator(g1.dtype), IMAGE_ACC=_launch.accumulator(images.dtype),
            BLOCK=block, num_warps=_launch.warps_for(block))
    lam = partials[:, 0] if chunks == 1 else partials.sum(dim=1)
    return mixed, mask, lam
