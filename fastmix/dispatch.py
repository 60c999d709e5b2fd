"""Routes each deterministic step to a backend.

`backend="auto"` picks the fastest backend available for the tensor's device; "pytorch" forces
the plain PyTorch path (the oracle). GPU backends register themselves here.
"""
from __future__ import annotations

import torch

from .backends.pytorch import blend as torch_blend
from .backends.pytorch import sage as torch_sage

BACKENDS = ("auto", "pytorch")


def resolve(backend: str, tensor: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return "pytorch"


def mixup_blend(images, perm, lam, *, backend="auto"):
    resolve(backend, images)
    return torch_blend.mixup_blend(images, perm, lam)


def box_paste(images, perm, boxes, *, backend="auto"):
    resolve(backend, images)
    return torch_blend.box_paste(images, perm, boxes)


def box_fill(images, boxes, value, *, backend="auto"):
    resolve(backend, images)
    return torch_blend.box_fill(images, boxes, value)


def sage_scores(g1, g2, shifts, *, backend="auto", chunk_elements=torch_sage.DEFAULT_CHUNK_ELEMENTS):
    resolve(backend, g1)
    return torch_sage.shift_scores(g1, g2, shifts, chunk_elements)


def sage_mask_and_blend(images, perm, g1, g2, best_shifts, *, backend="auto"):
    resolve(backend, images)
    mask, lam = torch_sage.sage_mask(g1, g2, best_shifts)
    return torch_sage.sage_blend(images, perm, mask, best_shifts), mask, lam
