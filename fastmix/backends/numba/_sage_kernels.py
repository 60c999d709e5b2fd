"""numba kernels of SAGE's saliency prep and shift search (numpy + numba only, like _kernels).

The mask + blend kernels are in _kernels (sage_mask_blend_nchw / _nhwc). The CPU pipeline is
three calls: `sage_prep` (saliency -> G1, G2), `sage_scores_best` (scores of the candidate
shifts and the first maximum) and the mask + blend. Each replaces a chain of torch ops whose
per-op cost, not arithmetic, dominated small batches (B=100 32x32: 1 ms for the prep alone).

Arithmetic follows the PyTorch path (fastmix.backends.pytorch.sage) step by step, in the maps'
dtype (float32, float64 for float64 input), with two documented differences of rounding only:
sums are taken in another order than torch's reductions (map totals in float64 with eight
partial sums; a score's rows in the maps' dtype, its row sums in float64), and the Gaussian is applied as two 1-D passes (rows, then
columns) instead of one conv2d with the outer-product kernel.

error_model="numpy" everywhere: a float division by zero gives inf / NaN (IEEE, as torch) instead
of a per-element ZeroDivisionError check, which kept every division loop scalar.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._kernels import _cast_like, _row_sum, sage_shift_scores

NON_FINITE = 1
NEGATIVE = 2
MASS_EPS = 1e-12


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _reflect(i, n):
    """Reflect padding without repeating the edge (torch's mode="reflect"); |overhang| < n."""
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


@njit(cache=True, nogil=True, error_model="numpy")
def _extremes(values):
    """(max |v|, min v) of a 1-D array, NaN ignored (the caller detects NaN from its sums).
    Four running extremes each: one pair is a chain of compare latencies per element, and
    LLVM does not vectorise a float max / min reduction without fast-math."""
    n = values.shape[0]
    t0 = t1 = t2 = t3 = abs(values[0])
    l0 = l1 = l2 = l3 = values[0]
    i = 1
    while i + 4 <= n:
        v0 = values[i]
        v1 = values[i + 1]
        v2 = values[i + 2]
        v3 = values[i + 3]
        t0 = abs(v0) if abs(v0) > t0 else t0
        t1 = abs(v1) if abs(v1) > t1 else t1
        t2 = abs(v2) if abs(v2) > t2 else t2
        t3 = abs(v3) if abs(v3) > t3 else t3
        l0 = v0 if v0 < l0 else l0
        l1 = v1 if v1 < l1 else l1
        l2 = v2 if v2 < l2 else l2
        l3 = v3 if v3 < l3 else l3
        i += 4
    while i < n:
        v0 = values[i]
        t0 = abs(v0) if abs(v0) > t0 else t0
        l0 = v0 if v0 < l0 else l0
        i += 1
    return max(max(t0, t1), max(t2, t3)), min(min(l0, l1), min(l2, l3))


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _blur_row(line, weights, out):
    """out = line convolved with the odd-length weights, reflect padding; taps summed in order.
    The interior runs as one straight loop per tap over slices (vectorised), the pad columns at
    each end with reflected indices."""
    width = line.shape[0]
    taps = weights.shape[0]
    pad = taps // 2
    for i in range(min(pad, width)):
        acc = weights[0] * line[_reflect(i - pad, width)]
        for j in range(1, taps):
            acc += weights[j] * line[_reflect(i + j - pad, width)]
        out[i] = acc
    for i in range(max(width - pad, pad), width):
        acc = weights[0] * line[_reflect(i - pad, width)]
        for j in range(1, taps):
            acc += weights[j] * line[_reflect(i + j - pad, width)]
        out[i] = acc
    inner = width - 2 * pad
    if inner > 0:
        dst = out[pad:width - pad]
        seg = line[0:inner]
        w = weights[0]
        for i in range(inner):
            dst[i] = w * seg[i]
        for j in range(1, taps):
            seg = line[j:j + inner]
            w = weights[j]
            for i in range(inner):
                dst[i] += w * seg[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _prep_one(src, b, check_negative, weights, unit):
    """unit[b] = smoothed, unit-mass saliency of sample b; returns its NON_FINITE / NEGATIVE flags.

    s = mean over channels of |src[b] / 2^(e-1)|, 2^(e-1) the power of two just below the
    sample's largest |value| (operators.sage.scale_free: exact, keeps the sums finite); an
    all-zero s becomes uniform; then the reflect-padded separable Gaussian, then s / sum(s)."""
    channels, height, width = src.shape[1], src.shape[2], src.shape[3]
    dst = unit[b]
    one = _cast_like(1.0, dst[0, 0])
    peak, low = _extremes(src[b].reshape(channels * height * width))
    flags = NEGATIVE if check_negative and low < 0 else 0
    if not peak < np.inf:  # +-inf (or NaN, with the nnan reductions)
        dst[:] = one  # the caller raises; keep the later steps finite meanwhile
        return flags | NON_FINITE
    _, exponent = math.frexp(peak)
    scale = _cast_like(math.ldexp(1.0, exponent - 1), peak)
    count = _cast_like(channels, dst[0, 0])
    pixels = height * width
    flat = dst.reshape(pixels)  # whole-map loops: per-row loops of a small map cost more than their work
    plane = src[b, 0].reshape(pixels)
    for i in range(pixels):
        flat[i] = abs(plane[i] / scale)
    for c in range(1, channels):
        plane = src[b, c].reshape(pixels)
        for i in range(pixels):
            flat[i] += abs(plane[i] / scale)
    if channels > 1:
        for i in range(pixels):
            flat[i] = flat[i] / count
    total = _row_sum(flat)
    if not abs(total) < np.inf:  # a NaN reached the sum
        dst[:] = one
        return flags | NON_FINITE
    if not total > 0.0:  # no saliency at all: uniform (the reference would divide by zero)
        dst[:] = one
    if weights.shape[0] > 1:
        pad = weights.shape[0] // 2
        rows = np.empty((height, width), dtype=dst.dtype)
        for y in range(height):
            _blur_row(dst[y], weights, rows[y])
        for y in list(range(min(pad, height))) + list(range(max(height - pad, pad), height)):
            out = dst[y]
            first = rows[_reflect(y - pad, height)]
            w = weights[0]
            for i in range(width):
                out[i] = w * first[i]
            for j in range(1, weights.shape[0]):
                line = rows[_reflect(y + j - pad, height)]
                w = weights[j]
                for i in range(width):
                    out[i] += w * line[i]
        inner = (height - 2 * pad) * width  # rows [pad, H - pad): one flat loop per tap
        if inner > 0:
            out = flat[pad * width:pad * width + inner]
            source = rows.reshape(pixels)
            seg = source[0:inner]
            w = weights[0]
            for i in range(inner):
                out[i] = w * seg[i]
            for j in range(1, weights.shape[0]):
                seg = source[j * width:j * width + inner]
                w = weights[j]
                for i in range(inner):
                    out[i] += w * seg[i]
    norm = _cast_like(_row_sum(flat), dst[0, 0])
    for i in range(pixels):
        flat[i] = flat[i] / norm
    return flags


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _masses_one(unit, perm, mass, g1, g2, b):
    """G1[b] = unit[b] * max(a, 1e-12), G2[b] = unit[perm[b]] * max(1 - a, 1e-12), a = mass[b]."""
    a = mass[b]
    floor = _cast_like(MASS_EPS, a)
    own = max(a, floor)
    other = max(_cast_like(1.0, a) - a, floor)
    pixels = unit.shape[1] * unit.shape[2]
    u1 = unit[b].reshape(pixels)
    u2 = unit[perm[b]].reshape(pixels)
    d1 = g1[b].reshape(pixels)
    d2 = g2[b].reshape(pixels)
    for i in range(pixels):
        d1[i] = u1[i] * own
        d2[i] = u2[i] * other


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def sage_prep(src, check_negative, perm, mass, weights, unit, g1, g2, flags):
    """src [B, C, H, W] (dL/dx, or a saliency map with C = 1 and check_negative) float32/64;
    perm int64 [B]; mass [B], weights (1-D Gaussian, odd length; [1.] = no smoothing), unit,
    g1, g2 [B, H, W], all in the maps' dtype; flags int64 [B] (NON_FINITE | NEGATIVE per sample).
    G1 = unit * max(a, 1e-12), G2 = unit[perm] * max(1 - a, 1e-12)."""
    for b in prange(src.shape[0]):
        flags[b] = _prep_one(src, b, check_negative, weights, unit)
    for b in prange(src.shape[0]):
        _masses_one(unit, perm, mass, g1, g2, b)


@njit(cache=True, nogil=True, error_model="numpy")
def sage_prep_serial(src, check_negative, perm, mass, weights, unit, g1, g2, flags):
    """sage_prep on the calling thread (small batches: no parallel launch to pay)."""
    for b in range(src.shape[0]):
        flags[b] = _prep_one(src, b, check_negative, weights, unit)
    for b in range(src.shape[0]):
        _masses_one(unit, perm, mass, g1, g2, b)


@njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def _solo_terms(g1, eps, solo, solo_totals):
    batch, height, width = g1.shape
    pixels = height * width
    for b in prange(batch):
        own = g1[b].reshape(pixels)
        dst = solo[b].reshape(pixels)
        for i in range(pixels):
            g = own[i]
            dst[i] = g * g / max(g, eps)
        solo_totals[b] = _row_sum(dst)


@njit(cache=True, nogil=True, error_model="numpy")
def _first_max(raw, scores, best):
    """scores = raw rounded to the maps' dtype; best = index of the first maximum of each row
    of the rounded scores (torch.argmax on the PyTorch path's float32 scores)."""
    batch, candidates = raw.shape
    for b in range(batch):
        top = _cast_like(raw[b, 0], scores[b, 0])
        scores[b, 0] = top
        pick = 0
        for k in range(1, candidates):
            v = _cast_like(raw[b, k], scores[b, 0])
            scores[b, k] = v
            if v > top:
                top = v
                pick = k
        best[b] = pick


@njit(cache=True, nogil=True, error_model="numpy")
def sage_scores_best(g1, g2, shifts, eps, solo, solo_totals, raw, scores, best):
    """SAGE score of every candidate shift and the first best one per sample.

    g1, g2 [B, H, W] (float32/float64); shifts int64 [S, K, 2] (S = 1: shared by the batch,
    S = B: per sample) as (dy, dx); scratch solo [B, H, W] (g1's dtype), solo_totals [B] and
    raw [B, K] float64; outputs scores [B, K] in g1's dtype and best int64 [B].

    score = sum over the frame of T + (G1 - T) * G1 / max(G1 + T, eps), T = G2 shifted (zero
    outside the partner). Outside the overlap T = 0 and the term is G1 * G1 / max(G1, eps), the
    "solo" term, summed once per sample; each candidate then visits only its overlap rectangle
    and adds (term - solo) there. Rows are summed in the maps' dtype, the rows in float64."""
    _solo_terms(g1, eps, solo, solo_totals)
    sage_shift_scores(g1, g2, shifts, solo, solo_totals, eps, raw)
    _first_max(raw, scores, best)
