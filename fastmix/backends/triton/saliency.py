"""SAGE saliency prep: grad [B, C, H, W] -> mass-normalised maps G1, G2 [B, H, W] in two passes.

Pass 1 (`_smooth_kernel`, one program per sample and pixel tile): for each output pixel, the
kernel_size x kernel_size Gaussian (outer product of the 1-D weights, reflect padding) of
s = mean over channels of |grad|, with s evaluated at each tap straight from the gradient, so
the channel mean is never written. It writes the smoothed map and, per tile, the partial sums of
s and of the smoothed map. The taps re-read neighbouring gradient pixels, which come from
L1/L2: memory traffic is one read of the gradient and one write of the smoothed map.
Pass 2 (`_normalize_kernel`): G1 = smoothed / total * max(a, 1e-12) and, gathering the partner
through perm, G2 = smoothed[perm] / total[perm] * max(1 - a, 1e-12). A map whose raw total is 0
carries no information and is treated as uniform (1 / (H W) per pixel), as the PyTorch path does.
Between the passes one small reduction sums the [2, B, tiles] partials.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _launch
from ._common import pixel_tile

MASS_EPS = 1e-12


@triton.jit
def _reflect(index, size):
    """Reflect padding without repeating the edge: -1 -> 1, size -> size - 2."""
    index = tl.where(index < 0, -index, index)
    return tl.where(index >= size, 2 * (size - 1) - index, index)


@triton.jit
def _channel_mean_abs(grad_ptr, offset, channels, sgc, mask, ACC: tl.constexpr, BLOCK: tl.constexpr):
    total = tl.zeros([BLOCK], dtype=ACC)
    for c in range(channels):
        total += tl.abs(tl.load(grad_ptr + offset + c * sgc, mask=mask, other=0).to(ACC))
    return total / channels


@triton.jit
def _smooth_kernel(grad_ptr, weights_ptr, smooth_ptr, partial_ptr, channels, height, width,
                   sgb, sgc, sgh, sgw, kernel_size, n_tiles,
                   ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    batch = tl.num_programs(0)
    pixel, row, col, valid = pixel_tile(tile, height, width, BLOCK)
    sample_ptr = grad_ptr + b * sgb
    pad = kernel_size // 2
    smoothed = tl.zeros([BLOCK], dtype=ACC)
    for i in range(kernel_size):
        tap_row = _reflect(row + i - pad, height)
        row_sum = tl.zeros([BLOCK], dtype=ACC)
        for j in range(kernel_size):
            tap_col = _reflect(col + j - pad, width)
            tap = _channel_mean_abs(sample_ptr, tap_row * sgh + tap_col * sgw, channels, sgc, valid, ACC, BLOCK)
            row_sum += tl.load(weights_ptr + j) * tap
        smoothed += tl.load(weights_ptr + i) * row_sum
    raw = _channel_mean_abs(sample_ptr, row * sgh + col * sgw, channels, sgc, valid, ACC, BLOCK)
    tl.store(smooth_ptr + b * height * width + pixel, smoothed, mask=valid)
    tl.store(partial_ptr + b * n_tiles + tile, tl.sum(raw, axis=0))
    tl.store(partial_ptr + (batch + b) * n_tiles + tile, tl.sum(tl.where(valid, smoothed, 0.0), axis=0))


@triton.jit
def _unit_map(smooth_ptr, totals_ptr, sample, pixel, valid, batch, pixels):
    """smoothed / total for one sample, or the uniform map where the raw total is 0."""
    raw_total = tl.load(totals_ptr + sample)
    smooth_total = tl.load(totals_ptr + batch + sample)
    values = tl.load(smooth_ptr + sample * pixels + pixel, mask=valid, other=0)
    uniform = raw_total <= 0  # False for a NaN total: NaN reaches G1 and the operator raises
    return tl.where(uniform, 1.0, values) / tl.where(uniform, pixels, smooth_total)


@triton.jit
def _normalize_kernel(smooth_ptr, totals_ptr, perm_ptr, mass_ptr, g1_ptr, g2_ptr, pixels,
                      MASS_EPS: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    batch = tl.num_programs(0)
    pixel = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = pixel < pixels
    mass = tl.load(mass_ptr + b).to(ACC)
    own = _unit_map(smooth_ptr, totals_ptr, b, pixel, valid, batch, pixels)
    partner = _unit_map(smooth_ptr, totals_ptr, tl.load(perm_ptr + b), pixel, valid, batch, pixels)
    tl.store(g1_ptr + b * pixels + pixel, own * tl.maximum(mass, MASS_EPS), mask=valid)
    tl.store(g2_ptr + b * pixels + pixel, partner * tl.maximum(1.0 - mass, MASS_EPS), mask=valid)


def saliency_masses(grad: torch.Tensor, perm: torch.Tensor, mass: torch.Tensor,
                    weights: torch.Tensor):
    """(G1, G2) [B, H, W] from grad [B, C, H, W] (C = 1 for a saliency map), 1-D smoothing
    `weights` (odd length, reflect padding must fit the image), perm [B] and masses a [B]."""
    _launch.check_launchable(_smooth_kernel, grad, perm, mass, weights)
    batch, channels, height, width = grad.shape
    dtype = torch.float64 if grad.dtype == torch.float64 else torch.float32
    acc = _launch.accumulator(dtype)
    pixels = height * width
    block = _launch.pixel_block(pixels)
    n_tiles = triton.cdiv(pixels, block)
    warps = _launch.warps_for(block)
    smooth = _launch.empty((batch, height, width), dtype, grad.device)
    partials = _launch.empty((2, batch, n_tiles), dtype, grad.device)
    _smooth_kernel[(batch, n_tiles)](grad, weights.to(dtype), smooth, partials, channels, height, width,
                                     *grad.stride(), weights.numel(), n_tiles,
                                     ACC=acc, BLOCK=block, num_warps=warps)
    totals = partials.sum(dim=2)
    g1 = _launch.empty((batch, height, width), dtype, grad.device)
    g2 = _launch.empty((batch, height, width), dtype, grad.device)
    _normalize_kernel[(batch, n_tiles)](smooth, totals, perm, mass, g1, g2, pixels,
                                        MASS_EPS=MASS_EPS, ACC=acc, BLOCK=block, num_warps=warps)
    return g1, g2
