"""Triton kernels: launch grids within CUDA's limits, out-of-range perm, NaN semantics, and the
element chunking (channels_last ranges, channel-parallel NCHW, batch-strided inputs).

Kernels run under TRITON_INTERPRET=1 without CUDA (tests/conftest.py) and are compared with the
PyTorch path on random data; outputs are poisoned (NaN) first, so a skipped element fails.
"""
from __future__ import annotations

import pytest
import torch
from triton.runtime.interpreter import InterpretedFunction

from fastmix import ops
from fastmix.backends.pytorch import blend as torch_blend
from fastmix.backends.pytorch import sage as torch_sage
from fastmix.backends.pytorch.gaussian import gaussian_kernel1d
from fastmix.backends.triton import _launch
from fastmix.backends.triton import blend as triton_blend
from fastmix.backends.triton import mask_blend as triton_mask_blend
from fastmix.backends.triton import saliency as triton_saliency
from fastmix.backends.triton import scores as triton_scores

CUDA_GRID_LIMITS = (2**31 - 1, 65535, 65535)


@pytest.fixture
def launched_grids(monkeypatch):
    """Record (kernel name, grid) of each Triton launch instead of running it."""
    grids = []

    def record(self, *args, grid, warmup, **kwargs):
        grids.append((self.fn.__name__, tuple(grid)))

    monkeypatch.setattr(InterpretedFunction, "run", record)
    return grids


@pytest.mark.parametrize("channels_last", [False, True])
def test_grids_fit_cuda_limits_at_8192x8192(launched_grids, channels_last):
    """A batch of 8192x8192 frames needs 65,536 tiles of 1,024 pixels per plane: more than grid
    axis 1 allows. Meta tensors make the launchers compute their grids without any memory."""
    batch, channels, size = 256, 3, 8192
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = torch.empty(batch, channels, size, size, device="meta").contiguous(memory_format=fmt)
    perm = torch.empty(batch, dtype=torch.int64, device="meta")
    lam = torch.empty(batch, device="meta")
    boxes = torch.empty(batch, 4, dtype=torch.int64, device="meta")
    maps = torch.empty(batch, size, size, device="meta")
    shifts = torch.empty(batch, 2, dtype=torch.int64, device="meta")
    triton_blend.mixup_blend(images, perm, lam, torch.float32)
    triton_blend.box_paste(images, perm, boxes, torch.float32)
    triton_blend.box_fill(images, boxes, 0.0, torch.float32)
    triton_mask_blend.sage_mask_blend(images, perm, maps, maps, shifts)
    triton_saliency.saliency_masses(images, perm, lam, torch.ones(5, device="meta") / 5)
    triton_scores.shift_scores(maps, maps, torch.empty(99, 2, dtype=torch.int64, device="meta"))
    kernels = {name for name, _ in launched_grids}
    assert kernels == {"_mixup_kernel", "_box_kernel", "_mask_blend_kernel", "_channel_mean_kernel",
                       "_smooth_kernel", "_normalize_kernel", "_frame_base_kernel", "_scores_kernel"}
    elements = batch * channels * size * size
    for name, grid in launched_grids:
        assert all(g <= limit for g, limit in zip(grid, CUDA_GRID_LIMITS)), (name, grid)
        assert 1 <= len(grid) <= 3 and all(g >= 1 for g in grid), (name, grid)
        if name in ("_mixup_kernel", "_box_kernel", "_mask_blend_kernel"):
            # Every element is covered: programs x elements per program >= elements.
            chunks, block = _launch.element_chunks(images)
            assert grid == (batch * chunks,) and batch * chunks * block >= elements


def test_grid_beyond_cuda_limit_raises():
    with pytest.raises(ValueError, match="grid limit"):
        _launch.sample_grid(2**20, 2**12)
    with pytest.raises(ValueError, match="int32 indexing"):
        _launch.element_chunks(torch.empty(1, 64, 8192, 8192, device="meta"))
    huge_strides = torch.empty(2, 3, 4, 5, device="meta").as_strided((2, 3, 4, 5), (2**33, 2**30, 5, 1))
    with pytest.raises(ValueError, match="int32 indexing"):
        triton_blend.mixup_blend(huge_strides, torch.zeros(2, dtype=torch.int64, device="meta"),
                                 torch.empty(2, device="meta"), torch.float32)


def test_element_chunks_cover_each_layout():
    """channels_last: ceil(C*H*W / 1024) contiguous pieces; NCHW: C planes of ceil(H*W / block) tiles."""
    x = torch.empty(2, 512, 7, 7, device="meta")
    assert _launch.element_chunks(x) == (512, 64)            # one program per channel plane
    cl = x.contiguous(memory_format=torch.channels_last)
    assert _launch.element_chunks(cl) == (25, 1024)          # 25,088 contiguous elements per sample
    assert _launch.element_chunks(torch.empty(4, 3, 32, 32, device="meta")) == (3, 1024)


# --- perm validation ----------------------------------------------------------------------------

def _inputs(batch=3, channels=2, height=5, width=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, channels, height, width, generator=gen)
    g1, g2 = torch.rand(2, batch, height, width, generator=gen)
    return images, g1, g2


@pytest.mark.parametrize("backend", ["pytorch", "triton"])
@pytest.mark.parametrize("bad", [[0, 3, 1], [-1, 0, 1]])
def test_ops_reject_out_of_range_perm(backend, bad):
    images, g1, g2 = _inputs()
    perm = torch.tensor(bad)
    boxes = torch.tensor([[0, 2, 0, 3]] * 3)
    calls = {
        "mixup_blend": lambda: ops.mixup_blend(images, perm, torch.rand(3), backend=backend),
        "box_paste": lambda: ops.box_paste(images, perm, boxes, backend=backend),
        "sage_saliency": lambda: ops.sage_saliency(images, perm, torch.rand(3), 3, 1.0, backend=backend),
        "sage_mask_blend": lambda: ops.sage_mask_blend(images, perm, g1, g2, torch.tensor([[1, 1]] * 3),
                                                       backend=backend),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"perm holds indices outside \[0, 3\)"):
            call()


def test_kernels_clamp_partner_indices():
    """Called directly (no op-level check), a kernel never reads outside the batch: an
    out-of-range partner is clamped into [0, B)."""
    images, g1, g2 = _inputs(seed=1)
    bad, clamped = torch.tensor([7, -4, 1]), torch.tensor([2, 0, 1])
    lam = torch.tensor([0.25, 0.5, 0.75])
    with _launch.poisoned_buffers():
        torch.testing.assert_close(triton_blend.mixup_blend(images, bad, lam, torch.float32),
                                   torch_blend.mixup_blend(images, clamped, lam))
        shifts = torch.tensor([[1, -2], [0, 0], [-3, 4]])
        mixed, _, _ = triton_mask_blend.sage_mask_blend(images, bad, g1, g2, shifts)
        mask, _ = torch_sage.sage_mask(g1, g2, shifts)
        torch.testing.assert_close(mixed, torch_sage.sage_blend(images, clamped, mask, shifts))


# --- NaN semantics: NaN propagates on every path --------------------------------------------------

def test_nan_propagates_in_blends_like_pytorch():
    images, _, _ = _inputs(seed=2)
    images[1, 0, 2, 3] = float("nan")
    perm, lam = torch.tensor([1, 2, 0]), torch.tensor([0.3, 1.0, 0.6])
    boxes = torch.tensor([[0, 5, 0, 6], [0, 1, 0, 1], [1, 4, 2, 5]])
    with _launch.poisoned_buffers():
        pairs = [(triton_blend.mixup_blend(images, perm, lam, torch.float32),
                  torch_blend.mixup_blend(images, perm, lam)),
                 (triton_blend.box_paste(images, perm, boxes, torch.float32),
                  torch_blend.box_paste(images, perm, boxes))]
    for result, expected in pairs:
        assert torch.isnan(expected).any()
        torch.testing.assert_close(result, expected, equal_nan=True)


def test_nan_propagates_in_sage_kernels_like_pytorch():
    images, g1, g2 = _inputs(seed=3)
    g1[0, 1, 1] = float("nan")
    g2[2, 0, 0] = float("nan")
    perm, shifts = torch.tensor([2, 0, 1]), torch.tensor([[0, 0], [1, -1], [-2, 3]])
    with _launch.poisoned_buffers():
        mixed, mask, lam = triton_mask_blend.sage_mask_blend(images, perm, g1, g2, shifts)
        candidates = torch_sage.all_shifts(5, 6)
        scores = triton_scores.shift_scores(g1, g2, candidates)
    e_mask, e_lam = torch_sage.sage_mask(g1, g2, shifts)
    assert torch.isnan(e_mask).any() and torch.isnan(e_lam).any()
    torch.testing.assert_close(mask, e_mask, equal_nan=True)
    torch.testing.assert_close(lam, e_lam, equal_nan=True)
    torch.testing.assert_close(mixed, torch_sage.sage_blend(images, perm, e_mask, shifts), equal_nan=True)
    expected_scores = torch_sage.shift_scores(g1, g2, candidates)
    assert torch.isnan(expected_scores[0]).all()
    torch.testing.assert_close(scores, expected_scores, equal_nan=True, rtol=1e-5, atol=1e-6)


def test_nan_mass_propagates_in_saliency_like_pytorch():
    images, _, _ = _inputs(seed=4)
    mass = torch.tensor([0.3, float("nan"), 0.6])
    perm = torch.tensor([1, 2, 0])
    with _launch.poisoned_buffers():
        g1, g2 = triton_saliency.saliency_masses(images, perm, mass, gaussian_kernel1d(3, 1.0))
    e1, e2 = torch_sage.saliency_masses(images, perm, mass, 3, 1.0)
    assert torch.isnan(e1[1]).all() and torch.isnan(e2[1]).all()
    torch.testing.assert_close(g1, e1, equal_nan=True)
    torch.testing.assert_close(g2, e2, equal_nan=True)


def test_uint8_output_of_nan_is_zero():
    """A NaN weight written as uint8 becomes 0 (the GPU's conversion; the kernels make it explicit)."""
    images = torch.randint(0, 255, (2, 1, 3, 4), dtype=torch.uint8)
    result = triton_blend.mixup_blend(images, torch.tensor([1, 0]), torch.tensor([float("nan"), 0.5]), torch.uint8)
    assert (result[0] == 0).all()
    torch.testing.assert_close(result[1], torch_blend.mixup_blend(images, torch.tensor([1, 0]),
                                                                  torch.tensor([0.5, 0.5]))[1])


# --- element chunking ----------------------------------------------------------------------------

LAYOUTS = ["nchw", "channels_last", "batch_stride", "column_slice"]


def _layout(images, layout):
    if layout == "channels_last":
        return images.contiguous(memory_format=torch.channels_last)
    if layout == "batch_stride":  # dense samples, every other sample of a larger batch
        return torch.cat([images, images.flip(0)], dim=1).view(-1, *images.shape[1:])[::2]
    if layout == "column_slice":
        return torch.cat([images, images[..., :3]], dim=3)[..., 1:images.shape[3] + 1]
    return images


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 40, 7, 7), (3, 5, 20, 21), (2, 3, 33, 40)])
def test_multi_chunk_blends_match_pytorch(shape, layout):
    """Feature maps (many channels, few pixels) and frames whose channels_last range spans
    several chunks; batch-strided and column-sliced inputs."""
    gen = torch.Generator().manual_seed(sum(shape))
    images = _layout(torch.randn(shape, generator=gen), layout)
    batch, _, height, width = shape
    perm = torch.randint(0, batch, (batch,), generator=gen)
    lam = torch.rand(batch, generator=gen)
    boxes = torch.tensor([[1, height - 1, 2, width - 3]] * batch)
    boxes[0] = torch.tensor([0, height, 0, width // 2])
    with _launch.poisoned_buffers():
        mixed = triton_blend.mixup_blend(images, perm, lam, torch.float32)
        pasted = triton_blend.box_paste(images, perm, boxes, torch.float32)
        filled = triton_blend.box_fill(images, boxes, -1.5, torch.float32)
    torch.testing.assert_close(mixed, torch_blend.mixup_blend(images, perm, lam), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pasted, torch_blend.box_paste(images, perm, boxes))
    torch.testing.assert_close(filled, torch_blend.box_fill(images, boxes, -1.5))
    if layout in ("nchw", "channels_last"):
        assert mixed.stride() == images.stride() and pasted.stride() == images.stride()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 40, 7, 7), (3, 5, 20, 21)])
def test_multi_chunk_mask_blend_matches_pytorch(shape, layout):
    gen = torch.Generator().manual_seed(sum(shape) + 1)
    images = _layout(torch.randn(shape, generator=gen), layout)
    batch, _, height, width = shape
    g1, g2 = torch.rand(2, batch, height, width, generator=gen)
    perm = torch.randint(0, batch, (batch,), generator=gen)
    shifts = torch.stack([torch.randint(1 - height, height, (batch,), generator=gen),
                          torch.randint(1 - width, width, (batch,), generator=gen)], dim=1)
    with _launch.poisoned_buffers():
        mixed, mask, lam = triton_mask_blend.sage_mask_blend(images, perm, g1, g2, shifts)
    e_mask, e_lam = torch_sage.sage_mask(g1, g2, shifts)
    torch.testing.assert_close(mask, e_mask, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lam, e_lam, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mixed, torch_sage.sage_blend(images, perm, e_mask, shifts), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_saliency_many_channels_matches_pytorch(layout):
    gen = torch.Generator().manual_seed(9)
    grad = _layout(torch.randn(2, 24, 9, 11, generator=gen), layout)
    perm, mass = torch.tensor([1, 0]), torch.tensor([0.2, 0.7])
    with _launch.poisoned_buffers():
        g1, g2 = triton_saliency.saliency_masses(grad, perm, mass, gaussian_kernel1d(5, 1.3))
    e1, e2 = torch_sage.saliency_masses(grad, perm, mass, 5, 1.3)
    torch.testing.assert_close(g1, e1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g2, e2, rtol=1e-5, atol=1e-7)
