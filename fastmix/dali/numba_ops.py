"""Mixup on the CPU as a compiled kernel in DALI's ``numba_function``.

DALI's own arithmetic gives Mixup bit-exactly, but on the CPU it costs a float32 pass and a
separate cast pass over the batch (about two thirds of a decode + resize pipeline's CPU time at
224 x 224). The kernel here (the body of fastmix's numba Mixup kernels,
fastmix.backends.numba._kernels.blend_u8 / blend_float) does the blend, the rounding and the
saturation in one pass, for the whole batch in one call (no ``fn.permute_batch`` copy of the
partners), without the GIL, with the same float32 operations as fastmix's PyTorch path
(``w * x + w1 * x[perm]``, w1 = 1 - w computed in float32; uint8: round half to even,
saturate), so the images are bit-identical.
DALI compiles ``numba_function`` operators when the pipeline is built and cannot serialize them:
pipelines that must serialize use ``impl="dali"``.

The kernels are serial on purpose: DALI calls them from its own worker threads, where numba's
parallel (workqueue) layer is not safe to enter from two pipelines at once.
"""
from __future__ import annotations

import functools

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import do_not_convert


def available() -> bool:
    """fastmix's numba kernels are usable (numba imports, FASTMIX_DISABLE_NUMBA is not set) and
    DALI's numba plugin imports."""
    from ..backends import numba as numba_backend

    if not numba_backend.available():
        return False
    try:
        from nvidia.dali.plugin.numba.fn import numba_function  # noqa: F401
    except Exception:  # the plugin refusing the installed numba / NumPy
        return False
    return True


@functools.lru_cache(maxsize=None)
@do_not_convert  # DALI's AutoGraph must not rewrite the functions numba compiles
def _run_functions():
    """(run for uint8, run for float32, setup): batch-mode run functions for numba_function,
    one sample at a time through the body of fastmix's numba Mixup kernels."""
    from ..backends.numba._kernels import blend_float, blend_u8

    def run_u8(outs, images, perm, w, w1, guard):
        for b in range(len(outs)):
            blend_u8(images[b].reshape(-1), images[perm[b][0]].reshape(-1), w[b][0], w1[b][0], outs[b].reshape(-1))

    def run_f32(outs, images, perm, w, w1, guard):
        for b in range(len(outs)):
            blend_float(images[b].reshape(-1), images[perm[b][0]].reshape(-1), w[b][0], w1[b][0],
                        outs[b].reshape(-1))

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
