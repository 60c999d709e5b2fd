"""SAGE's shift search on CPU torch tensors with the numba kernel (scores agree with the PyTorch
path's to float rounding: both evaluate the same per-pixel terms, summed in a different order)."""
from __future__ import annotations

import numpy as np
import torch

from . import _kernels
from ._runtime import kernel_call

MASK_EPS = 1e-16


def shift_scores(g1: torch.Tensor, g2: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Scores [B, K] (g1's dtype) of candidate shifts, shared ([K, 2]) or per sample ([B, K, 2])."""
    batch, height, width = g1.shape
    g1c, g2c = g1.detach().contiguous(), g2.detach().contiguous()
    shifts3 = (shifts[None] if shifts.dim() == 2 else shifts).long().contiguous()
    # The term of a pixel the shifted partner does not cover, exactly as the per-pixel formula
    # gives it with T = 0 (the kernel adds the difference inside each candidate's overlap).
    solo = g1c * g1c / g1c.clamp(min=MASK_EPS)
    solo_totals = solo.sum(dim=(1, 2), dtype=torch.float64)
    scores = torch.empty(batch, shifts3.shape[1], dtype=torch.float64)
    eps = (np.float64 if g1.dtype == torch.float64 else np.float32)(MASK_EPS)
    if scores.numel():
        with kernel_call():
            _kernels.sage_shift_scores(g1c.numpy(), g2c.numpy(), shifts3.numpy(), solo.numpy(),
                                       solo_totals.numpy(), eps, scores.numpy())
    return scores.to(g1.dtype)
