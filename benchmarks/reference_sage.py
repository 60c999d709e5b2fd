"""SAGE's mixing step written the way the official code is structured (clean-room).

Mirrors `sage()` of SamsungLabs/SAGE @ 00ce751a (utils_SAGE.py), as described in
algorithms.md section 1.4: saliency maps and images zero-padded to a 3w x 3w canvas, a Python
loop over the batch, and for each image K nearest-neighbour `grid_sample`s of the canvas (one
per candidate shift, through one [K, 3w, 3w] grid built before the loop, as the official code
does) to score the candidates; then one batched `grid_sample` for the final mix. Its cost was
checked against the official sage() run on the same inputs (see benchmarks/bench_sage_reference.py).
Square images only, like the reference. Randomness is injected (perm, mass a, flat candidate
indices) so the output can be compared with fastmix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _translation_thetas(c0: torch.Tensor, c1: torch.Tensor, w: int) -> torch.Tensor:
    """affine_grid thetas translating by (c0 - w) rows and (c1 - w) columns on a 3w canvas."""
    theta = torch.zeros(c0.shape[0], 2, 3, dtype=torch.float32, device=c0.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 2.0 * (w - c1).float() / (3 * w)
    theta[:, 1, 2] = 2.0 * (w - c0).float() / (3 * w)
    return theta


def _translate(canvas: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(canvas.shape), align_corners=False)
    return F.grid_sample(canvas, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def reference_sage(x: torch.Tensor, s_t: torch.Tensor, perm: torch.Tensor, a: float, flat: torch.Tensor):
    """x [B,C,w,w], blurred saliency s_t [B,1,w,w], perm [B], mass a, flat candidates [K].

    Returns (x_mix [B,C,w,w], lam [B], best flat index [B]).
    """
    batch, _, w, _ = x.shape
    g1 = F.pad(s_t, (w, w, w, w))
    g2 = g1[perm]
    g1 = g1 / g1.sum(dim=(1, 2, 3), keepdim=True) * max(a, 1e-12)
    g2 = g2 / g2.sum(dim=(1, 2, 3), keepdim=True) * max(1 - a, 1e-12)
    x1 = F.pad(x, (w, w, w, w))
    x2 = x1[perm]

    p = 2 * w - 1
    c0 = flat % p + 1
    c1 = flat // p + 1
    thetas = _translation_thetas(c0, c1, w)
    k = flat.shape[0]
    # One sampling grid for the K candidates, built once before the batch loop as the official
    # code does (building it per image made this reference about 5x slower than sage() itself).
    grid = F.affine_grid(thetas, [k, 1, 3 * w, 3 * w], align_corners=False)
    best = torch.empty(batch, dtype=torch.long)
    for b in range(batch):
        shifted = F.grid_sample(g2[b:b + 1].expand(k, -1, -1, -1), grid, mode="nearest", padding_mode="zeros",
                                align_corners=False)
        g = g1[b:b + 1]
        mask = g / torch.clamp(g + shifted, min=1e-16)
        score = (g * mask + shifted * (1 - mask))[:, :, w:2 * w, w:2 * w].sum(dim=(1, 2, 3))
        best[b] = torch.argmax(score)

    chosen = _translation_thetas(c0[best], c1[best], w)
    shifted = _translate(g2, chosen)
    mask = g1 / torch.clamp(g1 + shifted, min=1e-16)
    lam = mask[:, :, w:2 * w, w:2 * w].mean(dim=(1, 2, 3))
    mixed = x1 * mask + _translate(x2, chosen) * (1 - mask)
    return mixed[:, :, w:2 * w, w:2 * w], lam, flat[best]
