"""SAGE on the CPU as compiled kernels in DALI's ``numba_function`` (no GIL, no python lock).

Two nodes:

* :func:`candidate_shifts`: SAGE's random candidate shifts, K of the P = (2H-1)(2W-1) shifts
  without replacement (Floyd's algorithm), from K uniform float64 numbers drawn by
  ``fn.random.uniform`` (so the pipeline seed fixes them). K = int(P * rand_pos) is computed by
  DALI arithmetic in float64, as Python's ``int(P * rand_pos)``. The node is CPU data, so the
  python-function path takes it as an input on the CPU and on the GPU alike (an argument input
  DALI copies to the device: the batch function never reads a seed on the host).
* :func:`sage_mix`: the whole SAGE step for a batch of float32 images, fastmix's steps one
  after the other: the model-free saliency (fastmix's numba fine-grained saliency kernel of the
  images stretched to uint8, as ``fastmix.image_saliency(x, value_range=None)``), the
  scale-free rescale, the Gaussian smoothing (reflect padding) and the mass normalisation of
  ``fastmix/backends/pytorch/sage.py``, the shift search (random candidates, exhaustive, or
  coarse-to-fine, each scored by the body of fastmix's numba ``sage_shift_scores``) and the
  mask + blend (the arithmetic of fastmix's ``sage_mask_blend``, per sample).

Agreement with fastmix's PyTorch path: perm, mass and the candidates are the same values; the
saliency maps are bit-identical, the smoothing and the sums that normalise the maps are float32
sums in another order, so G1, G2, the scores, the mask, lam and the images agree to float
rounding (about 1e-6 relative) and the chosen shift is the same unless two candidates score
within rounding of each other.

A numba_function cannot raise: what fastmix's python path refuses at run time (channels other
than 1 or 3, maps smaller than the smoothing padding, a random search with K = 0 candidates,
samples of different shapes) makes a guard tensor ``fn.reshape`` fail, so DALI stops the
pipeline with a reshape error whose traceback names the fastmix call.

The kernels are serial: DALI calls them from its own worker threads, where numba's parallel
(workqueue) layer is not safe to enter from two pipelines at once. The parallel kernels of
``_kernels`` are recompiled here from their Python source without ``parallel`` (``prange`` is
then ``range``), so the arithmetic is theirs.
"""
from __future__ import annotations

import functools

import numpy as np

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import do_not_convert

MASK_EPS = np.float32(1e-16)
MASS_EPS = np.float32(1e-12)
STRETCH_EPS = np.float32(1e-12)
SEARCH_CODES = {"random": 0, "exhaustive": 1, "coarse_to_fine": 2, "auto": 3}


def floyd_shifts(u, height, width, out):
    """out int64 [K, 2]: K distinct shifts (dy, dx) of an H x W frame, as reference flat indices
    k (dy = k % P_h + 1 - H, dx = k // P_h + 1 - W, P_h = 2H - 1), from u float64 [K] in [0, 1)
    by Floyd's algorithm (a uniformly random K-subset of range(P)). Plain Python: compiled by
    numba where it runs in numba_function, called as is by the fallback without numba."""
    rows = 2 * height - 1
    population = rows * (2 * width - 1)
    count = u.shape[0]
    taken = np.zeros(population, np.bool_)
    for i in range(count):
        j = population - count + i
        t = int(u[i] * (j + 1))
        if t > j:  # u * (j + 1) rounded up to j + 1
            t = j
        if taken[t]:
            t = j
        taken[t] = True
        out[i, 0] = t % rows + 1 - height
        out[i, 1] = t // rows + 1 - width


@functools.lru_cache(maxsize=None)
@do_not_convert
def _candidate_functions(h_axis: int):
    from .numba_sage_kernels import floyd

    def run(outs, draws, shapes):
        for b in range(len(outs)):
            floyd(draws[b], shapes[b][h_axis], shapes[b][h_axis + 1], outs[b])

    def setup(outs, ins):  # K draws -> K shifts
        for b in range(len(outs[0])):
            outs[0][b][0] = ins[0][b][0]
            outs[0][b][1] = 2

    return run, setup


def _candidate_batch(draws, shapes, *, h_axis):
    """Fallback without numba: the same Floyd draw in Python (K is small: ~1% of the shifts)."""
    import torch

    outs = []
    for u, shape in zip(draws, shapes):
        out = np.empty((u.shape[0], 2), dtype=np.int64)
        dims = shape.reshape(-1).tolist()
        floyd_shifts(u.numpy(), int(dims[h_axis]), int(dims[h_axis + 1]), out)
        outs.append(torch.from_numpy(out))
    return {"shifts": outs}


def random_search_count(height: DataNode, width: DataNode, search: str, rand_pos: float) -> DataNode:
    """int64 K per sample: int(P * rand_pos) when `search` resolves to the random search for this
    image size (search="auto": at most AUTO_RANDOM_MAX_SIDE px a side), else 0."""
    from ..operators.sage import AUTO_RANDOM_MAX_SIDE

    population = fn.cast((2 * height - 1) * (2 * width - 1), dtype=types.FLOAT64)
    count = fn.cast(dmath.floor(population * types.Constant(float(rand_pos), dtype=types.FLOAT64)),
                    dtype=types.INT64)
    if search == "auto":
        count = count * fn.cast(dmath.max(height, width) <= AUTO_RANDOM_MAX_SIDE, dtype=types.INT64)
    return count


def candidate_shifts(images: DataNode, layout: str, search: str, rand_pos: float, use_numba: bool) -> DataNode:
    """int64 [K, 2] (dy, dx) candidate shifts per sample (K = 0 where the search is not random);
    CPU data whatever the images' device."""
    from .native import image_height_width

    height, width = image_height_width(images, layout)
    count = random_search_count(height, width, search, rand_pos)
    draws = fn.random.uniform(range=[0.0, 1.0], shape=fn.cast(fn.stack(count), dtype=types.INT32),
                              dtype=types.FLOAT64)
    shapes = images.shape(dtype=types.INT64, device="cpu")
    h_axis = 0 if layout == "HWC" else 1
    if not use_numba:
        from functools import partial

        from ._bridge import call_torch

        return call_torch(partial(_candidate_batch, h_axis=h_axis), {"draws": draws, "shapes": shapes},
                          ("shifts",), device="cpu")["shifts"]
    from nvidia.dali.plugin.numba.fn import numba_function

    run, setup = _candidate_functions(h_axis)
    return numba_function(draws, shapes, run_fn=run, setup_fn=setup, batch_processing=True,
                          in_types=[types.FLOAT64, types.INT64], ins_ndim=[1, 1], out_types=[types.INT64],
                          outs_ndim=[2])


# ----------------------------------------------------------------------------------------------
# The SAGE kernel.


@functools.lru_cache(maxsize=None)
@do_not_convert  # DALI's AutoGraph must not rewrite the functions numba compiles
def _sage_functions(chw: bool, search: str, per_sample_shifts: bool, per_sample_mass: bool, upper_lambda: float,
                    kernel_size: int, sigma: float):
    import torch

    from ..backends.pytorch.gaussian import gaussian_kernel1d
    from ..backends.pytorch.sage import COARSE_SIDE, COARSE_TOP
    from ..operators.sage import AUTO_RANDOM_MAX_SIDE

    from .numba_sage_kernels import all_shifts as all_shifts_of
    from .numba_sage_kernels import coarse_to_fine, image_map, mask_blend, score_best, smooth

    k1 = gaussian_kernel1d(kernel_size, sigma, torch.float32)
    kernel = torch.outer(k1, k1).numpy().copy()  # the weights torch's conv2d uses
    smoothing = kernel_size > 1
    code = SEARCH_CODES[search]
    upper = np.float32(upper_lambda)
    side, top, auto_side = COARSE_SIDE, COARSE_TOP, AUTO_RANDOM_MAX_SIDE

    def run(out_images, out_lam, out_shifts, out_mass, images, perm, draws, candidates, guard):
        batch = len(out_images)
        if chw:
            height, width = images[0].shape[1], images[0].shape[2]
        else:
            height, width = images[0].shape[0], images[0].shape[1]
        maps = np.empty((batch, height, width), np.float32)
        smoothed = np.empty((batch, height, width), np.float32)
        units = np.empty((batch, height, width), np.float32)
        for b in range(batch):
            image_map(images[b], chw, maps[b])
            total = 0.0
            for y in range(height):
                for x in range(width):
                    total += maps[b, y, x]
            if total <= 0:  # an all-zero map carries no information: uniform
                maps[b, :, :] = np.float32(1.0)
            if smoothing:
                smooth(maps[b], kernel, smoothed[b])
            else:
                smoothed[b, :, :] = maps[b]
            total = 0.0
            for y in range(height):
                for x in range(width):
                    total += smoothed[b, y, x]
            denominator = np.float32(total)
            for y in range(height):
                for x in range(width):
                    units[b, y, x] = smoothed[b, y, x] / denominator
        g1 = np.empty((batch, height, width), np.float32)
        g2 = np.empty((batch, height, width), np.float32)
        masses = np.empty(batch, np.float32)
        for b in range(batch):
            mass = (draws[b][0] if per_sample_mass else draws[0][0]) * upper
            masses[b] = mass
            own_weight = max(mass, MASS_EPS)
            partner_weight = max(np.float32(1.0) - mass, MASS_EPS)
            p = perm[b][0]
            for y in range(height):
                for x in range(width):
                    g1[b, y, x] = units[b, y, x] * own_weight
                    g2[b, y, x] = units[p, y, x] * partner_weight
        mode = code
        if mode == 3:
            mode = 0 if max(height, width) <= auto_side else 2
        mask = np.empty((batch, height, width), np.float32)
        exhaustive = np.empty((0, 2), np.int64)
        if mode == 1:
            exhaustive = all_shifts_of(height, width)
        for b in range(batch):
            if mode == 0:
                shifts = candidates[b if per_sample_shifts else 0]
                best, _ = score_best(g1, g2, b, shifts)
                dy, dx = shifts[best, 0], shifts[best, 1]
            elif mode == 1:
                best, _ = score_best(g1, g2, b, exhaustive)
                dy, dx = exhaustive[best, 0], exhaustive[best, 1]
            else:
                dy, dx = coarse_to_fine(g1, g2, b, side, top)
            out_lam[b][0] = mask_blend(images[b], images[perm[b][0]], g1, g2, b, dy, dx, chw, mask, out_images[b])
            out_shifts[b][0] = dy
            out_shifts[b][1] = dx
            out_mass[b][0] = masses[b]

    def setup(outs, ins):  # images like the input; lam [1]; shifts [2]; mass [1]
        for b in range(len(outs[0])):
            for d in range(3):
                outs[0][b][d] = ins[0][b][d]
            outs[1][b][0] = 1
            outs[2][b][0] = 2
            outs[3][b][0] = 1

    return run, setup


def guard(images: DataNode, perm: DataNode, layout: str, kernel_size: int, candidates: DataNode,
          search: str) -> DataNode:
    """A one-element tensor reshaped to [1 + n], n the number of broken preconditions: DALI's
    reshape fails unless every sample has its partner's shape, 1 or 3 channels, both sides
    larger than the smoothing padding, and (random search) at least one candidate."""
    shape = images.shape(dtype=types.INT64, device="cpu")
    diff = shape - fn.permute_batch(shape, indices=perm)
    channels = shape[0] if layout == "CHW" else shape[2]
    height, width = (shape[1], shape[2]) if layout == "CHW" else (shape[0], shape[1])
    pad = kernel_size // 2
    bad = (fn.reductions.sum(diff * diff)
           + fn.cast((channels != 1) & (channels != 3), dtype=types.INT64)
           + fn.cast(height <= pad, dtype=types.INT64) + fn.cast(width <= pad, dtype=types.INT64))
    if search in ("random", "auto"):
        count = candidates.shape(dtype=types.INT64, device="cpu")[0]
        from ..operators.sage import AUTO_RANDOM_MAX_SIDE

        needed = (fn.cast(dmath.max(height, width) <= AUTO_RANDOM_MAX_SIDE, dtype=types.INT64)
                  if search == "auto" else 1)
        bad = bad + needed * fn.cast(count == 0, dtype=types.INT64)
    size = fn.cast(fn.stack(1 + bad), dtype=types.INT32)
    return fn.reshape(fn.zeros(shape=[1], dtype=types.UINT8), shape=size)


def sage_mix(images: DataNode, perm: DataNode, mass_draw: DataNode, candidates: DataNode | None, *, layout: str,
             search: str, per_sample_shifts: bool, per_sample_mass: bool, upper_lambda: float, kernel_size: int,
             sigma: float) -> tuple[DataNode, DataNode, DataNode, DataNode]:
    """(images, lam, shifts, mass) of SAGE on CPU float32 images with the model-free saliency;
    perm int32 per sample, mass_draw float32 Beta draw per sample (scaled by upper_lambda here),
    candidates from :func:`candidate_shifts` (random or auto search; None otherwise)."""
    from nvidia.dali.plugin.numba.fn import numba_function

    run, setup = _sage_functions(layout == "CHW", search, per_sample_shifts, per_sample_mass, float(upper_lambda),
                                 int(kernel_size), float(sigma))
    if candidates is None:  # a placeholder of the right type: exhaustive and coarse-to-fine ignore it
        candidates = fn.zeros(shape=[0, 2], dtype=types.INT64)
    index = fn.reshape(fn.cast(perm, dtype=types.INT64), shape=[1])
    draws = fn.reshape(mass_draw, shape=[1])
    check = guard(images, perm, layout, kernel_size, candidates, search)
    out_images, lam, shifts, mass = numba_function(
        images, index, draws, candidates, check, run_fn=run, setup_fn=setup, batch_processing=True,
        in_types=[types.FLOAT, types.INT64, types.FLOAT, types.INT64, types.UINT8], ins_ndim=[3, 1, 1, 2, 1],
        out_types=[types.FLOAT, types.FLOAT, types.INT64, types.FLOAT], outs_ndim=[3, 1, 1, 1])
    return out_images, fn.reshape(lam, shape=[]), shifts, fn.reshape(mass, shape=[])
