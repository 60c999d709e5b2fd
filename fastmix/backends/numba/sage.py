"""SAGE's saliency prep and shift search on CPU torch tensors with the numba kernels
(fastmix.backends.numba._sage_kernels). Results agree with the PyTorch path's to float rounding:
both evaluate the same per-element expressions, with sums taken in a different order."""
from __future__ import annotations

import functools

import numpy as np
import torch

from . import _sage_kernels
from ._runtime import kernel_call

MASK_EPS = 1e-16
# Saliency elements up to which the prep runs on the calling thread (see blend.SERIAL_MAX_ELEMENTS
# for why); tests set it to force either launch.
SERIAL_MAX_ELEMENTS = 1 << 20
# The maps' dtypes the kernels handle (the PyTorch path's compute dtypes).
MAP_DTYPES = (torch.float32, torch.float64)


@functools.lru_cache(maxsize=32)
def _gaussian_weights(kernel_size: int, sigma: float, dtype: torch.dtype) -> np.ndarray:
    """The PyTorch path's 1-D Gaussian (torchvision's values), as a read-only NumPy array."""
    from ..pytorch.gaussian import gaussian_kernel1d

    if kernel_size == 1:  # no smoothing, whatever sigma is (the PyTorch path copies the maps)
        weights = np.ones(1, dtype=np.float64 if dtype == torch.float64 else np.float32)
    else:
        weights = gaussian_kernel1d(kernel_size, sigma, dtype).numpy().copy()
    weights.setflags(write=False)
    return weights


def saliency_masses(source: torch.Tensor, perm: torch.Tensor, mass: torch.Tensor, kernel_size: int,
                    sigma: float, *, check_negative: bool = False):
    """(G1, G2, flags) from source [B, C, H, W] float32/float64 (dL/dx, or a saliency map with C
    = 1), in one fused pass: the power-of-two rescale of each sample (operators.sage.scale_free),
    s = mean over channels of |source|, all-zero maps made uniform, the reflect-padded Gaussian,
    the mass normalisation with a = mass [B]. flags int64 [B]: NON_FINITE (the sample holds NaN
    or inf) | NEGATIVE (check_negative and a value < 0); the caller raises on them. The caller
    has checked shapes, kernel_size (odd, pad < H, W) and perm's range."""
    batch, _, height, width = source.shape
    dtype = source.dtype
    src = source.detach().contiguous()
    weights = _gaussian_weights(kernel_size, float(sigma), dtype)
    mass_np = mass.detach().to(dtype).contiguous().numpy()
    unit = torch.empty(batch, height, width, dtype=dtype)
    g1 = torch.empty_like(unit)
    g2 = torch.empty_like(unit)
    flags = np.zeros(batch, dtype=np.int64)
    args = (src.numpy(), bool(check_negative), perm.contiguous().numpy(), mass_np, weights, unit.numpy(), g1.numpy(),
            g2.numpy(), flags)
    if src.numel() > SERIAL_MAX_ELEMENTS:
        with kernel_call():
            _sage_kernels.sage_prep(*args)
    else:  # no parallel launch for a small batch (see SERIAL_MAX_ELEMENTS)
        _sage_kernels.sage_prep_serial(*args)
    return g1, g2, flags


def raise_on_flags(flags: np.ndarray) -> None:
    """The PyTorch path's errors for what sage_prep flagged (negative first, as it checks)."""
    seen = int(np.bitwise_or.reduce(flags)) if flags.size else 0
    if seen & _sage_kernels.NEGATIVE:
        raise ValueError("saliency must be non-negative")
    if seen & _sage_kernels.NON_FINITE:
        raise ValueError("saliency holds NaN or infinite values (check the loss and the gradient, "
                         "e.g. fp16 overflow under AMP)")


def scores_and_best(g1: torch.Tensor, g2: torch.Tensor, shifts: torch.Tensor):
    """(scores [B, K] in g1's dtype, best_index int64 [B]) of candidate shifts, shared ([K, 2]) or
    per sample ([B, K, 2]); best_index is the first maximum of the rounded scores, as
    torch.argmax picks it on the PyTorch path."""
    batch, height, width = g1.shape
    g1c, g2c = g1.detach().contiguous(), g2.detach().contiguous()
    shifts3 = (shifts[None] if shifts.dim() == 2 else shifts).long().contiguous()
    candidates = shifts3.shape[1]
    scores = torch.empty(batch, candidates, dtype=g1.dtype)
    best = torch.zeros(batch, dtype=torch.int64)
    if scores.numel():
        eps = (np.float64 if g1.dtype == torch.float64 else np.float32)(MASK_EPS)
        solo = np.empty((batch, height, width), dtype=g1c.numpy().dtype)
        with kernel_call():
            _sage_kernels.sage_scores_best(g1c.numpy(), g2c.numpy(), shifts3.numpy(), eps, solo,
                                           np.empty(batch), np.empty((batch, candidates)), scores.numpy(),
                                           best.numpy())
    return scores, best


def shift_scores(g1: torch.Tensor, g2: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Scores [B, K] (g1's dtype) of candidate shifts, shared ([K, 2]) or per sample ([B, K, 2])."""
    return scores_and_best(g1, g2, shifts)[0]
