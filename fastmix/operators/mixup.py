"""Mixup (Zhang et al., ICLR 2018): x' = lam * x + (1 - lam) * x[perm]."""
from __future__ import annotations

import torch

from .. import dispatch, params
from ..dispatch import to_device
from .._checks import check_images, check_lam
from ..result import MixResult
from ._common import check_labels, resolve_perm


def mixup(images: torch.Tensor, labels: torch.Tensor | None = None, *, alpha: float = 1.0,
          lam=None, perm=None, per_sample: bool = False, generator: torch.Generator | None = None,
          backend: str = "auto", out: torch.Tensor | None = None) -> MixResult:
    """Blend every sample with a partner.

    lam ~ Beta(alpha, alpha), one per batch (the official code) or one per sample
    (`per_sample=True`); alpha <= 0 disables mixing (lam = 1). `lam` (scalar or [B]) and `perm`
    ([B]) may be injected: a [B] lam is one weight per sample, as in every fastmix operator.
    uint8 images are blended in float32 and rounded back to uint8.
    `out`: a tensor to write the mixed images into (the images' shape, dtype and device) and
    return as `images`; `out=images` mixes in place (a loader's batch: on the CPU the numba
    kernels then touch only what changes). `out` must be the images themselves or share no
    memory with them, and records no gradient.
    """
    check_images(images)
    batch = images.shape[0]
    labels = check_labels(labels, batch, images)
    perm_t = resolve_perm(perm, batch, generator)
    if lam is None:
        lam_t = params.lam_per_batch_or_sample(alpha, batch, per_sample, generator)
    else:
        lam_t = check_lam(lam, batch)
    mixed = dispatch.mixup_blend(images, perm_t, lam_t, backend=backend, out=out)
    device = images.device
    return MixResult(images=mixed, lam=to_device(lam_t, device), perm=to_device(perm_t, device), labels=labels)
