"""Puzzle Mix's mixing step written the way the official code is structured (clean-room).

Mirrors `mixup_process` / `mixup_graph` / `graphcut_multi` / `neigh_penalty` / `mask_transport` /
`transport_image` of snu-mllab/PuzzleMix @ e2dbf3a2 (mixup.py; SAGE vendors the same file), as
algorithms.md section 2 describes them, with the CIFAR defaults (n_labels 3, beta 1.2, gamma 0.5,
eta 0.2, neigh_size 4, transport on, t_eps 0.8, t_size 4):

1. block_num ~ 2^U{1..4}, perm = a NumPy permutation, lam ~ Beta(alpha, alpha), in that order;
2. unary terms: the saliency sqrt(mean_c g^2) average-pooled to block_num x block_num and
   normalised per image, the partner's taken through perm;
3. pairwise smoothness: mean |difference| across block boundaries of the de-normalised images
   (pooled by neigh_size), for the four (own, partner) combinations, folded into the unaries and
   reduced to the submodular difference;
4. the graph cut ON THE CPU: costs copied to the host, one pyGCO alpha-beta swap
   (`gco.cut_grid_graph(..., algorithm="swap")`) per image, costs scaled by 1000 * block_num^2 and
   truncated to int32, optionally spread over a `multiprocessing.Pool` (the `--mp` flag);
5. transport (on the device): each image's blocks moved by the iterative row/column auction of
   `mask_transport`, for the image under the mask and its partner under 1 - mask;
6. the mask upsampled to the image, ratio = mean(mask), out = mask * x1 + (1 - mask) * x2.

No code is copied. The graph-cut core needs `gco` (pip package gco-wrapper).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CIFAR_DEFAULTS = {"beta": 1.2, "gamma": 0.5, "eta": 0.2, "neigh_size": 4, "n_labels": 3, "transport": True,
                  "t_eps": 0.8, "t_size": 4}


def puzzle_saliency(grad: torch.Tensor) -> torch.Tensor:
    """[B, H, W] sqrt(mean over channels of g^2) of the input gradient (no blur)."""
    return grad.pow(2).mean(dim=1).sqrt()


def neigh_penalty(upper: torch.Tensor, lower: torch.Tensor, k: int):
    """Mean |difference| across the block boundaries between two pooled images [B, C, P, P].

    k pooled pixels make one block. Returns the cost of vertical neighbours [B, bn-1, bn] (the
    last pooled row of block row r in `upper` against the first of block row r+1 in `lower`) and
    of horizontal neighbours [B, bn, bn-1] (likewise for columns).
    """
    batch, _, side, _ = upper.shape
    blocks = side // k
    across_rows = (upper[:, :, k - 1:-1:k, :] - lower[:, :, k::k, :]).abs().mean(dim=1)  # [B, bn-1, P]
    across_cols = (upper[:, :, :, k - 1:-1:k] - lower[:, :, :, k::k]).abs().mean(dim=1)  # [B, P, bn-1]
    vertical = across_rows.view(batch, blocks - 1, blocks, k).mean(dim=-1)
    horizontal = across_cols.view(batch, blocks, k, blocks - 1).mean(dim=2)
    return vertical, horizontal


def graphcut_multi(cost_own: np.ndarray, cost_partner: np.ndarray, pw_vertical: np.ndarray,
                   pw_horizontal: np.ndarray, lam: float, beta: float, eta: float, n_labels: int = 3,
                   eps: float = 1e-8) -> np.ndarray:
    """One image's alpha-beta swap on the block grid: mask [bn, bn] in {1, 0.5, 0} (n_labels 3).

    Label i keeps the fraction l_i = i / (n_labels - 1) of the partner: its cost is
    (1 - l_i) * cost_own + l_i * cost_partner + prior_i, with the prior -log of lam's binomial
    weights scaled by eta / bn^2. Edges cost (pairwise + beta) * (i - j)^2 / (n_labels - 1)^2.
    """
    import gco

    blocks = cost_own.shape[0]
    large_val = 1000 * blocks ** 2
    if n_labels == 2:
        prior = np.array([-np.log(lam + eps), -np.log(1 - lam + eps)])
    elif n_labels == 3:
        prior = np.array([-np.log(lam ** 2 + eps), -np.log(2 * lam * (1 - lam) + eps), -np.log((1 - lam) ** 2 + eps)])
    else:
        raise ValueError(f"n_labels must be 2 or 3, got {n_labels}")
    prior = eta * prior / blocks ** 2
    weights = np.linspace(0, 1, n_labels)
    unary = np.stack([(1 - w) * cost_own + w * cost_partner + prior[i] for i, w in enumerate(weights)], axis=-1)
    unary = (large_val * unary).astype(np.int32)
    labels_idx = np.arange(n_labels)
    pairwise = ((labels_idx[:, None] - labels_idx[None, :]) ** 2 / (n_labels - 1) ** 2).astype(np.float32)
    cost_v = (large_val * (pw_vertical + beta)).astype(np.int32)
    cost_h = (large_val * (pw_horizontal + beta)).astype(np.int32)
    labels = gco.cut_grid_graph(unary, pairwise, cost_v, cost_h, algorithm="swap")
    return (1.0 - labels / (n_labels - 1)).reshape(blocks, blocks)


def _graphcut_star(args):
    return graphcut_multi(*args)


def transport_cost_matrix(blocks: int, device) -> torch.Tensor:
    """[bn^2, bn^2] squared grid distance between block positions, divided by (bn - 1)^2."""
    r, c = torch.meshgrid(torch.arange(blocks, device=device), torch.arange(blocks, device=device), indexing="ij")
    r, c = r.reshape(-1).float(), c.reshape(-1).float()
    return ((r[:, None] - r[None, :]) ** 2 + (c[:, None] - c[None, :]) ** 2) / max(blocks - 1, 1) ** 2


def mask_transport(mask: torch.Tensor, unary: torch.Tensor, eps: float) -> torch.Tensor:
    """Plan [B, n, n] (block i moves to position j) from the iterative row/column auction.

    cost[i, j] = eps * C[i, j] - unary[i] * (mask[j] > 0). Each round every block takes its
    cheapest position; a position claimed by several blocks goes to the cheapest claim and the
    losers pay +1 on that position. bn rounds.
    """
    batch, blocks = mask.shape[0], mask.shape[-1]
    n = blocks * blocks
    z = (mask.reshape(batch, 1, n) > 0).float()
    cost = eps * transport_cost_matrix(blocks, mask.device) - unary.reshape(batch, n, 1) * z
    for _ in range(blocks):
        row_best = cost.argmin(dim=-1)
        plan = torch.zeros_like(cost).scatter_(-1, row_best.unsqueeze(-1), 1.0)
        claims = torch.where(plan > 0, cost, torch.full_like(cost, float("inf")))
        col_best = claims.argmin(dim=-2)
        plan_win = torch.zeros_like(cost).scatter_(-2, col_best.unsqueeze(-2), 1.0) * plan
        cost = cost + (plan - plan_win)
    return plan_win


def transport_image(img: torch.Tensor, plan: torch.Tensor, blocks: int, block_size: int) -> torch.Tensor:
    """Move block i of each image to position j where plan[i, j] = 1 (no winner: zeros)."""
    batch, channels = img.shape[:2]
    patches = img.reshape(batch, channels, blocks, block_size, blocks, block_size).permute(0, 1, 2, 4, 3, 5)
    patches = patches.reshape(batch, channels, blocks * blocks, block_size, block_size)
    moved = torch.einsum("bij,bcipq->bcjpq", plan, patches)
    moved = moved.reshape(batch, channels, blocks, blocks, block_size, block_size).permute(0, 1, 2, 4, 3, 5)
    return moved.reshape(batch, channels, blocks * block_size, blocks * block_size)


def mixup_graph(x: torch.Tensor, unary: torch.Tensor, perm: np.ndarray, block_num: int, lam: float,
                mean: torch.Tensor, std: torch.Tensor, *, beta: float, gamma: float, eta: float,
                neigh_size: int, n_labels: int, transport: bool, t_eps: float, t_size: int, pool=None):
    """Puzzle Mix of x [B, C, W, W] with x[perm]; unary = saliency [B, W, W]. Returns (out, ratio)."""
    batch, _, _, width = x.shape
    perm_t = torch.as_tensor(perm, device=x.device)
    x2 = x[perm_t]
    block_size = width // block_num
    neigh_size = min(neigh_size, block_size)
    t_size = min(t_size, block_size)
    beta = beta / block_num / 16

    pooled = F.avg_pool2d(unary[:, None], block_size)[:, 0]
    unary1 = pooled / pooled.sum(dim=(1, 2), keepdim=True)
    unary2 = unary1[perm_t]

    own = F.avg_pool2d(x * std + mean, neigh_size)
    partner = own[perm_t]
    k = block_size // neigh_size
    # [.., a, b, ..]: a = 1 when the upper/left block shows the image itself, 0 for the partner.
    pw_v = torch.zeros(batch, 2, 2, block_num - 1, block_num, device=x.device)
    pw_h = torch.zeros(batch, 2, 2, block_num, block_num - 1, device=x.device)
    for a, first in ((0, partner), (1, own)):
        for b, second in ((0, partner), (1, own)):
            pw_v[:, a, b], pw_h[:, a, b] = neigh_penalty(first, second, k)
    pw_v, pw_h = beta * gamma * pw_v, beta * gamma * pw_h

    # Fold the 2x2 edge costs into node costs plus a cost paid only when neighbours differ.
    cost_own, cost_partner = unary2.clone(), unary1.clone()  # keeping x loses x2's saliency, and vice versa
    cost_own[:, :-1, :] += (pw_v[:, 1, 0] + pw_v[:, 1, 1]) / 2
    cost_partner[:, :-1, :] += (pw_v[:, 0, 1] + pw_v[:, 0, 0]) / 2
    cost_own[:, 1:, :] += (pw_v[:, 0, 1] + pw_v[:, 1, 1]) / 2
    cost_partner[:, 1:, :] += (pw_v[:, 1, 0] + pw_v[:, 0, 0]) / 2
    cost_own[:, :, :-1] += (pw_h[:, 1, 0] + pw_h[:, 1, 1]) / 2
    cost_partner[:, :, :-1] += (pw_h[:, 0, 1] + pw_h[:, 0, 0]) / 2
    cost_own[:, :, 1:] += (pw_h[:, 0, 1] + pw_h[:, 1, 1]) / 2
    cost_partner[:, :, 1:] += (pw_h[:, 1, 0] + pw_h[:, 0, 0]) / 2
    pw_v = (pw_v[:, 1, 0] + pw_v[:, 0, 1] - pw_v[:, 1, 1] - pw_v[:, 0, 0]) / 2
    pw_h = (pw_h[:, 1, 0] + pw_h[:, 0, 1] - pw_h[:, 1, 1] - pw_h[:, 0, 0]) / 2

    cost_own, cost_partner = cost_own.cpu().numpy(), cost_partner.cpu().numpy()
    pw_v, pw_h = pw_v.cpu().numpy(), pw_h.cpu().numpy()
    jobs = [(cost_own[i], cost_partner[i], pw_v[i], pw_h[i], lam, beta, eta, n_labels) for i in range(batch)]
    masks = pool.map(_graphcut_star, jobs) if pool is not None else [_graphcut_star(job) for job in jobs]
    mask = torch.tensor(np.stack(masks), dtype=torch.float32, device=x.device)[:, None]

    if transport:
        if t_size == -1:
            t_blocks, t_size = block_num, block_size
        elif t_size < block_size:
            t_blocks = width // t_size
            mask = F.interpolate(mask, size=t_blocks)
            pooled = F.avg_pool2d(unary[:, None], t_size)[:, 0]
            unary1 = pooled / pooled.sum(dim=(1, 2), keepdim=True)
            unary2 = unary1[perm_t]
        else:
            t_blocks = block_num
        x = transport_image(x, mask_transport(mask, unary1, t_eps), t_blocks, t_size)
        x2 = transport_image(x2, mask_transport(1 - mask, unary2, t_eps), t_blocks, t_size)

    mask = F.interpolate(mask, size=width)
    ratio = mask.reshape(batch, -1).mean(dim=-1)
    return mask * x + (1 - mask) * x2, ratio


def reference_puzzlemix(x: torch.Tensor, grad: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                        alpha: float = 1.0, rng: np.random.RandomState = np.random, pool=None, **options):
    """`mixup_process` with Puzzle Mix: returns (out, ratio [B], perm [B] as a NumPy array).

    `options` override CIFAR_DEFAULTS (e.g. t_size=-1 to transport at block resolution, which
    the reference needs beyond 64 px since its cost matrices exist only for grids of 2..16).
    """
    settings = {**CIFAR_DEFAULTS, **options}
    block_num = 2 ** rng.randint(1, 5)
    perm = rng.permutation(x.shape[0])
    lam = rng.beta(alpha, alpha)
    unary = puzzle_saliency(grad)
    out, ratio = mixup_graph(x, unary, perm, block_num, lam, mean, std, pool=pool, **settings)
    return out, ratio, perm
