"""SAGE saliency prep: grad [B, C, H, W] -> mass-normalised maps G1, G2 [B, H, W] in three passes.

Pass 1 (`_channel_mean_kernel`, one program per sample and pixel tile, 1-D grid): s = mean over
channels of |grad|, computed once per pixel and written as a [B, H, W] map (a C-th of the
gradient's size), with the tile's partial sum of s. Small planes are read several channels at
a time, so a program always has about 1,024 lanes at work.
Pass 2 (`_smooth_kernel`): the kernel_size x kernel_size Gaussian (outer product of the 1-D
weights, reflect padding) of s; the k*k taps of each output pixel re-read neighbouring pixels of
the one small map from L1/L2. It writes the smoothed map and the tile's partial sum.
Pass 3 (`_normalize_kernel`): G1 = smoothed / total * max(a, 1e-12) and, gathering the partner
through perm, G2 = smoothed[perm] / total[perm] * max(1 - a, 1e-12). A map whose raw total is 0
carries no information and is treated as uniform (1 / (H W) per pixel), as the PyTorch path does.
NaN propagates (a NaN gradient or mass gives NaN maps; the operator raises on them).
Memory traffic: one read of the gradient, a write and k*k cached reads of s, one write of the
smoothed map and of G1, G2.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _launch
from ._common import max_nan, pixel_tile

MASS_EPS = 1e-12
# Sizes only index: no specialisation (value 1, multiple of 16), which would multiply compiles.
# `pixels`, the channel stride and the column stride stay specialised: they decide whether the
# gradient's and the maps' loads are vectorised.
_SIZE_ARGS = ["batch", "channels", "height", "width", "kernel_size", "n_tiles", "sgh"]


@triton.jit
def _reflect(index, size):
    """Reflect padding without repeating the edge: -1 -> 1, size -> size - 2."""
    index = tl.where(index < 0, -index, index)
    return tl.where(index >= size, 2 * (size - 1) - index, index)


@triton.jit
def _tile_of(batch):
    pid = tl.program_id(0)
    return (pid % batch).to(tl.int64), pid // batch


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _channel_mean_kernel(grad_ptr, mean_ptr, partial_ptr, batch, channels, width, pixels, n_tiles,
                         sgb, sgc, sgh, sgw, DENSE_ROWS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
                         CHANNEL_BLOCK: tl.constexpr):
    """A [CHANNEL_BLOCK, BLOCK] tile per step: small planes (a 7x7 feature map) still fill the
    program's lanes with several channels at once."""
    b, tile = _tile_of(batch)
    pixel, valid = pixel_tile(tile, pixels, BLOCK)
    if DENSE_ROWS:  # NCHW or channels_last: a pixel's offset is pixel * sgw (contiguous for NCHW)
        offset = pixel * sgw
    else:
        row = pixel // width
        offset = row * sgh + (pixel - row * width) * sgw
    sample_ptr = grad_ptr + b * sgb + offset[None, :]
    lanes = tl.arange(0, CHANNEL_BLOCK)[:, None]
    total = tl.zeros([CHANNEL_BLOCK, BLOCK], dtype=ACC)
    for c0 in range(0, channels, CHANNEL_BLOCK):
        channel = c0 + lanes
        inside = (channel < channels) & valid[None, :]
        total += tl.abs(tl.load(sample_ptr + channel * sgc, mask=inside, other=0).to(ACC))
    mean = tl.sum(total, axis=0) / channels
    tl.store(mean_ptr + b * pixels + pixel, mean, mask=valid)
    tl.store(partial_ptr + b * n_tiles + tile, tl.sum(mean, axis=0))


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _smooth_kernel(mean_ptr, weights_ptr, smooth_ptr, partial_ptr, batch, height, width, pixels, kernel_size,
                   n_tiles, ACC: tl.constexpr, BLOCK: tl.constexpr):
    b, tile = _tile_of(batch)
    pixel, valid = pixel_tile(tile, pixels, BLOCK)
    row = pixel // width
    col = pixel - row * width
    sample_ptr = mean_ptr + b * pixels
    pad = kernel_size // 2
    smoothed = tl.zeros([BLOCK], dtype=ACC)
    for i in range(kernel_size):
        tap_row = _reflect(row + i - pad, height) * width
        row_sum = tl.zeros([BLOCK], dtype=ACC)
        for j in range(kernel_size):
            tap = tl.load(sample_ptr + tap_row + _reflect(col + j - pad, width), mask=valid, other=0)
            row_sum += tl.load(weights_ptr + j) * tap
        smoothed += tl.load(weights_ptr + i) * row_sum
    tl.store(smooth_ptr + b * pixels + pixel, smoothed, mask=valid)
    tl.store(partial_ptr + b * n_tiles + tile, tl.sum(tl.where(valid, smoothed, 0.0), axis=0))


@triton.jit
def _unit_map(smooth_ptr, totals_ptr, sample, pixel, valid, batch, pixels):
    """smoothed / total for one sample, or the uniform map where the raw total is 0."""
    raw_total = tl.load(totals_ptr + sample)
    smooth_total = tl.load(totals_ptr + batch + sample)
    values = tl.load(smooth_ptr + sample * pixels + pixel, mask=valid, other=0)
    uniform = raw_total <= 0  # False for a NaN total: NaN reaches G1 and the operator raises
    return tl.where(uniform, 1.0, values) / tl.where(uniform, pixels, smooth_total)


@triton.jit(do_not_specialize=["batch"])
def _normalize_kernel(smooth_ptr, totals_ptr, perm_ptr, mass_ptr, g1_ptr, g2_ptr, batch, pixels,
                      MASS_EPS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    b, tile = _tile_of(batch)
    pixel, valid = pixel_tile(tile, pixels, BLOCK)
    mass = tl.load(mass_ptr + b).to(ACC)
    partner = tl.minimum(tl.maximum(tl.load(perm_ptr + b), 0), batch - 1)  # never outside the batch
    own = _unit_map(smooth_ptr, totals_ptr, b, pixel, valid, batch, pixels)
    other = _unit_map(smooth_ptr, totals_ptr, partner, pixel, valid, batch, pixels)
    tl.store(g1_ptr + b * pixels + pixel, own * max_nan(mass, MASS_EPS), mask=valid)
    tl.store(g2_ptr + b * pixels + pixel, other * max_nan(1.0 - mass, MASS_EPS), mask=valid)


def saliency_masses(grad: torch.Tensor, perm: torch.Tensor, mass: torch.Tensor,
                    weights: torch.Tensor):
    """(G1, G2) [B, H, W] from grad [B, C, H, W] (C = 1 for a saliency map), 1-D smoothing
    `weights` (odd length, reflect padding must fit the image), perm [B] and masses a [B]."""
    _launch.check_launchable(_smooth_kernel, grad, perm, mass, weights)
    batch, channels, height, width = grad.shape
    dtype = torch.float64 if grad.dtype == torch.float64 else torch.float32
    acc = _launch.accumulator(dtype)
    pixels = height * width
    _launch.check_sample_offsets(grad, "grad")
    block = _launch.pixel_block(pixels)
    n_tiles = triton.cdiv(pixels, block)
    warps = _launch.warps_for(block)
    grid = _launch.sample_grid(batch, n_tiles)
    mean = _launch.empty((batch, height, width), dtype, grad.device)
    smooth = _launch.empty((batch, height, width), dtype, grad.device)
    g1 = _launch.empty((batch, height, width), dtype, grad.device)
    g2 = _launch.empty((batch, height, width), dtype, grad.device)
    if g1.numel() == 0:
        return g1, g2
    partials = _launch.empty((2, batch, n_tiles), dtype, grad.device)
    channel_block = max(1, min(triton.next_power_of_2(channels), _launch.MAX_PIXEL_BLOCK // block))
    _channel_mean_kernel[grid](grad, mean, partials[0], batch, channels, width, pixels, n_tiles, *grad.stride(),
                               DENSE_ROWS=_launch.dense_rows(grad), ACC=acc, BLOCK=block,
                               CHANNEL_BLOCK=channel_block, num_warps=_launch.warps_for(block * channel_block))
    _smooth_kernel[grid](mean, weights.to(dtype), smooth, partials[1], batch, height, width, pixels,
                         weights.numel(), n_tiles, ACC=acc, BLOCK=block, num_warps=warps)
    totals = partials.sum(dim=2)
    _normalize_kernel[grid](smooth, totals, perm, mass, g1, g2, batch, pixels,
                            MASS_EPS=MASS_EPS, ACC=acc, BLOCK=block, num_warps=warps)
    return g1, g2
