"""Soft targets: one-hot encoding with label smoothing, and the mixing of two label sets."""
from __future__ import annotations

import torch

from ._checks import require


def one_hot(labels: torch.Tensor, num_classes: int | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """float32 [B, num_classes] targets from int labels [B] or soft labels [B, C].

    Smoothing follows timm: the true class gets 1 - s + s/C and every other class s/C. Soft
    labels are passed through the same smoothing (t * (1 - s) + s/C).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    labels = torch.as_tensor(labels)
    if labels.dim() == 2 and labels.dtype.is_floating_point:
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(f"soft labels have {labels.shape[1]} classes but num_classes={num_classes}")
        targets = labels.float()
        classes = labels.shape[1]
    elif labels.dim() == 1 and not labels.dtype.is_floating_point and labels.dtype != torch.bool:
        if num_classes is None:
            raise ValueError("num_classes is required to turn integer labels into soft targets")
        require((labels >= 0) & (labels < num_classes), f"labels must lie in [0, {num_classes})")
        # scatter instead of F.one_hot, whose range check reads device memory on the host
        targets = torch.zeros(labels.shape[0], num_classes, device=labels.device).scatter_(
            1, labels.long()[:, None], 1.0)
        classes = num_classes
    else:
        raise ValueError("labels must be integer class indices [B] or float soft labels [B, C], "
                         f"got dtype {labels.dtype} and shape {tuple(labels.shape)}")
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / classes
    return targets


def mix_targets(labels: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor, num_classes: int | None = None,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """lam[i] * t[i] + (1 - lam[i]) * t[perm[i]]: float32 [B, num_classes] on the labels' device
    (`MixResult.targets` first checks that the labels are on the images' device)."""
    targets = one_hot(labels, num_classes, label_smoothing)
    if targets.shape[0] != perm.shape[0]:
        raise ValueError(f"got {targets.shape[0]} labels for a batch of {perm.shape[0]}")
    perm = perm.to(targets.device)
    lam = lam.to(device=targets.device, dtype=torch.float32)[:, None]
    return lam * targets + (1.0 - lam) * targets[perm]
