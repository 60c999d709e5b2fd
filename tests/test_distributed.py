"""Per-rank generators: under torch.distributed (gloo, 2 CPU processes) ranks draw different
parameters, and the same ones again when re-seeded."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastmix
from fastmix.compat.timm import Mixup
from fastmix.distributed import current_rank, rank_generator, rank_seed

WORLD = 2


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def draws(generator):
    """Everything one rank draws for one batch: a Mixup pairing and lam, and a timm-style CutMix."""
    images = torch.zeros(16, 3, 8, 8)
    result = fastmix.mixup(images, generator=generator)
    boxes = Mixup(mixup_alpha=0, cutmix_alpha=1, mode="elem", generator=generator).make_params(16, 8, 8).boxes
    return torch.cat([result.perm.float(), result.lam, boxes.flatten().float()])


def rank_main(rank, port, path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        assert current_rank() == rank
        first = draws(rank_generator(1234))  # the rank comes from the process group
        assert torch.equal(draws(rank_generator(1234)), first)  # re-seeding replays the stream
        assert torch.equal(draws(rank_generator(1234, rank=rank)), first)
        gathered = [torch.empty_like(first) for _ in range(WORLD)]
        dist.all_gather(gathered, first)
        if rank == 0:
            torch.save(torch.stack(gathered), path)
    finally:
        dist.destroy_process_group()


def test_ranks_draw_different_parameters_and_replay_when_reseeded(tmp_path):
    path = str(tmp_path / "draws.pt")
    mp.spawn(rank_main, args=(free_port(), path), nprocs=WORLD, join=True)  # a failed assert fails the spawn
    per_rank = torch.load(path)
    assert not torch.equal(per_rank[0], per_rank[1])  # ranks draw different parameters
    assert torch.equal(per_rank[0], draws(rank_generator(1234, rank=0)))  # rank 0 == no process group
    assert torch.equal(per_rank[1], draws(rank_generator(1234, rank=1)))


def test_rank_seeds_are_distinct_and_checked():
    seeds = {rank_seed(seed, rank) for seed in range(8) for rank in range(8)}
    assert len(seeds) == 64 and all(0 <= s < 2 ** 63 for s in seeds)
    assert rank_seed(0, 1) != rank_seed(1, 0)  # not seed + rank
    assert current_rank() == 0 and rank_seed(5) == rank_seed(5, 0)
    assert rank_generator(5, 1).initial_seed() == rank_seed(5, 1)
    for bad in (dict(seed=-1), dict(seed=1.5), dict(seed=0, rank=-2), dict(seed=True)):
        with pytest.raises(ValueError):
            rank_seed(**bad)
