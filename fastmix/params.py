"""Every random parameter of every operator is drawn here, from an explicit torch.Generator.

Operators call these helpers once and pass the results to deterministic kernels, so each kernel
can be tested with injected parameters. Draws happen on the generator's device (the CPU by
default) and are then moved to the images' device in one copy.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _device_of(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


def numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy generator seeded from the torch generator (for distributions torch cannot seed)."""
    gen = _cpu_generator(generator)
    seed = torch.randint(0, 2**62, (1,), generator=gen, device=_device_of(gen)).item()
    return np.random.default_rng(seed)


def beta(alpha: float, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """float32 [size] draws of Beta(alpha, alpha); alpha <= 0 gives 1.0 as in the references."""
    if alpha is None or not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha}")
    if alpha <= 0:
        return torch.ones(size, dtype=torch.float32)
    values = numpy_rng(generator).beta(alpha, alpha, size=size)
    return torch.from_numpy(values.astype(np.float32))


def lam_per_batch_or_sample(alpha: float, batch: int, per_sample: bool,
                            generator: torch.Generator | None) -> torch.Tensor:
    """One Beta draw shared by the batch, or one per sample; float32 [batch] either way."""
    if per_sample:
        return beta(alpha, batch, generator)
    return beta(alpha, 1, generator).expand(batch).clone()


def permutation(batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """int64 [batch]: sample i is mixed with sample perm[i] (torch.randperm, as the references)."""
    gen = _cpu_generator(generator)
    return torch.randperm(batch, generator=gen, device=_device_of(gen)).cpu()


def derangement(batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """int64 [batch] pairing without fixed points (perm[i] != i), uniform over all derangements:
    permutations are drawn until one has no fixed point (about e = 2.72 draws on average, 2 at
    B = 2). B = 1 has no derangement and gives [0] (callers decide what a self-pair means)."""
    if batch < 2:
        return torch.arange(batch)
    index = torch.arange(batch)
    while True:
        perm = permutation(batch, generator)
        if not bool((perm == index).any()):
            return perm


def uniform(size, low: float, high: float, generator: torch.Generator | None = None) -> torch.Tensor:
    gen = _cpu_generator(generator)
    u = torch.rand(size, generator=gen, device=_device_of(gen), dtype=torch.float64).cpu()
    return low + (high - low) * u


def randint(high, size, generator: torch.Generator | None = None) -> torch.Tensor:
    """int64 draws uniform in [0, high); `high` may be a tensor of per-element bounds."""
    gen = _cpu_generator(generator)
    high_t = torch.as_tensor(high, dtype=torch.float64)
    u = torch.rand(size, generator=gen, device=_device_of(gen), dtype=torch.float64).cpu()
    return torch.minimum((u * high_t).floor(), high_t - 1).long()


def choose_without_replacement(population: int, count: int, generator: torch.Generator | None = None,
                               *, rows: int | None = None) -> torch.Tensor:
    """`count` distinct integers from [0, population): int64 [count], or [rows, count] independent sets."""
    gen = _cpu_generator(generator)
    if rows is None:
        return torch.randperm(population, generator=gen, device=_device_of(gen))[:count].cpu()
    keys = torch.rand(rows, population, generator=gen, device=_device_of(gen)).cpu()
    return keys.argsort(dim=1)[:, :count].contiguous()


def box_from_lam(lam: torch.Tensor, height: int, width: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Official CutMix/SaliencyMix geometry: cut = int(size*sqrt(1-lam)), centred at an integer
    pixel, half-extent cut//2 on each side, clipped to the image. int64 [B, 4] (y1, y2, x1, x2)."""
    ratio = torch.sqrt(1.0 - lam.double())
    cut_h = (height * ratio).floor().long()
    cut_w = (width * ratio).floor().long()
    y1 = (cy - cut_h // 2).clamp(0, height)
    y2 = (cy + cut_h // 2).clamp(0, height)
    x1 = (cx - cut_w // 2).clamp(0, width)
    x2 = (cx + cut_w // 2).clamp(0, width)
    return torch.stack([y1, y2, x1, x2], dim=1)
