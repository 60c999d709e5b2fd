"""Mixup on the CPU as a compiled kernel in DALI's ``numba_function``.

DALI's own arithmetic gives Mixup bit-exactly, but on the CPU it costs a float32 pass and a
separate cast pass over the batch (about two thirds of a decode + resize pipeline's CPU time at
224 x 224). The kernel here does the blend, the rounding and the saturation in one pass, for the
whole batch in one call (no ``fn.permute_batch`` copy of the partners), without the GIL, with
the same float32 operations as fastmix's PyTorch path (``w * x + w1 * x[perm]``, w1 = 1 - w
computed in float32; uint8: round half to even, saturate), so the images are bit-identical.
DALI compiles ``numba_function`` operators when the pipeline is built and cannot serialize them:
pipelines that must serialize use ``impl="dali"``.

The kernels are serial on purpose: DALI calls them from its own worker threads, where numba's
parallel (workqueue) layer is not safe to enter from two pipelines at once.
"""
from __future__ import annotations

import functools

import numpy as np

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import do_not_convert


def available() -> bool:
    try:
        import numba  # noqa: F401
        from nvidia.dali.plugin.numba.fn import numba_function  # noqa: F401
    except Exception:  # numba missing or refusing the installed NumPy
        return False
    return True


def _kernels():
    from numba import njit

    zero, top = np.float32(0.0), np.float32(255.0)

    @njit(nogil=True, cache=True)
    def blend_u8(out, own, other, a, c):
        o, x, y = out.reshape(-1), own.reshape(-1), other.reshape(-1)
        for i in range(x.shape[0]):
            value = np.rint(a * np.float32(x[i]) + c * np.float32(y[i]))
            if value < zero:
                value = zero
            if value > top:
                value = top
            o[i] = np.uint8(value)

    @njit(nogil=True, cache=True)
    def blend_f32(out, own, other, a, c):
        o, x, y = out.reshape(-1), own.reshape(-1), other.reshape(-1)
        for i in range(x.shape[0]):
            o[i] = a * x[i] + c * y[i]

    return blend_u8, blend_f32


@functools.lru_cache(maxsize=None)
@do_not_convert  # DALI's AutoGraph must not rewrite the functions numba compiles
def _run_functions():
    """(run for uint8, run for float32, setup): batch-mode run functions for numba_function."""
    blend_u8, blend_f32 = _kernels()

    def run_u8(outs, images, perm, w, w1, guard):
        for b in range(len(outs)):
            blend_u8(outs[b], images[b], images[perm[b][0]], w[b][0], w1[b][0])

    def run_f32(outs, images, perm, w, w1, guard):
        for b in range(len(outs)):
            blend_f32(outs[b], images[b], images[perm[b][0]], w[b][0], w1[b][0])

    def setup(outs, ins):  # the output has the shape of the images
        for b in range(len(outs[0])):
            for d in range(len(outs[0][b])):
                outs[0][b][d] = ins[0][b][d]

    return run_u8, run_f32, setup


def uniform_guard(images: DataNode, perm: DataNode) -> DataNode:
    """A one-element tensor reshaped to [1 + |shape - partner shape|^2]: DALI's reshape fails
    (naming the fastmix call in its traceback) unless every sample has its partner's shape, so
    the kernel never reads past a smaller partner."""
    shape = images.shape(dtype=types.INT64, device="cpu")
    diff = shape - fn.permute_batch(shape, indices=perm)
    size = fn.cast(fn.stack(1 + fn.reductions.sum(diff * diff)), dtype=types.INT32)
    return fn.reshape(fn.zeros(shape=[1], dtype=types.UINT8), shape=size)


def mixup(images: DataNode, perm: DataNode, lam: DataNode, dtype) -> DataNode:
    """uint8 or float32 images mixed with images[perm] by lam (float32 per sample), one compiled
    pass; the output has no layout (numba_function sets none): the caller labels it."""
    from nvidia.dali.plugin.numba.fn import numba_function

    run_u8, run_f32, setup = _run_functions()
    run = run_u8 if dtype == types.UINT8 else run_f32
    w = fn.reshape(lam, shape=[1])
    w1 = fn.reshape(1.0 - lam, shape=[1])
    index = fn.reshape(fn.cast(perm, dtype=types.INT64), shape=[1])
    guard = uniform_guard(images, perm)
    ndim = 3
    return numba_function(images, index, w, w1, guard, run_fn=run, setup_fn=setup, batch_processing=True,
                          in_types=[dtype, types.INT64, types.FLOAT, types.FLOAT, types.UINT8],
                          ins_ndim=[ndim, 1, 1, 1, 1], out_types=[dtype], outs_ndim=[ndim])
