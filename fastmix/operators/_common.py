"""Argument handling shared by the operators."""
from __future__ import annotations

import torch

from .. import params
from .._checks import check_labels, check_perm

__all__ = ["check_labels", "resolve_perm", "lam_is_per_sample"]


def resolve_perm(perm, batch: int, generator) -> torch.Tensor:
    """The injected pairing (checked, left on its device: no host copy of device data) or a fresh
    random permutation drawn on the CPU."""
    if perm is None:
        return params.permutation(batch, generator)
    return check_perm(torch.as_tensor(perm), batch)


def lam_is_per_sample(lam) -> bool:
    """The one rule of every operator: an injected lam of shape [B] is one weight per sample
    (a scalar or a 0-d tensor is shared by the batch)."""
    return lam is not None and torch.as_tensor(lam).dim() == 1
