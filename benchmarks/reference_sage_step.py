"""SAGE's call site and training iteration, written the way the official main.py does them
(clean-room), around the reference-structure mixing step of `reference_sage.py`.

Mirrors SamsungLabs/SAGE @ 00ce751a main.py l.543-592 (algorithms.md section 1.1):
- `reference_sage_mix`: saliency = mean over channels of |dL/dx|, blurred 5x5 sigma=1 with
  reflect padding (torchvision's GaussianBlur, here fastmix's identical `gaussian_smooth`),
  a = Beta(alpha, alpha) * upper_lambda from NumPy, the pairing and the K = int(P^2 * rand_pos)
  candidate shifts from `torch.randperm` on the device, then `reference_sage`.
- `reference_sage_step`: clean forward, BCE on softmax scaled by 1 - r, backward (its parameter
  gradients kept), the mix above, the mixed forward, BCE scaled by r, backward, optimiser step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fastmix.backends.pytorch.gaussian import gaussian_smooth

from .reference_sage import reference_sage


def reference_sage_mix(x: torch.Tensor, grad: torch.Tensor, *, alpha: float = 1.0, upper_lambda: float = 0.6,
                       rand_pos: float = 0.01, rng: np.random.RandomState = np.random):
    """Returns (x_mix, lam [B], perm [B]) from the batch and its input gradient."""
    batch, _, w, _ = x.shape
    s = grad.abs().mean(dim=1)
    s_t = gaussian_smooth(s, 5, 1.0)[:, None]
    a = (0.5 if alpha == 0 else rng.beta(alpha, alpha)) * upper_lambda
    perm = torch.randperm(batch, device=x.device)
    p = 2 * w - 1
    flat = torch.randperm(p * p, device=x.device)[: int(p * p * rand_pos)]
    x_mix, lam, _ = reference_sage(x, s_t, perm, a, flat)
    return x_mix, lam, perm


def _bce_on_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(torch.softmax(logits, dim=1), targets)


def reference_sage_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                        y: torch.Tensor, num_classes: int, *, update_ratio: float = 0.7,
                        rng: np.random.RandomState = np.random, **mix_options) -> torch.Tensor:
    """One SAGE iteration as main.py runs it; returns the detached mixed loss."""
    optimizer.zero_grad()
    model.train()
    inputs = x.detach().clone().requires_grad_(True)
    onehot = F.one_hot(y, num_classes).float()
    clean_loss = _bce_on_softmax(model(inputs), onehot)
    if update_ratio != 1:
        clean_loss = clean_loss * (1 - update_ratio)
    clean_loss.backward()
    x_mix, lam, perm = reference_sage_mix(inputs.detach(), inputs.grad, rng=rng, **mix_options)
    if update_ratio == 1:
        optimizer.zero_grad()
    targets = lam[:, None] * onehot + (1 - lam)[:, None] * onehot[perm]
    mix_loss = _bce_on_softmax(model(x_mix), targets)
    if update_ratio != 1:
        mix_loss = mix_loss * update_ratio
    mix_loss.backward()
    optimizer.step()
    return mix_loss.detach()
