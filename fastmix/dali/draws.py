"""The random parameters of the DALI operators, drawn by DALI's own seeded random operators.

They follow the pipeline's `seed`, so a pipeline built twice
with the same seed gives the same batches. DALI draws what it has an operator for:

* the partner of each sample: ``fn.batch_permutation`` (``no_fixed_points=True`` gives a
  derangement, so no sample is mixed with itself);
* Beta(alpha, alpha) weights (Mixup/CutMix/SaliencyMix lam, SAGE's saliency mass):
  ``fn.random.beta``, one per sample (the first one is used when the batch shares one);
* box centres (CutMix, CutOut): ``fn.random.uniform`` in [0, 1), scaled to the image
  (:mod:`fastmix.dali.native`);
* SAGE's random candidate shifts: K uniform float64 numbers per sample (``fn.random.uniform``
  with a shape computed from the images' shape), made into K distinct shifts by Floyd's
  algorithm (:func:`fastmix.dali.numba_sage.candidate_shifts`);
* Copy-Paste's jitter, paste counts and object subsets: ``fn.random.uniform`` numbers turned
  into fastmix's parameters by :mod:`fastmix.dali.numba_copy_paste`; its python-function path
  instead takes one integer seed per batch (``fn.random.uniform``) for a ``torch.Generator``
  given to ``fastmix.copy_paste``.
"""
from __future__ import annotations

import math

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode

SEED_RANGE = 2 ** 31 - 1  # torch.Generator seeds drawn in [0, 2^31 - 1]


def partner_permutation(no_fixed_points: bool = False) -> DataNode:
    """int32 scalar per sample: sample i is mixed with sample perm[i]."""
    return fn.batch_permutation(no_fixed_points=no_fixed_points)


def beta_weights(alpha: float) -> DataNode | None:
    """float32 Beta(alpha, alpha) per sample, or None for alpha <= 0 (the fastmix operator then
    applies its own rule for "no mixing": lam = 1 for Mixup/CutMix/SaliencyMix, mass 0.5 for SAGE)."""
    if alpha is None or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    if alpha <= 0:
        return None
    return fn.random.beta(alpha=float(alpha), beta=float(alpha))


def batch_seed() -> DataNode:
    """int64 per sample in [0, 2^31 - 1]; the operators use the first sample's value."""
    return fn.random.uniform(range=[0, SEED_RANGE], dtype=types.INT64)
