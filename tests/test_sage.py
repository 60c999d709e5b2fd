import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import fastmix
from benchmarks.reference_sage import reference_sage
from fastmix.backends.pytorch import sage as torch_sage
from fastmix.backends.pytorch.gaussian import gaussian_kernel1d, gaussian_smooth
from helpers import random_images


def positive_maps(batch, height, width, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, height, width, generator=gen) + 0.01


def brute_force_scores(g1, g2, shifts):
    """Direct slicing implementation of the score, one shift at a time (float64)."""
    batch, height, width = g1.shape
    g1, g2 = g1.double(), g2.double()
    per_sample = shifts if shifts.dim() == 3 else shifts.expand(batch, -1, -1)
    scores = torch.empty(per_sample.shape[:2], dtype=torch.float64)
    for b in range(batch):
        for k, (dy, dx) in enumerate(per_sample[b].tolist()):
            shifted = torch.zeros(height, width, dtype=torch.float64)
            src = g2[b, max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
            shifted[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
            mask = g1[b] / (g1[b] + shifted).clamp(min=1e-16)
            scores[b, k] = (g1[b] * mask + shifted * (1 - mask)).sum()
    return scores


def test_gaussian_kernel_matches_torchvision_values():
    kernel = gaussian_kernel1d(5, 1.0)
    torch.testing.assert_close(kernel, torch.tensor([0.05448869, 0.24420136, 0.40261996, 0.24420136, 0.05448869]))
    outer = torch.outer(kernel, kernel)
    assert outer[2, 2].item() == pytest.approx(0.16210283, abs=1e-7)
    assert outer[0, 0].item() == pytest.approx(0.00296902, abs=1e-8)


def test_gaussian_smooth_reflect_padding():
    maps = positive_maps(2, 9, 7)
    kernel = torch.outer(gaussian_kernel1d(5, 1.0), gaussian_kernel1d(5, 1.0))
    expected = F.conv2d(F.pad(maps[:, None], (2, 2, 2, 2), mode="reflect"), kernel[None, None])[:, 0]
    torch.testing.assert_close(gaussian_smooth(maps, 5, 1.0), expected)
    torch.testing.assert_close(gaussian_smooth(maps, 1, 1.0), maps)
    with pytest.raises(ValueError, match="reflect"):
        gaussian_smooth(positive_maps(1, 2, 9), 5, 1.0)
    with pytest.raises(ValueError):
        gaussian_kernel1d(4, 1.0)


def test_zero_shift_by_hand():
    x = random_images(2, 3, 5, 5)
    s = positive_maps(2, 5, 5)
    perm = torch.tensor([1, 0])
    result = fastmix.sage_mix(x, saliency=s, kernel_size=1, perm=perm, mass=0.3, shifts=torch.tensor([[0, 0]]))
    g1 = s / s.sum((1, 2), keepdim=True) * 0.3
    g2 = s[perm] / s[perm].sum((1, 2), keepdim=True) * 0.7
    mask = g1 / (g1 + g2)
    torch.testing.assert_close(result.mask[:, 0], mask)
    torch.testing.assert_close(result.lam, mask.mean((1, 2)))
    torch.testing.assert_close(result.images, mask[:, None] * x + (1 - mask[:, None]) * x[perm])
    assert result.shifts.tolist() == [[0, 0], [0, 0]]


def test_shift_moves_partner_content():
    x = torch.zeros(2, 1, 4, 4)
    x[1, 0, 0, 0] = 1.0  # partner pixel at the top-left corner
    s = torch.ones(2, 4, 4)
    result = fastmix.sage_mix(x, saliency=s, kernel_size=1, perm=torch.tensor([1, 0]), mass=0.5,
                              shifts=torch.tensor([[2, 1]]))
    shifted = torch_sage.shift_maps(x[[1, 0]], result.shifts)
    assert shifted[0, 0, 2, 1] == 1.0 and shifted[0, 0].sum() == 1.0
    # shifted-out region: the partner contributes nothing there, so M = 1 and x stays
    assert torch.equal(result.mask[0, 0, :2], torch.ones(2, 4))


def test_pure_one_image_saliency_keeps_the_sample():
    x = random_images(3, 3, 6, 6)
    s = positive_maps(3, 6, 6)
    result = fastmix.sage_mix(x, saliency=s, perm=torch.tensor([1, 2, 0]), mass=1.0, kernel_size=3,
                              generator=torch.Generator().manual_seed(0), rand_pos=0.2)
    torch.testing.assert_close(result.lam, torch.ones(3))
    torch.testing.assert_close(result.images, x)


@pytest.mark.parametrize("side, channels, rand_pos, seed", [(8, 1, 0.2, 0), (12, 3, 0.05, 1), (16, 3, 0.01, 2)])
def test_matches_reference_structure(side, channels, rand_pos, seed):
    gen = torch.Generator().manual_seed(seed)
    batch = 6
    x = torch.randn(batch, channels, side, side, generator=gen)
    blurred = torch.rand(batch, 1, side, side, generator=gen)
    perm = torch.randperm(batch, generator=gen)
    population = (2 * side - 1) ** 2
    flat = torch.randperm(population, generator=gen)[: int(population * rand_pos)]
    ref_x, ref_lam, ref_flat = reference_sage(x, blurred, perm, 0.42, flat)
    ours = fastmix.sage_mix(x, saliency=blurred, kernel_size=1, perm=perm, mass=0.42,
                            shifts=torch_sage.flat_to_shifts(flat, side, side))
    assert torch.equal(flat[ours.extras["best_index"]], ref_flat)
    torch.testing.assert_close(ours.images, ref_x, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(ours.lam, ref_lam, atol=1e-6, rtol=1e-5)


def test_flat_index_convention():
    # k = 0 is (dy, dx) = (1 - H, 1 - W); k = 1 moves dy first (the fast index is the row shift)
    shifts = torch_sage.flat_to_shifts(torch.tensor([0, 1, 2 * 5 - 1]), 5, 5)
    assert shifts.tolist() == [[-4, -4], [-3, -4], [-4, -3]]
    assert torch_sage.all_shifts(3, 2).shape == (5 * 3, 2)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 4), height=st.integers(1, 7), width=st.integers(1, 7), k=st.integers(1, 6),
       per_sample=st.booleans(), seed=st.integers(0, 999))
def test_scores_match_brute_force_any_shape(batch, height, width, k, per_sample, seed):
    g1, g2 = positive_maps(batch, height, width, seed), positive_maps(batch, height, width, seed + 1)
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randint(1 - height, height, (batch if per_sample else 1, k), generator=gen)
    dx = torch.randint(1 - width, width, (batch if per_sample else 1, k), generator=gen)
    shifts = torch.stack([dy, dx], -1)
    shifts = shifts if per_sample else shifts[0]
    scores = torch_sage.shift_scores(g1, g2, shifts, chunk_elements=7)
    torch.testing.assert_close(scores.double(), brute_force_scores(g1, g2, shifts), rtol=1e-5, atol=1e-6)


def test_exhaustive_search_non_square_picks_global_best():
    x = random_images(3, 2, 5, 8)
    s = positive_maps(3, 5, 8, seed=3)
    result = fastmix.sage_mix(x, saliency=s, kernel_size=3, search="exhaustive", perm=torch.tensor([2, 0, 1]),
                              mass=0.4)
    assert result.extras["candidates"].shape == (9 * 15, 2)
    smoothed = gaussian_smooth(s, 3, 1.0)
    g1, g2 = torch_sage.normalize_masses(smoothed, torch.tensor([2, 0, 1]), torch.full((3,), 0.4))
    brute = brute_force_scores(g1, g2, torch_sage.all_shifts(5, 8))
    assert torch.equal(result.shifts, torch_sage.all_shifts(5, 8)[brute.argmax(1)])
    assert result.images.shape == x.shape


def test_default_candidate_set_is_reference_sized_and_shared():
    x = random_images(4, 3, 32, 32)
    result = fastmix.sage_mix(x, saliency=positive_maps(4, 32, 32), generator=torch.Generator().manual_seed(0))
    assert result.extras["candidates"].shape == (39, 2)  # int(63 * 63 * 0.01)
    per_sample = fastmix.sage_mix(x, saliency=positive_maps(4, 32, 32), per_sample_shifts=True,
                                  generator=torch.Generator().manual_seed(0))
    candidates = per_sample.extras["candidates"]
    assert candidates.shape == (4, 39, 2)
    for row in candidates:
        assert len({tuple(v) for v in row.tolist()}) == 39


def test_grad_input_equals_saliency_of_mean_abs():
    x = random_images(3, 3, 8, 8)
    grad = random_images(3, 3, 8, 8, seed=5)
    kwargs = dict(perm=torch.tensor([1, 2, 0]), mass=0.5, rand_pos=0.1)
    a = fastmix.sage_mix(x, grad=grad, generator=torch.Generator().manual_seed(1), **kwargs)
    b = fastmix.sage_mix(x, saliency=grad.abs().mean(1, keepdim=True), generator=torch.Generator().manual_seed(1),
                         **kwargs)
    assert torch.equal(a.images, b.images) and torch.equal(a.shifts, b.shifts)


def test_reproducible_with_generator_and_mass_draw():
    x, s = random_images(5, 3, 8, 8), positive_maps(5, 8, 8)
    a = fastmix.sage_mix(x, saliency=s, upper_lambda=0.6, generator=torch.Generator().manual_seed(9), rand_pos=0.1)
    b = fastmix.sage_mix(x, saliency=s, upper_lambda=0.6, generator=torch.Generator().manual_seed(9), rand_pos=0.1)
    assert torch.equal(a.images, b.images) and torch.equal(a.perm, b.perm)
    mass = a.extras["mass"]
    assert bool((mass <= 0.6).all()) and len(set(mass.tolist())) == 1
    per = fastmix.sage_mix(x, saliency=s, per_sample_mass=True, generator=torch.Generator().manual_seed(9),
                           rand_pos=0.1)
    assert len(set(per.extras["mass"].tolist())) == 5


def test_chunking_does_not_change_scores():
    x, s = random_images(5, 3, 9, 9), positive_maps(5, 9, 9)
    kwargs = dict(saliency=s, perm=torch.tensor([4, 3, 2, 1, 0]), mass=0.3, search="exhaustive")
    small = fastmix.sage_mix(x, chunk_elements=50, **kwargs)
    large = fastmix.sage_mix(x, **kwargs)
    torch.testing.assert_close(small.extras["scores"], large.extras["scores"])
    assert torch.equal(small.shifts, large.shifts)


def test_zero_saliency_falls_back_to_uniform():
    x = random_images(2, 3, 6, 6)
    s = positive_maps(2, 6, 6)
    s[1] = 0.0
    result = fastmix.sage_mix(x, saliency=s, kernel_size=1, perm=torch.tensor([1, 0]), mass=0.5,
                              shifts=torch.tensor([[0, 0]]))
    uniform = s.clone()
    uniform[1] = 1.0
    expected = fastmix.sage_mix(x, saliency=uniform, kernel_size=1, perm=torch.tensor([1, 0]), mass=0.5,
                                shifts=torch.tensor([[0, 0]]))
    assert bool(torch.isfinite(result.images).all())
    torch.testing.assert_close(result.images, expected.images)


def test_mixed_images_are_differentiable_wrt_sample_and_partner():
    x = random_images(3, 2, 5, 5, dtype=torch.float64).requires_grad_()
    s = positive_maps(3, 5, 5).double()
    shifts = torch.tensor([[1, -2]])

    def mix(inp):
        return fastmix.sage_mix(inp, saliency=s, kernel_size=1, perm=torch.tensor([1, 2, 0]), mass=0.5,
                                shifts=shifts).images

    assert torch.autograd.gradcheck(mix, (x,))


def test_batch_of_one_and_channels_last():
    x = random_images(1, 3, 6, 6, memory_format=torch.channels_last)
    result = fastmix.sage_mix(x, saliency=positive_maps(1, 6, 6), rand_pos=0.1,
                              generator=torch.Generator().manual_seed(0))
    assert result.perm.tolist() == [0]
    assert result.images.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images(dtype):
    x = random_images(3, 3, 8, 8)
    s = positive_maps(3, 8, 8)
    kwargs = dict(saliency=s, perm=torch.tensor([1, 2, 0]), mass=0.5, search="exhaustive")
    full = fastmix.sage_mix(x, **kwargs)
    half = fastmix.sage_mix(x.to(dtype), **kwargs)
    assert half.images.dtype == dtype
    torch.testing.assert_close(half.images.float(), full.images, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(), ValueError, "exactly one"),
    (dict(saliency=torch.ones(2, 6, 6), grad=torch.ones(2, 3, 6, 6)), ValueError, "exactly one"),
    (dict(saliency=torch.ones(2, 5, 6)), ValueError, "shape"),
    (dict(grad=torch.ones(2, 3, 6, 5)), ValueError, "shape"),
    (dict(saliency=torch.full((2, 6, 6), float("nan"))), ValueError, "NaN"),
    (dict(saliency=-torch.ones(2, 6, 6)), ValueError, "non-negative"),
    (dict(saliency=torch.ones(2, 6, 6, dtype=torch.long)), TypeError, "float"),
    (dict(saliency=torch.ones(2, 6, 6), rand_pos=0.001), ValueError, "K >= 1"),
    (dict(saliency=torch.ones(2, 6, 6), shifts=torch.tensor([[6, 0]])), ValueError, r"\|dy\|"),
    (dict(saliency=torch.ones(2, 6, 6), shifts=torch.zeros(0, 2, dtype=torch.long)), ValueError, "K >= 1"),
    (dict(saliency=torch.ones(2, 6, 6), shifts=torch.zeros(1, 2)), TypeError, "integer"),
    (dict(saliency=torch.ones(2, 6, 6), mass=1.5), ValueError, "mass"),
    (dict(saliency=torch.ones(2, 6, 6), search="greedy"), ValueError, "search"),
    (dict(saliency=torch.ones(2, 6, 6), upper_lambda=2.0), ValueError, "upper_lambda"),
])
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastmix.sage_mix(random_images(2, 3, 6, 6), **kwargs)


def test_uint8_and_empty_batch_rejected():
    with pytest.raises(TypeError):
        fastmix.sage_mix(torch.zeros(2, 3, 6, 6, dtype=torch.uint8), saliency=torch.ones(2, 6, 6))
    with pytest.raises(ValueError, match="empty"):
        fastmix.sage_mix(torch.zeros(0, 3, 6, 6), saliency=torch.ones(0, 6, 6))


def test_input_not_modified():
    x = random_images(3, 3, 8, 8)
    s = positive_maps(3, 8, 8)
    x0, s0 = x.clone(), s.clone()
    fastmix.sage_mix(x, saliency=s, generator=torch.Generator().manual_seed(0), rand_pos=0.1)
    assert torch.equal(x, x0) and torch.equal(s, s0)
