"""SaliencyMix written the way its official code does it (clean-room).

Mirrors afm-shahab-uddin/SaliencyMix @ 9ee02b87 (SaliencyMix_CIFAR/saliencymix.py l.191-252,
`saliency_bbox` and the training loop; algorithms.md section 4): the `salmix_prob` gate,
lam ~ Beta(beta, beta), a CPU `torch.randperm` moved to the device, then the saliency of ONE
image, `images[perm[0]]`, computed on the CPU by OpenCV's StaticSaliencyFineGrained (a new
detector per call, as in the official code), whose first maximum centres one box for the whole
batch; the box is copied from the partners IN PLACE and lam is recomputed from the clipped area.

The float-bytes behaviour is kept on purpose: like the official code, OpenCV receives the
*normalised float32* HWC array (`img.cpu().numpy().transpose(1, 2, 0)`), so it reads the float
buffer's bytes as uchar (algorithms.md section 4, "Major pitfall"). fastmix computes the intended
uint8 saliency instead; this file times what the reference actually runs.

No code is copied; NumPy's global generator is replaced by an explicit `np.random.RandomState`.
Needs opencv-contrib (`cv2.saliency`).
"""
from __future__ import annotations

import numpy as np
import torch


def reference_saliency_bbox(img: torch.Tensor, lam: float):
    """Box of area ~(1 - lam) around the first saliency maximum of one [C, H, W] image."""
    import cv2

    size = img.size()
    W, H = size[1], size[2]  # the official names: W is the row count, H the column count
    cut_rat = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(W * cut_rat), int(H * cut_rat)
    temp_img = img.cpu().numpy().transpose(1, 2, 0)  # normalised float32, handed to OpenCV as is
    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    _, saliency_map = detector.computeSaliency(temp_img)
    saliency_map = (saliency_map * 255).astype("uint8")
    x, y = np.unravel_index(np.argmax(saliency_map, axis=None), saliency_map.shape)
    bbx1 = np.clip(x - cut_w // 2, 0, W)
    bby1 = np.clip(y - cut_h // 2, 0, H)
    bbx2 = np.clip(x + cut_w // 2, 0, W)
    bby2 = np.clip(y + cut_h // 2, 0, H)
    return bbx1, bby1, bbx2, bby2


def reference_saliencymix(x: torch.Tensor, y: torch.Tensor, beta: float = 1.0, salmix_prob: float = 1.0,
                          rng: np.random.RandomState = np.random):
    """Mixes `x` in place; returns (x, target_a, target_b, lam). lam = 1 when the gate is closed."""
    r = rng.rand(1)
    if not (beta > 0 and r < salmix_prob):
        return x, y, y, 1.0
    lam = rng.beta(beta, beta)
    perm = torch.randperm(x.shape[0])
    if x.is_cuda:
        perm = perm.cuda(x.device)
    target_a, target_b = y, y[perm]
    bbx1, bby1, bbx2, bby2 = reference_saliency_bbox(x[perm[0]], lam)
    x[:, :, bbx1:bbx2, bby1:bby2] = x[perm, :, bbx1:bbx2, bby1:bby2]
    lam = 1 - ((bbx2 - bbx1) * (bby2 - bby1) / (x.size()[-1] * x.size()[-2]))
    return x, target_a, target_b, lam
