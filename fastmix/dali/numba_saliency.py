"""SaliencyMix's box centres on the CPU as a compiled kernel in DALI's ``numba_function``.

The saliency is fastmix's numba kernel of OpenCV's ``StaticSaliencyFineGrained``
(fastmix.backends.numba._kernels: grey_chw / grey_hwc, then fine_grained_map, the per-image
core of its batch kernel ``fine_grained_saliency``), so the DALI operator and the torch ops find
the same peaks. This module holds only the DALI glue: one image at a time (DALI hands over
HWC or CHW samples), the first maximum of the map, and the numba_function node. The kernels
called here are serial: DALI runs them on its own threads, without the GIL, where numba's
parallel (workqueue) layer could not be entered from two pipelines at once. The box geometry
and the paste are DALI operators (fastmix.dali.native).

Widths above 65793 (255 * W > 2^24) cannot be refused here (a numba_function cannot raise):
there the map follows float32 sequential row sums, which OpenCV's are not guaranteed to equal.
"""
from __future__ import annotations

import functools

import numpy as np

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import do_not_convert


@functools.lru_cache(maxsize=None)
def peak_finder():
    """peak(map) -> (row, col) of the first maximum in row-major order (argmax's), compiled on first use."""
    from numba import njit

    @njit(nogil=True, cache=True)
    def peak(saliency):
        height, width = saliency.shape
        best, row, col = saliency[0, 0], 0, 0
        for y in range(height):
            for x in range(width):
                if saliency[y, x] > best:
                    best, row, col = saliency[y, x], y, x
        return row, col

    return peak


@functools.lru_cache(maxsize=None)
@do_not_convert  # DALI's AutoGraph must not rewrite the functions numba compiles
def _run_functions(chw: bool, per_sample: bool):
    from ..backends.numba import _kernels

    grey_of = _kernels.grey_chw if chw else _kernels.grey_hwc
    saliency_map, peak = _kernels.fine_grained_map, peak_finder()

    def run(outs, images, perm, guard):
        batch = len(outs)
        for b in range(batch if per_sample else 1):
            source = images[perm[b][0]]
            if chw:
                grey = np.empty((source.shape[1], source.shape[2]), dtype=np.int32)
            else:
                grey = np.empty((source.shape[0], source.shape[1]), dtype=np.int32)
            grey_of(source, grey)
            saliency_map(grey)  # grey now holds the uint8-valued map: same first maximum as the float map
            row, col = peak(grey)
            targets = range(b, b + 1) if per_sample else range(batch)
            for i in targets:
                outs[i][0] = row
                outs[i][1] = col
                outs[i][2] = i  # the sample's own index, for fn.multi_paste's in_ids

    def setup(outs, ins):  # one (row, col, index) per sample
        for b in range(len(outs[0])):
            outs[0][b][0] = 3

    return run, setup


def partner_peaks(images: DataNode, perm: DataNode, layout: str, per_sample: bool) -> DataNode:
    """int64 [3] (row, col, i) per sample i: the saliency peak of its partner images[perm[i]] (per
    sample), or of images[perm[0]] for every sample (the official per-batch box), and i itself
    (DALI has no operator giving a sample its index). uint8 images."""
    from nvidia.dali.plugin.numba.fn import numba_function

    from .numba_ops import uniform_guard

    run, setup = _run_functions(layout == "CHW", per_sample)
    index = fn.reshape(fn.cast(perm, dtype=types.INT64), shape=[1])
    return numba_function(images, index, uniform_guard(images, perm), run_fn=run, setup_fn=setup,
                          batch_processing=True, in_types=[types.UINT8, types.INT64, types.UINT8],
                          ins_ndim=[3, 1, 1], out_types=[types.INT64], outs_ndim=[1])
