"""The compiled steps of fastmix.dali.numba_sage (imported only where numba is used).

Module-level and cached (cache=True), so a new process loads them instead of compiling; serial,
since DALI calls them from its own threads. error_model="numpy": a division never raises (a
numba_function cannot), and none here can divide by zero.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..backends.numba import _kernels
from ..backends.numba._runtime import serial_variant
from .numba_sage import MASK_EPS, STRETCH_EPS, floyd_shifts

_OPTS = dict(cache=True, nogil=True, error_model="numpy")

# The body of fastmix's parallel numba sage_shift_scores, compiled serial (prange is then range),
# so the candidates are scored with its arithmetic; cached under a name of its own.
_shift_scores = serial_variant(_kernels.sage_shift_scores, "sage_shift_scores_serial", fastmath={"reassoc"},
                               error_model="numpy")
floyd = njit(**_OPTS)(floyd_shifts)


@njit(**_OPTS)
def reflect(i, n):  # torch's mode="reflect" (no edge repeat); the caller keeps pad < n
    if i < 0:
        return -i
    if i >= n:
        return 2 * n - 2 - i
    return i

@njit(**_OPTS)
def image_map(image, chw, out):
    """out float32 [H, W]: fastmix.image_saliency(image, value_range=None) of one float image,
    then the scale-free rescale (the largest value brought into [0.5, 1) by a power of two)."""
    if chw:
        channels, height, width = image.shape
    else:
        height, width, channels = image.shape
    low = image.min()
    high = image.max()
    span = high - low
    if span < STRETCH_EPS:
        span = STRETCH_EPS
    u8 = np.empty(image.shape, np.uint8)
    flat_in = image.reshape(-1)
    flat_u8 = u8.reshape(-1)
    for i in range(flat_in.shape[0]):
        scaled = (flat_in[i] - low) / span
        if scaled < np.float32(0.0):
            scaled = np.float32(0.0)
        if scaled > np.float32(1.0):
            scaled = np.float32(1.0)
        flat_u8[i] = np.uint8(np.rint(scaled * np.float32(255.0)))
    grey = np.empty((height, width), np.int32)
    if chw:
        _kernels.grey_chw(u8, grey)
    else:
        _kernels.grey_hwc(u8, grey)
    _kernels.fine_grained_map(grey)
    peak = np.float32(0.0)
    for y in range(height):
        for x in range(width):
            value = np.float32(grey[y, x]) * _kernels._INV255
            out[y, x] = value
            peak = max(peak, value)
    if peak > 0:
        _, exponent = math.frexp(peak)
        scale = np.float32(math.ldexp(1.0, exponent - 1))
        for y in range(height):
            for x in range(width):
                out[y, x] = out[y, x] / scale

@njit(**_OPTS)
def smooth(src, kernel, dst):
    """dst = the kernel_size^2 Gaussian of src [H, W] with reflect padding (float32 sums)."""
    height, width = src.shape
    size = kernel.shape[0]
    pad = size // 2
    for y in range(height):
        for x in range(width):
            acc = np.float32(0.0)
            for i in range(size):
                row = reflect(y + i - pad, height)
                for j in range(size):
                    acc += kernel[i, j] * src[row, reflect(x + j - pad, width)]
            dst[y, x] = acc

@njit(**_OPTS)
def score_best(g1, g2, b, shifts):
    """(index of the first maximum of the float32 scores, float32 scores) of candidates [K, 2]
    for sample b, as fastmix's numba shift_scores + argmax."""
    height, width = g1.shape[1], g1.shape[2]
    own = g1[b:b + 1]
    solo = np.empty((1, height, width), g1.dtype)
    total = 0.0
    for y in range(height):
        for x in range(width):
            g = own[0, y, x]
            s = g * g / max(g, MASK_EPS)
            solo[0, y, x] = s
            total += s
    totals = np.empty(1, np.float64)
    totals[0] = total
    scores = np.empty((1, shifts.shape[0]), np.float64)
    _shift_scores(own, g2[b:b + 1], shifts.reshape(1, shifts.shape[0], 2), solo, totals, MASK_EPS, scores)
    out = np.empty(shifts.shape[0], np.float32)
    best = 0
    for k in range(shifts.shape[0]):
        out[k] = np.float32(scores[0, k])
        if out[k] > out[best]:
            best = k
    return best, out

@njit(**_OPTS)
def all_shifts(height, width):
    rows = 2 * height - 1
    population = rows * (2 * width - 1)
    out = np.empty((population, 2), np.int64)
    for k in range(population):
        out[k, 0] = k % rows + 1 - height
        out[k, 1] = k // rows + 1 - width
    return out

@njit(**_OPTS)
def sum_pool(maps, b, factor):
    height, width = maps.shape[1], maps.shape[2]
    rows = -(-height // factor)
    cols = -(-width // factor)
    out = np.zeros((1, rows, cols), maps.dtype)
    for r in range(rows):
        for c in range(cols):
            acc = np.float32(0.0)
            for y in range(r * factor, min((r + 1) * factor, height)):
                for x in range(c * factor, min((c + 1) * factor, width)):
                    acc += maps[b, y, x]
            out[0, r, c] = acc
    return out

@njit(**_OPTS)
def coarse_to_fine(g1, g2, b, side, top):
    """Best shift of fastmix's coarse-to-fine search for sample b (torch_sage.coarse_to_fine)."""
    height, width = g1.shape[1], g1.shape[2]
    factor = max(1, -(-max(height, width) // side))
    if factor == 1:
        candidates = all_shifts(height, width)
    else:
        coarse_g1 = sum_pool(g1, b, factor)
        coarse_g2 = sum_pool(g2, b, factor)
        coarse = all_shifts(coarse_g1.shape[1], coarse_g1.shape[2])
        _, coarse_scores = score_best(coarse_g1, coarse_g2, 0, coarse)
        order = np.argsort(-coarse_scores, kind="mergesort")  # stable, descending
        count = min(top, order.shape[0])
        span = 2 * factor + 1
        candidates = np.empty((count * span * span, 2), np.int64)
        k = 0
        for n in range(count):
            cy = coarse[order[n], 0] * factor
            cx = coarse[order[n], 1] * factor
            for i in range(-factor, factor + 1):
                for j in range(-factor, factor + 1):
                    candidates[k, 0] = min(max(cy + i, -(height - 1)), height - 1)
                    candidates[k, 1] = min(max(cx + j, -(width - 1)), width - 1)
                    k += 1
    best, _ = score_best(g1, g2, b, candidates)
    return candidates[best, 0], candidates[best, 1]

@njit(**_OPTS)
def mask_blend(own, partner, g1, g2, b, dy, dx, chw, mask, out):
    """Sample b of fastmix's sage_mask_blend (the mask and blend arithmetic of its numba and
    PyTorch paths); returns lam = mean of the mask."""
    height, width = g1.shape[1], g1.shape[2]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    total = 0.0
    for y in range(height):  # M = G1 / max(G1 + shift(G2), eps), T = 0 outside the partner
        sy = y - dy
        for col in range(width):
            g = g1[b, y, col]
            sx = col - dx
            t = g2[b, sy, sx] if 0 <= sy < height and 0 <= sx < width else np.float32(0.0)
            m = g / max(g + t, MASK_EPS)
            mask[b, y, col] = m
            total += m
    channels = own.shape[0] if chw else own.shape[2]
    for y in range(height):
        sy = y - dy
        row_in = 0 <= sy < height
        for col in range(width):
            m = mask[b, y, col]
            sx = col - dx
            inside = row_in and 0 <= sx < width
            for c in range(channels):
                if chw:
                    if inside:
                        out[c, y, col] = m * own[c, y, col] + (one - m) * partner[c, sy, sx]
                    else:
                        out[c, y, col] = m * own[c, y, col] + (one - m) * zero
                else:
                    if inside:
                        out[y, col, c] = m * own[y, col, c] + (one - m) * partner[sy, sx, c]
                    else:
                        out[y, col, c] = m * own[y, col, c] + (one - m) * zero
    return np.float32(total / (height * width))
