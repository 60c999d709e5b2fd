"""Co-Mixup's mixing step, its graph-cut-on-CPU core written the way the official code is
structured (clean-room).

Mirrors the mixing path of snu-mllab/Co-Mixup @ 2a768160 (main.py l.254-355, match.py
`graphcut_multi` / `mix_input`, mixup.py; algorithms.md section 3), CIFAR defaults
(m_block_num 4, m_part 20, mixup_alpha 2.0, m_beta 0.32, m_gamma 1.0, m_thres 0.83, m_eta 0.05,
m_omega 0.001, m_niter 4):

1. saliency sqrt(mean_c g^2) (no blur); compatibility = L1 distance between the argmax
   locations of the saliency average-pooled by 8 (stride 1);
2. the batch is split into partitions of m_part images, each an independent problem: block
   costs -saliency / sum, a Dirichlet(mixup_alpha) prior over the inputs added as
   -eta * log(prior), and the compatibility matrix A = (1 - omega) I + omega * A_dist / sum * n;
3. labels (one input index per output block) start uniformly random; then m_niter rounds, each
   making one pyGCO alpha-beta swap ON THE CPU per output (`gco.cut_grid_graph_simple`, Potts
   smoothness beta / blocks), with a modular penalty on inputs the other outputs already use
   (2 * gamma * (A @ usage) where that exceeds thres): m_niter x m_part cuts per partition,
   about 4 x B per batch;
4. `mix_input`: out_o = sum_i upsample_nearest(mask_oi) * x_i and target_o = block fractions @ y.

Left out (they change the labels, not the cost structure): the official loop's extra "mixed"
labels once only two or three inputs remain in use, `resolve_label`, and its early stop when the
objective changes by less than 1e-6 relative (so this runs every one of the m_niter rounds). The
official `--parallel` runs partitions in worker processes; this runs them one after another.

No code is copied. Needs `gco` (pip package gco-wrapper).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .reference_puzzlemix import puzzle_saliency

CIFAR_DEFAULTS = {"m_block_num": 4, "m_part": 20, "alpha": 2.0, "beta": 0.32, "gamma": 1.0, "thres": 0.83,
                  "eta": 0.05, "omega": 0.001, "niter": 4}


def compatibility_distance(saliency: torch.Tensor, window: int = 8) -> torch.Tensor:
    """[B, B] L1 distance between the argmax locations of the window-pooled saliency maps."""
    pooled = F.avg_pool2d(saliency[:, None], kernel_size=window, stride=1)[:, 0]
    width = pooled.shape[-1]
    flat = pooled.reshape(pooled.shape[0], -1).argmax(dim=1)
    rows, cols = (flat // width).float(), (flat % width).float()
    return (rows[:, None] - rows[None, :]).abs() + (cols[:, None] - cols[None, :]).abs()


def graphcut_labels(cost: np.ndarray, compat: np.ndarray, rng: np.random.RandomState, *, alpha: float,
                    beta: float, gamma: float, thres: float, eta: float, niter: int) -> np.ndarray:
    """Labels [n_out, bn, bn] (input index per output block) for one partition.

    cost: [n, bn, bn] negative normalised block saliency of the n inputs; compat: [n, n].
    """
    import gco

    n, blocks, _ = cost.shape
    nodes = blocks * blocks
    large_val = 1000 * nodes
    prior = rng.dirichlet(alpha * np.ones(n))
    unary_base = cost.reshape(n, nodes).T - (eta / nodes) * np.log(prior + 1e-8)[None, :]  # [nodes, n]
    smooth = (large_val * (beta / nodes) * (1 - np.eye(n))).astype(np.int32)
    labels = rng.randint(0, n, (n, blocks, blocks))
    for _ in range(niter):
        for out in range(n):
            others = np.delete(labels, out, axis=0).reshape(-1)
            usage = np.bincount(others, minlength=n) / nodes  # blocks of each input used elsewhere
            crowding = compat @ usage
            penalty = 2 * gamma * np.where(crowding > thres, crowding, 0.0) / nodes
            unary = (large_val * (unary_base + penalty[None, :])).astype(np.int32).reshape(blocks, blocks, n)
            labels[out] = gco.cut_grid_graph_simple(unary, smooth, algorithm="swap").reshape(blocks, blocks)
    return labels


def mix_input(labels: torch.Tensor, x: torch.Tensor, targets: torch.Tensor):
    """out_o = sum_i upsample(mask_oi) * x_i; target_o = (block fraction of each input) @ targets."""
    n, height = x.shape[0], x.shape[-2]
    mask = F.one_hot(labels, n).permute(0, 3, 1, 2).float()  # [n_out, n_in, bn, bn]
    up = F.interpolate(mask, size=(height, x.shape[-1]))  # nearest
    out = torch.einsum("oihw,ichw->ochw", up, x)
    mixed_targets = mask.mean(dim=(2, 3)) @ targets
    return out, mixed_targets


def reference_comixup(x: torch.Tensor, grad: torch.Tensor, targets: torch.Tensor,
                      rng: np.random.RandomState = np.random, **options):
    """Co-Mixup of a batch x [B, C, H, W] with soft targets [B, K]: returns (out, mixed targets)."""
    settings = {**CIFAR_DEFAULTS, **options}
    blocks, part = settings.pop("m_block_num"), settings.pop("m_part")
    saliency = puzzle_saliency(grad)
    distance = compatibility_distance(saliency)
    block_saliency = F.avg_pool2d(saliency[:, None], x.shape[-1] // blocks)[:, 0]
    omega = settings.pop("omega")
    outs, mixed = [], []
    for start in range(0, x.shape[0], part):
        stop = min(start + part, x.shape[0])
        n = stop - start
        sal = block_saliency[start:stop]
        cost = (-sal / sal.sum(dim=(1, 2), keepdim=True)).cpu().numpy()
        dist = distance[start:stop, start:stop].cpu().numpy()
        compat = (1 - omega) * np.eye(n) + omega * dist / max(dist.sum(), 1e-8) * n
        labels = graphcut_labels(cost, compat, rng, **settings)
        out, target = mix_input(torch.as_tensor(labels, device=x.device), x[start:stop], targets[start:stop])
        outs.append(out)
        mixed.append(target)
    return torch.cat(outs), torch.cat(mixed)
