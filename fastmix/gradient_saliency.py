"""The input-gradient saliency step of SAGE (algorithms.md sections 1.1-1.2)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .labels import one_hot

LOSSES = ("bce", "ce")


@dataclass
class SaliencyResult:
    saliency: torch.Tensor  # [B, H, W] mean over channels of |dL/dx|
    grad: torch.Tensor      # [B, C, H, W] dL/dx of the (unscaled) clean loss direction
    logits: torch.Tensor    # [B, num_classes] clean logits, detached
    loss: torch.Tensor      # scalar clean loss, detached and unscaled


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """'ce' (default): soft-target cross-entropy, mean over B (CutMix, Mixup, SaliencyMix; what
    timm's SoftTargetCrossEntropy and torchvision's recipes compute); 'bce': BCELoss(softmax(logits),
    targets), mean over B x K (SAGE, PuzzleMix, Co-Mixup: `saliency` and
    `fastmix.training.sage_step` pass it explicitly, as the SAGE paper trains with it)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    targets = targets.to(device=logits.device, dtype=torch.float32)
    if loss == "bce":
        probs = torch.softmax(logits.float(), dim=1)
        return F.binary_cross_entropy(probs, targets)
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=1), dim=1).mean()


def saliency(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: str = "bce",
             update_ratio: float = 1.0, eval_mode: bool = False,
             num_classes: int | None = None) -> SaliencyResult:
    """Clean forward, loss, backward; returns the saliency mean_c |dL/dx|.

    `loss` defaults to "bce", SAGE's clean loss (the reference's BCELoss on softmax).

    With update_ratio r == 1 only dL/dx is computed: the model's parameter gradients are left
    untouched (the reference zeroes them). With r != 1 the clean loss scaled by (1 - r) is
    back-propagated into the parameters, and those gradients are KEPT, as SAGE's training step
    requires; the optimiser step later adds r * grad(L_mix). The model runs in train mode (the
    reference default, so BatchNorm statistics update) unless eval_mode=True; its mode is
    restored afterwards. `x` itself is not modified and needs no requires_grad.
    """
    if not 0.0 <= update_ratio <= 1.0:
        raise ValueError(f"update_ratio must be in [0, 1], got {update_ratio}")
    if x.dim() != 4 or not x.dtype.is_floating_point:
        raise ValueError(f"x must be a float [B, C, H, W] tensor, got {x.dtype} {tuple(x.shape)}")
    was_training = model.training
    model.train(not eval_mode)
    try:
        inputs = x.detach().clone().requires_grad_(True)
        logits = model(inputs)
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"the model must return logits [B, num_classes], got {tuple(logits.shape)}")
        targets = one_hot(y, num_classes or logits.shape[1])
        clean_loss = soft_target_loss(logits, targets, loss)
        if update_ratio == 1.0:
            (grad,) = torch.autograd.grad(clean_loss, inputs)
        else:
            ((1.0 - update_ratio) * clean_loss).backward()
            grad = inputs.grad / (1.0 - update_ratio)
    finally:
        model.train(was_training)
    grad = grad.detach()
    return SaliencyResult(saliency=grad.float().abs().mean(dim=1), grad=grad,
                          logits=logits.detach(), loss=clean_loss.detach())
