"""The compiled steps of fastmix.dali.numba_copy_paste (imported only where numba is used).

The Copy-Paste kernels of fastmix (``fastmix/backends/numba/_kernels.py``: lsj_mask_union,
lsj_occluded_boxes, lsj_masks_write, lsj_paste_blend) are recompiled here from their Python
source without ``parallel`` (``prange`` is then ``range``): DALI calls them from its own worker
threads, where numba's parallel (workqueue) layer is not safe to enter from two pipelines at
once. Cached under names of their own (``_runtime.serial_variant``). The helpers below
compute what the torch code around those kernels computes (the LSJ geometry of
fastmix.copy_paste.params and the tap tables of fastmix/backends/pytorch/copy_paste.py), in the
same float32 / float64 operations, so the taps, and so the images and masks, are the same bits.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..backends.numba import _kernels
from ..backends.numba._runtime import serial_variant

_OPTS = dict(cache=True, nogil=True)

mask_union = serial_variant(_kernels.lsj_mask_union, "lsj_mask_union_serial")
occluded_boxes = serial_variant(_kernels.lsj_occluded_boxes, "lsj_occluded_boxes_serial")
masks_write = serial_variant(_kernels.lsj_masks_write, "lsj_masks_write_serial")
paste_blend = serial_variant(_kernels.lsj_paste_blend, "lsj_paste_blend_serial")

HALF = np.float32(0.5)
ZERO = np.float32(0.0)


@njit(**_OPTS)
def jitter(u, in_h, in_w, out_h, out_w, low, high, flip_prob):
    """(flip, scale, scaled_h, scaled_w, offset_y, offset_x) of one LSJ view from the draws
    u = (flip, scale, offset_y, offset_x) in [0, 1), as fastmix.copy_paste.params.draw_jitter
    and lsj_scaled_size compute them from the same numbers (float64, round half to even)."""
    flip = u[0] < flip_prob
    scale = low + (high - low) * u[1]
    target_h = np.rint(scale * np.float64(out_h))
    target_w = np.rint(scale * np.float64(out_w))
    ratio = min(target_h / np.float64(in_h), target_w / np.float64(in_w))
    scaled_h = max(np.int64(np.rint(np.float64(in_h) * ratio)), 1)
    scaled_w = max(np.int64(np.rint(np.float64(in_w) * ratio)), 1)
    offset_y = np.int64(np.floor(np.float64(max(scaled_h - out_h, 0)) * u[2]))
    offset_x = np.int64(np.floor(np.float64(max(scaled_w - out_w, 0)) * u[3]))
    return flip, scale, scaled_h, scaled_w, offset_y, offset_x


@njit(**_OPTS)
def bilinear_taps(offset, scaled, in_len, flip, tap0, tap1, weight, inside):
    """One view's bilinear taps along one axis (_bilinear_taps of the PyTorch path), float32."""
    ratio = np.float32(in_len) / np.float32(scaled)
    for p in range(tap0.shape[0]):
        q = p + offset
        inside[p] = q < scaled
        src = (np.float32(q) + HALF) * ratio - HALF
        if src < ZERO:
            src = ZERO
        t0 = min(np.int64(np.floor(src)), in_len - 1)
        t1 = min(t0 + 1, in_len - 1)
        weight[p] = src - np.float32(t0)
        if flip:
            t0 = in_len - 1 - t0
            t1 = in_len - 1 - t1
        tap0[p] = t0
        tap1[p] = t1


@njit(**_OPTS)
def nearest_taps(offset, scaled, in_len, flip, tap, inside):
    """One view's pixel-centre nearest taps along one axis (_nearest_taps), float32."""
    ratio = np.float32(in_len) / np.float32(scaled)
    for p in range(tap.shape[0]):
        q = p + offset
        inside[p] = q < scaled
        t = min(np.int64(np.floor((np.float32(q) + HALF) * ratio)), in_len - 1)
        tap[p] = in_len - 1 - t if flip else t


@njit(**_OPTS)
def subset(u, available, count, selected):
    """selected[n] = 1 for `count` distinct objects n of `available`, by Floyd's algorithm on
    u[:count] (a uniformly random subset)."""
    for i in range(count):
        j = available - count + i
        t = int(u[i] * (j + 1))
        if t > j:
            t = j
        if selected[t]:
            t = j
        selected[t] = 1
