"""SAGE's deterministic steps (PyTorch path): saliency prep, shift-score search, mask and blend.

Conventions (spec: algorithms.md section 1.4/1.4b):
- A shift (dy, dx) moves the partner's content by dy rows and dx columns:
  shifted[r, c] = partner[r - dy, c - dx], zero outside the frame.
- Score of a shift: sum over the H x W frame of G1*M + T*(1-M) with M = G1 / max(G1 + T, 1e-16),
  evaluated element by element exactly as the reference does.

Memory bound of the search: the partner map is zero-padded once to [B, 3H-2, 3W-2] and the
candidate windows are unfolded views of it (no copy). Candidates are then scored in chunks of at
most `chunk_elements` window pixels (batch x candidates x H x W), or one image's H x W when that
is larger; each chunk allocates three temporaries of that many elements (the gathered shifted
maps, the denominator, the score terms), i.e. at most 3 * 4 * chunk_elements bytes in float32
(12 MiB at the default 2**20), whatever B and K are. The scores take B * K values and the padded
partner map 9 * B * H * W.

Coarse-to-fine search (`coarse_to_fine`, for large images): both maps are sum-pooled by
f = ceil(max(H, W) / COARSE_SIDE) so the coarse frame is at most COARSE_SIDE px a side, every
coarse shift is scored (the score is homogeneous of degree 1, so pooled masses keep its scale),
and the COARSE_TOP best coarse shifts per sample, scaled by f, are refined at full resolution
over the (2f + 1)^2 shifts within f px of each. Work per sample: at most COARSE_SIDE^4 coarse
pixel terms (the overlaps of all the shifts of an h x w frame add up to h^2 w^2) plus
COARSE_TOP * (2f + 1)^2 full-resolution candidates, instead of the (2H - 1)(2W - 1) candidates
(H^2 W^2 pixel terms) of the exhaustive search. It is a heuristic: the best full-
resolution shift is found when its neighbourhood is among the best coarse ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .blend import compute_dtype, to_output
from .gaussian import gaussian_smooth

MASK_EPS = 1e-16
MASS_EPS = 1e-12
DEFAULT_CHUNK_ELEMENTS = 2 ** 20
COARSE_SIDE = 32
COARSE_TOP = 4


def saliency_from_grad(grad: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] input gradient -> [B, H, W] mean over channels of |grad|."""
    return grad.detach().to(compute_dtype(grad.dtype)).abs().mean(dim=1)


def fill_zero_maps(maps: torch.Tensor) -> torch.Tensor:
    """An all-zero map carries no information: treat it as uniform (the reference divides by 0)."""
    empty = maps.sum(dim=(1, 2)) <= 0
    return torch.where(empty[:, None, None], torch.ones_like(maps), maps)


def saliency_masses(grad: torch.Tensor, perm: torch.Tensor, mass: torch.Tensor,
                    kernel_size: int, sigma: float):
    """(G1, G2) [B, H, W] from grad [B, C, H, W] (C = 1: a non-negative saliency map): mean over
    channels of |grad|, all-zero maps made uniform, Gaussian smoothing, mass normalisation."""
    maps = fill_zero_maps(saliency_from_grad(grad))
    return normalize_masses(gaussian_smooth(maps, kernel_size, sigma), perm, mass)


def normalize_masses(saliency: torch.Tensor, perm: torch.Tensor, mass: torch.Tensor):
    """G1 = s / sum(s) * max(a, 1e-12) and G2 = s[perm] / sum(s[perm]) * max(1 - a, 1e-12).

    `saliency` must be finite, non-negative, with a positive sum per image (the caller checks).
    """
    totals = saliency.sum(dim=(1, 2), keepdim=True)
    unit = saliency / totals
    mass = mass.to(device=saliency.device, dtype=saliency.dtype).view(-1, 1, 1)
    g1 = unit * mass.clamp(min=MASS_EPS)
    g2 = unit[perm.to(saliency.device)] * (1.0 - mass).clamp(min=MASS_EPS)
    return g1, g2


def flat_to_shifts(flat: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reference flat index k -> (dy, dx) = (k % P_h + 1 - H, k // P_h + 1 - W), P_h = 2H - 1."""
    rows = 2 * height - 1
    return torch.stack([flat % rows + 1 - height, flat // rows + 1 - width], dim=-1)


def all_shifts(height: int, width: int, device=None) -> torch.Tensor:
    """Every (dy, dx) with |dy| < H and |dx| < W, in reference flat-index order: [P_h * P_w, 2]."""
    flat = torch.arange((2 * height - 1) * (2 * width - 1), device=device)
    return flat_to_shifts(flat, height, width)


def shift_score(g1: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """G1*M + T*(1-M) with M = G1 / max(G1 + T, eps), summed over the last two dims.

    Evaluated as T + (G1 - T) * G1 / max(G1 + T, eps), the same expression regrouped so that it
    runs in place on two temporaries (the terms agree with the reference's to float rounding).
    """
    denominator = torch.add(g1, shifted).clamp_(min=MASK_EPS)
    terms = torch.sub(g1, shifted).mul_(g1).div_(denominator).add_(shifted)
    return terms.sum(dim=(-2, -1))


def shift_scores(g1: torch.Tensor, g2: torch.Tensor, shifts: torch.Tensor,
                 chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """Scores [B, K] of candidate shifts, shared ([K, 2]) or per sample ([B, K, 2])."""
    batch, height, width = g1.shape
    if shifts.dim() == 2:
        shifts = shifts.unsqueeze(0).expand(batch, -1, -1)
    candidates = shifts.shape[1]
    shifts = shifts.to(g1.device)
    # Window (oy, ox) of the padded partner map is the partner shifted by (H-1-oy, W-1-ox).
    win_y = (height - 1) - shifts[..., 0]
    win_x = (width - 1) - shifts[..., 1]
    padded = F.pad(g2, (width - 1, width - 1, height - 1, height - 1))
    windows = padded.unfold(1, height, 1).unfold(2, width, 1)  # [B, 2H-1, 2W-1, H, W], a view

    scores = torch.empty(batch, candidates, dtype=g1.dtype, device=g1.device)
    pixels = height * width
    batch_step = max(1, min(batch, chunk_elements // pixels))
    for b0 in range(0, batch, batch_step):
        b1 = min(batch, b0 + batch_step)
        cand_step = max(1, chunk_elements // ((b1 - b0) * pixels))
        rows = torch.arange(b0, b1, device=g1.device)[:, None]
        for k0 in range(0, candidates, cand_step):
            k1 = min(candidates, k0 + cand_step)
            shifted = windows[rows, win_y[b0:b1, k0:k1], win_x[b0:b1, k0:k1]]  # [b, k, H, W]
            scores[b0:b1, k0:k1] = shift_score(g1[b0:b1, None], shifted)
    return scores


def shift_maps(maps: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Per-sample integer shift of [B, C, H, W] by (dy, dx) = shifts[b], zero fill; differentiable."""
    batch, channels, height, width = maps.shape
    dy = shifts[:, 0].to(maps.device).view(batch, 1)
    dx = shifts[:, 1].to(maps.device).view(batch, 1)
    src_r = torch.arange(height, device=maps.device).view(1, height) - dy  # [B, H]
    src_c = torch.arange(width, device=maps.device).view(1, width) - dx  # [B, W]
    valid = ((src_r >= 0) & (src_r < height))[:, :, None] & ((src_c >= 0) & (src_c < width))[:, None, :]
    flat_index = src_r.clamp(0, height - 1)[:, :, None] * width + src_c.clamp(0, width - 1)[:, None, :]
    gathered = maps.reshape(batch, channels, height * width).gather(
        2, flat_index.view(batch, 1, height * width).expand(batch, channels, height * width))
    return gathered.view(batch, channels, height, width) * valid[:, None].to(maps.dtype)


def sage_mask(g1: torch.Tensor, g2: torch.Tensor, best_shifts: torch.Tensor):
    """Soft mask M = G1 / max(G1 + shift(G2), 1e-16) [B, H, W] and lam = mean(M) [B]."""
    shifted = shift_maps(g2[:, None], best_shifts)[:, 0]
    mask = g1 / (g1 + shifted).clamp(min=MASK_EPS)
    return mask, mask.mean(dim=(1, 2))


def sage_blend(images: torch.Tensor, perm: torch.Tensor, mask: torch.Tensor,
               best_shifts: torch.Tensor) -> torch.Tensor:
    """M * x + (1 - M) * shift(x[perm]) in the images' dtype and memory format."""
    ct = compute_dtype(images.dtype)
    x = images.to(ct)
    partner = shift_maps(x[perm.to(images.device)], best_shifts)
    weight = mask.to(ct)[:, None]
    return to_output(weight * x + (1.0 - weight) * partner, images)


def coarse_factor(height: int, width: int, side: int = COARSE_SIDE) -> int:
    """Pooling factor that brings the longer side to at most `side` pixels."""
    return max(1, -(-max(height, width) // side))


def sum_pool(maps: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, H, W] -> [B, ceil(H/f), ceil(W/f)] sums of f x f blocks (zero-padded at the far edges)."""
    batch, height, width = maps.shape
    rows, cols = -(-height // factor), -(-width // factor)
    padded = F.pad(maps, (0, cols * factor - width, 0, rows * factor - height))
    return padded.view(batch, rows, factor, cols, factor).sum(dim=(2, 4))


def shifts_around(centres: torch.Tensor, radius: int, height: int, width: int) -> torch.Tensor:
    """Per-sample candidates [B, n * (2r+1)^2, 2]: every shift within `radius` of each centre
    [B, n, 2], clamped to the valid range |dy| < H, |dx| < W (clamping may repeat shifts)."""
    steps = torch.arange(-radius, radius + 1, device=centres.device)
    offsets = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1).view(-1, 2)
    shifts = (centres[:, :, None, :] + offsets).reshape(centres.shape[0], -1, 2)
    # clamp per axis with Python bounds: a torch.tensor(..., device="cuda") would be a blocking copy
    return torch.stack([shifts[..., 0].clamp(-(height - 1), height - 1),
                        shifts[..., 1].clamp(-(width - 1), width - 1)], dim=-1)


def coarse_to_fine(g1: torch.Tensor, g2: torch.Tensor, score_fn=None, *, side: int = COARSE_SIDE,
                   top: int = COARSE_TOP):
    """Coarse-to-fine shift search (see the module docstring; `side` is COARSE_SIDE, `top` COARSE_TOP).

    score_fn(g1, g2, shifts) -> scores [B, K], for shared [K, 2] or per-sample [B, K, 2]
    candidates (default: `shift_scores`). Returns (candidates, scores, best_index): the
    full-resolution candidates ([B, K, 2] per sample; the shared [P_h * P_w, 2] exhaustive set
    when the frame is already at most `side` px a side), their scores [B, K] and the first
    maximum per sample.
    """
    score_fn = shift_scores if score_fn is None else score_fn
    _, height, width = g1.shape
    factor = coarse_factor(height, width, side)
    if factor == 1:
        candidates = all_shifts(height, width, device=g1.device)
    else:
        coarse_g1, coarse_g2 = sum_pool(g1, factor), sum_pool(g2, factor)
        coarse = all_shifts(coarse_g1.shape[1], coarse_g1.shape[2], device=g1.device)
        coarse_scores = score_fn(coarse_g1, coarse_g2, coarse)
        order = coarse_scores.argsort(dim=1, descending=True, stable=True)[:, :top]
        candidates = shifts_around(coarse[order] * factor, factor, height, width)
    scores = score_fn(g1, g2, candidates)
    return candidates, scores, scores.argmax(dim=1)
