"""Random streams for data-parallel training: one independent torch.Generator per rank.

Seeding every rank with the same seed makes all ranks draw the same permutations, lams and boxes,
so the replicas see correlated augmentations and the effective batch loses diversity. Adding the
rank to the seed (seed + rank) avoids identical streams but makes rank r of seed s replay rank 0
of seed s + r. Here the rank's seed is derived from (seed, rank) by NumPy's SeedSequence, which
hashes its entropy so that nearby seeds and ranks give unrelated streams.
"""
from __future__ import annotations

import numpy as np
import torch


def current_rank() -> int:
    """torch.distributed's rank when a process group is initialised, else 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def rank_seed(seed: int, rank: int | None = None) -> int:
    """A 63-bit seed for `rank` derived from the run's `seed` (rank defaults to current_rank())."""
    for name, value in (("seed", seed), ("rank", rank)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    rank = current_rank() if rank is None else int(rank)
    state = np.random.SeedSequence([int(seed), rank]).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1  # 63 bits: a valid seed for torch, NumPy and DALI alike


def rank_generator(seed: int, rank: int | None = None, device=None) -> torch.Generator:
    """A torch.Generator on `device` (default CPU) seeded with rank_seed(seed, rank).

    Pass it as `generator=` to fastmix's operators, transforms and training steps: every rank then
    draws its own parameters, and re-creating it with the same (seed, rank) replays them.
    """
    generator = torch.Generator(device=device if device is not None else "cpu")
    return generator.manual_seed(rank_seed(seed, rank))


__all__ = ["current_rank", "rank_seed", "rank_generator"]
