"""Argument handling shared by the operators."""
from __future__ import annotations

import torch

from .. import params
from .._checks import check_perm


def check_labels(labels, batch: int):
    if labels is None:
        return None
    labels = torch.as_tensor(labels)
    if labels.dim() == 0 or labels.shape[0] != batch:
        raise ValueError(f"labels must have one entry per sample ({batch}), got shape {tuple(labels.shape)}")
    return labels


def resolve_perm(perm, batch: int, generator) -> torch.Tensor:
    """The injected pairing (checked) or a fresh random permutation."""
    if perm is None:
        return params.permutation(batch, generator)
    return check_perm(torch.as_tensor(perm), batch).cpu()
