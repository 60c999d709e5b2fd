"""Triton SAGE kernels (saliency prep, shift scores, mask + blend) against the PyTorch path.

Kernels run under TRITON_INTERPRET=1 without CUDA (tests/conftest.py), on tiny random inputs:
odd sizes, H != W, B = 1, K = 1, frames smaller than a tile and larger than one. Every buffer a
kernel writes is poisoned first (NaN), so an element it skips fails the comparison.

Tolerances. Maps, scores, masks and lam are float32 (float64 for float64 input) and match to
1e-5 relative (float64: 1e-12): the kernels sum in a different order (tiles, the separable
blur) and the score kernel evaluates score = base + sum over the overlap of t(t-g)/max(g+t, eps)
instead of summing f(g, t) over the whole frame (the same quantity, see
fastmix/backends/triton/scores.py). Mixed images match to float32 rounding (float16 /
bfloat16: one ulp of the image dtype).

Near ties. Two candidates whose scores differ by less than the summation rounding may swap
places, so the chosen index is only required to be identical when the oracle's best score beats
every other candidate by more than TIE_RTOL relative; otherwise the kernel's choice must score
within TIE_RTOL of the oracle's best (under the oracle). The scores themselves are always
compared.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fastmix import sage_mix
from fastmix.backends.pytorch import sage as torch_sage
from fastmix.backends.pytorch.gaussian import gaussian_kernel1d
from fastmix.backends.triton import _launch
from fastmix.backends.triton import mask_blend as triton_mask_blend
from fastmix.backends.triton import saliency as triton_saliency
from fastmix.backends.triton import scores as triton_scores

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)
TIE_RTOL = 1e-5


def map_rtol(dtype: torch.dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 1e-5


def random_masses(batch, height, width, seed, dtype=torch.float32, kernel_size=3):
    """Realistic G1, G2: smoothed |random gradient| normalised to masses a, 1 - a."""
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(batch, 3, height, width, generator=gen, dtype=torch.float64).to(dtype)
    perm = torch.randperm(batch, generator=gen)
    mass = torch.rand(batch, generator=gen)
    kernel_size = kernel_size if kernel_size // 2 < min(height, width) else 1
    return torch_sage.saliency_masses(grad, perm, mass, kernel_size, 1.0)


def check_best(best, expected_best, oracle_scores):
    """Identical choice unless the oracle's top two are within TIE_RTOL (module docstring)."""
    for b in range(oracle_scores.shape[0]):
        row = oracle_scores[b].double()
        top = row.max()
        if best[b] == expected_best[b]:
            continue
        assert row[best[b]] >= top - TIE_RTOL * top.abs(), (
            f"sample {b}: kernel chose {int(best[b])} (score {float(row[best[b]])}), "
            f"oracle {int(expected_best[b])} (score {float(top)}): not a near tie")


# --- saliency prep ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@SETTINGS
@given(batch=st.integers(1, 3), channels=st.integers(1, 3), height=st.integers(1, 11),
       width=st.integers(1, 11), kernel_size=st.sampled_from([1, 3, 5, 7]),
       sigma=st.floats(0.3, 3.0), channels_last=st.booleans(), seed=st.integers(0, 2**16))
def test_saliency_prep_matches_pytorch(dtype, batch, channels, height, width, kernel_size, sigma,
                                       channels_last, seed):
    assume(kernel_size // 2 < min(height, width))
    gen = torch.Generator().manual_seed(seed)
    grad = torch.randn(batch, channels, height, width, generator=gen).to(dtype)
    if batch > 1:
        grad[1] = 0  # an all-zero map is made uniform
    if channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    perm = torch.randint(0, batch, (batch,), generator=gen)
    mass = torch.rand(batch, generator=gen)
    mass[0] = 0.0  # exercises the 1e-12 mass clamp
    weights = gaussian_kernel1d(kernel_size, sigma, torch.float64 if dtype == torch.float64 else torch.float32)
    with _launch.poisoned_buffers():
        g1, g2 = triton_saliency.saliency_masses(grad, perm, mass, weights)
    e1, e2 = torch_sage.saliency_masses(grad, perm, mass, kernel_size, sigma)
    assert g1.dtype == e1.dtype and g1.shape == e1.shape
    rtol = map_rtol(dtype)
    torch.testing.assert_close(g1, e1, rtol=rtol, atol=rtol * float(e1.abs().max()))
    torch.testing.assert_close(g2, e2, rtol=rtol, atol=rtol * float(e2.abs().max()))


def test_saliency_prep_nan_propagates():
    """NaN in the gradient must reach G1 (the operator raises on it), not become a uniform map."""
    grad = torch.rand(2, 3, 6, 6)
    grad[0, 1, 2, 2] = float("nan")
    g1, _ = triton_saliency.saliency_masses(grad, torch.tensor([1, 0]), torch.tensor([0.4, 0.4]),
                                            gaussian_kernel1d(3, 1.0))
    assert torch.isnan(g1[0]).any() and torch.isfinite(g1[1]).all()


# --- shift scores -------------------------------------------------------------------------------

def run_scores(g1, g2, shifts):
    with _launch.poisoned_buffers():
        scores = triton_scores.shift_scores(g1, g2, shifts)
    expected = torch_sage.shift_scores(g1, g2, shifts)
    rtol = map_rtol(g1.dtype)
    torch.testing.assert_close(scores, expected, rtol=rtol, atol=rtol * float(expected.abs().max()))
    check_best(scores.argmax(dim=1), expected.argmax(dim=1), expected)
    return scores


@SETTINGS
@given(batch=st.integers(1, 3), height=st.integers(1, 12), width=st.integers(1, 12),
       candidates=st.integers(1, 12), per_sample=st.booleans(), seed=st.integers(0, 2**16))
def test_scores_match_pytorch(batch, height, width, candidates, per_sample, seed):
    g1, g2 = random_masses(batch, height, width, seed)
    gen = torch.Generator().manual_seed(seed + 7)
    population = (2 * height - 1) * (2 * width - 1)
    rows = batch if per_sample else 1
    flat = torch.stack([torch.randperm(population, generator=gen)[:candidates] for _ in range(rows)])
    shifts = torch_sage.flat_to_shifts(flat, height, width)
    run_scores(g1, g2, shifts if per_sample else shifts[0])


@pytest.mark.parametrize("height,width", [(1, 1), (2, 5), (5, 3), (4, 4)])
def test_exhaustive_scores_match_pytorch(height, width):
    g1, g2 = random_masses(2, height, width, seed=height * 10 + width)
    run_scores(g1, g2, torch_sage.all_shifts(height, width))


def test_single_sample_single_candidate():
    g1, g2 = random_masses(1, 7, 3, seed=8)
    run_scores(g1, g2, torch.tensor([[-2, 1]]))
    run_scores(g1, g2, torch.tensor([[[6, -2]]]))


def test_scores_float64():
    g1, g2 = random_masses(2, 5, 7, seed=3, dtype=torch.float64)
    scores = run_scores(g1, g2, torch_sage.all_shifts(5, 7)[::3])
    assert scores.dtype == torch.float64


def test_scores_multi_tile_frame():
    """A frame wider than 32 and taller than 32 spans several BH x BW tiles per candidate."""
    g1, g2 = random_masses(1, 35, 70, seed=5)
    assert triton_scores.tile_shape(35, 70) == (32, 32)
    shifts = torch.tensor([[0, 0], [3, -5], [-34, 69], [20, 40], [-1, -33]])
    run_scores(g1, g2, shifts)


def test_scores_with_zero_saliency_regions():
    """Zero pixels in both maps hit the max(g + t, 1e-16) clamp: scores still match."""
    g1, g2 = random_masses(2, 6, 6, seed=9, kernel_size=1)
    g1[:, :3] = 0
    g2[:, :, 2:] = 0
    run_scores(g1, g2, torch_sage.all_shifts(6, 6))


def test_first_maximum_wins_exact_ties():
    """Uniform maps with t = 3g: every overlap pixel adds exactly 1.5 g (all sums are exact in
    binary), so shifts of equal overlap tie exactly and the lowest candidate index must win."""
    g = 2.0 ** -7
    g1 = torch.full((1, 4, 4), g)
    g2 = torch.full((1, 4, 4), 3 * g)
    shifts = torch.tensor([[2, 0], [0, 1], [1, 0], [-1, 0], [0, -3]])
    for scores in (triton_scores.shift_scores(g1, g2, shifts), torch_sage.shift_scores(g1, g2, shifts)):
        assert scores[0, 1] == scores[0, 2] == scores[0, 3] > scores[0, 0]
        assert int(scores.argmax(dim=1)) == 1


# --- coarse to fine -----------------------------------------------------------------------------

def test_coarse_to_fine_kernel_matches_pytorch():
    g1, g2 = random_masses(2, 13, 10, seed=11)
    cand, scores, best = torch_sage.coarse_to_fine(g1, g2, triton_scores.shift_scores, side=4, top=2)
    e_cand, e_scores, e_best = torch_sage.coarse_to_fine(g1, g2, side=4, top=2)
    # Coarse near-ties could reorder the refined neighbourhoods; these inputs have none.
    assert torch.equal(cand, e_cand)
    torch.testing.assert_close(scores, e_scores, rtol=1e-5, atol=1e-6)
    check_best(best, e_best, e_scores)


def test_coarse_to_fine_candidates():
    g1, g2 = random_masses(3, 20, 17, seed=2)
    cand, scores, best = torch_sage.coarse_to_fine(g1, g2, side=5, top=3)
    factor = torch_sage.coarse_factor(20, 17, side=5)
    assert factor == 4 and cand.shape == (3, 3 * (2 * factor + 1) ** 2, 2)
    assert bool((cand[..., 0].abs() < 20).all() and (cand[..., 1].abs() < 17).all())
    assert torch.equal(best, scores.argmax(dim=1))
    # Small frames: the exhaustive search, exactly.
    cand_small, scores_small, _ = torch_sage.coarse_to_fine(g1[:, :5, :5], g2[:, :5, :5], side=8)
    assert torch.equal(cand_small, torch_sage.all_shifts(5, 5))
    torch.testing.assert_close(scores_small, torch_sage.shift_scores(g1[:, :5, :5], g2[:, :5, :5],
                                                                      torch_sage.all_shifts(5, 5)))


def test_coarse_to_fine_finds_a_near_best_shift():
    """Smooth blob maps: the refined best scores within 1% of the exhaustive optimum (it can
    never beat it: its candidates are a subset)."""
    size = 24
    rows = torch.arange(size, dtype=torch.float32)
    def blob(cy, cx, spread):
        return torch.exp(-((rows[:, None] - cy) ** 2 + (rows[None, :] - cx) ** 2) / (2 * spread ** 2))
    s1 = torch.stack([blob(6, 7, 3) + 0.2 * blob(18, 18, 2), blob(12, 4, 4)])
    s2 = torch.stack([blob(15, 16, 3), blob(5, 20, 2) + blob(20, 6, 3)])
    g1 = s1 / s1.sum(dim=(1, 2), keepdim=True) * torch.tensor([0.3, 0.45])[:, None, None]
    g2 = s2 / s2.sum(dim=(1, 2), keepdim=True) * torch.tensor([0.7, 0.55])[:, None, None]
    _, scores, best = torch_sage.coarse_to_fine(g1, g2, side=6)
    exhaustive = torch_sage.shift_scores(g1, g2, torch_sage.all_shifts(size, size)).max(dim=1).values
    found = scores.gather(1, best[:, None])[:, 0]
    assert bool((found <= exhaustive + 1e-6).all())
    assert bool((found >= 0.99 * exhaustive).all()), (found, exhaustive)


# --- mask + blend -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@SETTINGS
@given(batch=st.integers(1, 3), channels=st.integers(1, 4), height=st.integers(1, 12),
       width=st.integers(1, 12), channels_last=st.booleans(), seed=st.integers(0, 2**16))
def test_mask_blend_matches_pytorch(dtype, batch, channels, height, width, channels_last, seed):
    g1, g2 = random_masses(batch, height, width, seed)
    gen = torch.Generator().manual_seed(seed + 3)
    images = torch.randn(batch, channels, height, width, generator=gen).to(dtype)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    perm = torch.randint(0, batch, (batch,), generator=gen)
    shifts = torch.stack([torch.randint(1 - height, height, (batch,), generator=gen),
                          torch.randint(1 - width, width, (batch,), generator=gen)], dim=1)
    with _launch.poisoned_buffers():
        mixed, mask, lam = triton_mask_blend.sage_mask_blend(images, perm, g1, g2, shifts)
    e_mask, e_lam = torch_sage.sage_mask(g1, g2, shifts)
    e_mixed = torch_sage.sage_blend(images, perm, e_mask, shifts)
    torch.testing.assert_close(mask, e_mask, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lam, e_lam, rtol=1e-6, atol=1e-6)
    assert mixed.dtype == dtype and mixed.stride() == e_mixed.stride()
    tol = torch.finfo(dtype).eps if dtype in (torch.float16, torch.bfloat16) else 1e-6
    torch.testing.assert_close(mixed.double(), e_mixed.double(), rtol=tol, atol=tol * 4)


def test_mask_blend_non_dense_images():
    g1, g2 = random_masses(2, 5, 6, seed=6)
    images = torch.randn(2, 3, 5, 12)[:, :, :, 4:10]
    assert not _launch.dense_rows(images)
    perm, shifts = torch.tensor([1, 1]), torch.tensor([[2, -3], [-4, 5]])
    with _launch.poisoned_buffers():
        mixed, _, _ = triton_mask_blend.sage_mask_blend(images, perm, g1, g2, shifts)
    e_mask, _ = torch_sage.sage_mask(g1, g2, shifts)
    torch.testing.assert_close(mixed, torch_sage.sage_blend(images, perm, e_mask, shifts), rtol=1e-6, atol=1e-6)


def test_mask_blend_multi_tile_and_float64_maps():
    g1, g2 = random_masses(2, 33, 40, seed=4, dtype=torch.float64)
    images = torch.randn(2, 2, 33, 40, dtype=torch.float64)
    shifts = torch.tensor([[5, -7], [-32, 39]])
    perm = torch.tensor([1, 0])
    with _launch.poisoned_buffers():
        mixed, mask, lam = triton_mask_blend.sage_mask_blend(images, perm, g1, g2, shifts)
    e_mask, e_lam = torch_sage.sage_mask(g1, g2, shifts)
    torch.testing.assert_close(mask, e_mask, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lam, e_lam, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mixed, torch_sage.sage_blend(images, perm, e_mask, shifts), rtol=1e-12, atol=1e-12)


# --- the whole operator -------------------------------------------------------------------------

@pytest.mark.parametrize("search,per_sample_shifts", [("random", False), ("random", True), ("exhaustive", False)])
def test_sage_mix_triton_matches_pytorch(search, per_sample_shifts):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 6, 7, generator=gen)
    grad = torch.randn(3, 3, 6, 7, generator=gen)
    results = [sage_mix(x, grad=grad, rand_pos=0.1, search=search, per_sample_shifts=per_sample_shifts,
                        generator=torch.Generator().manual_seed(5), backend=backend)
               for backend in ("pytorch", "triton")]
    expected, result = results
    torch.testing.assert_close(result.extras["scores"], expected.extras["scores"], rtol=1e-5, atol=1e-6)
    check_best(result.extras["best_index"], expected.extras["best_index"], expected.extras["scores"])
    # These inputs have no near ties, so the same shifts must be chosen and the mixes agree.
    assert torch.equal(result.shifts, expected.shifts)
    torch.testing.assert_close(result.images, expected.images, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.lam, expected.lam, rtol=1e-5, atol=1e-6)
