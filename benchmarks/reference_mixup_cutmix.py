"""Mixup and CutMix written the way their official training scripts do them (clean-room).

- Mixup mirrors `mixup_data` of facebookresearch/mixup-cifar10 @ eaff31ab (train.py l.119-138;
  algorithms.md section 6): lam ~ Beta(alpha, alpha) from NumPy, a CPU `torch.randperm` moved to
  the device, `lam * x + (1 - lam) * x[perm]` out of place, and the two label sets returned for
  `lam * CE(y_a) + (1 - lam) * CE(y_b)`.
- CutMix mirrors the training loop of clovaai/CutMix-PyTorch @ 2d8eb68f (train.py l.227-240 and
  `rand_bbox` l.279-295; algorithms.md section 5): the `cutmix_prob` gate, lam ~ Beta(beta, beta),
  a CPU `torch.randperm` moved to the device, one integer-centred box for the whole batch, the
  box copied from the partners IN PLACE into the input batch, and lam recomputed from the
  clipped box. As in the official code the first spatial dimension is called "W" and the second
  "H".

No code is copied; NumPy's global generator is replaced by an explicit `np.random.RandomState`
(same draws, same order) so a benchmark can seed it.
"""
from __future__ import annotations

import numpy as np
import torch


def reference_mixup(x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0, rng: np.random.RandomState = np.random):
    """Returns (mixed_x, y_a, y_b, lam) like `mixup_data` (use_cuda = x is on a GPU)."""
    lam = rng.beta(alpha, alpha) if alpha > 0 else 1.0
    perm = torch.randperm(x.shape[0])
    if x.is_cuda:
        perm = perm.cuda(x.device)
    mixed_x = lam * x + (1 - lam) * x[perm, :]
    return mixed_x, y, y[perm], lam


def reference_rand_bbox(size, lam: float, rng: np.random.RandomState = np.random):
    """One box of area (1 - lam) with a uniform integer centre, clipped: (bbx1, bby1, bbx2, bby2)."""
    W, H = size[2], size[3]
    cut_rat = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(W * cut_rat), int(H * cut_rat)
    cx, cy = rng.randint(W), rng.randint(H)
    bbx1 = np.clip(cx - cut_w // 2, 0, W)
    bby1 = np.clip(cy - cut_h // 2, 0, H)
    bbx2 = np.clip(cx + cut_w // 2, 0, W)
    bby2 = np.clip(cy + cut_h // 2, 0, H)
    return bbx1, bby1, bbx2, bby2


def reference_cutmix(x: torch.Tensor, y: torch.Tensor, beta: float = 1.0, cutmix_prob: float = 1.0,
                     rng: np.random.RandomState = np.random):
    """Mixes `x` in place; returns (x, target_a, target_b, lam). lam = 1 when the gate is closed."""
    r = rng.rand(1)
    if not (beta > 0 and r < cutmix_prob):
        return x, y, y, 1.0
    lam = rng.beta(beta, beta)
    perm = torch.randperm(x.shape[0])
    if x.is_cuda:
        perm = perm.cuda(x.device)
    target_a, target_b = y, y[perm]
    bbx1, bby1, bbx2, bby2 = reference_rand_bbox(x.size(), lam, rng)
    x[:, :, bbx1:bbx2, bby1:bby2] = x[perm, :, bbx1:bbx2, bby1:bby2]
    lam = 1 - ((bbx2 - bbx1) * (bby2 - bby1) / (x.size()[-1] * x.size()[-2]))
    return x, target_a, target_b, lam
