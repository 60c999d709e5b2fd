import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastmix
from helpers import DTYPES, random_images, tolerance


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixup_matches_formula(dtype):
    x = random_images(5, 3, 7, 9, dtype)
    perm = torch.tensor([2, 0, 4, 1, 3])
    lam = torch.tensor([0.1, 0.5, 0.9, 1.0, 0.0])
    result = fastmix.mixup(x, perm=perm, lam=lam)
    weight = lam.double().view(-1, 1, 1, 1)
    expected = weight * x.double() + (1 - weight) * x[perm].double()
    assert result.images.dtype == dtype
    torch.testing.assert_close(result.images.double(), expected, atol=tolerance(dtype) * 8, rtol=tolerance(dtype) * 8)
    assert torch.equal(result.perm, perm) and torch.equal(result.lam, lam)


def test_mixup_uint8_rounds_and_keeps_dtype():
    x = torch.tensor([[[[0, 255]]], [[[255, 1]]]], dtype=torch.uint8)
    result = fastmix.mixup(x, perm=torch.tensor([1, 0]), lam=0.5)
    assert result.images.dtype == torch.uint8
    assert result.images[0, 0, 0].tolist() == [128, 128]  # 127.5 and 128.0, half to even


def test_mixup_keeps_channels_last_and_does_not_modify_input():
    x = random_images(4, 3, 6, 5, memory_format=torch.channels_last)
    before = x.clone()
    result = fastmix.mixup(x, alpha=1.0, generator=torch.Generator().manual_seed(3))
    assert result.images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, before)


def test_mixup_generator_reproducible_and_per_sample_lam():
    x = random_images(6, 3, 4, 4)
    a = fastmix.mixup(x, per_sample=True, generator=torch.Generator().manual_seed(7))
    b = fastmix.mixup(x, per_sample=True, generator=torch.Generator().manual_seed(7))
    c = fastmix.mixup(x, per_sample=False, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.images, b.images) and torch.equal(a.lam, b.lam) and torch.equal(a.perm, b.perm)
    assert len(set(a.lam.tolist())) == 6
    assert len(set(c.lam.tolist())) == 1


def test_mixup_alpha_zero_is_identity_and_gradients_flow():
    x = random_images(3, 2, 4, 4).requires_grad_()
    result = fastmix.mixup(x, alpha=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.lam, torch.ones(3))
    torch.testing.assert_close(result.images, x.detach())
    fastmix.mixup(x, perm=torch.tensor([1, 2, 0]), lam=0.25).images.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # 0.25 own + 0.75 as someone's partner


def test_mixup_targets():
    x = random_images(3, 1, 2, 2)
    result = fastmix.mixup(x, torch.tensor([0, 1, 2]), perm=torch.tensor([1, 2, 0]), lam=0.75)
    targets = result.targets(num_classes=4)
    torch.testing.assert_close(targets[0], torch.tensor([0.75, 0.25, 0.0, 0.0]))
    smoothed = result.targets(num_classes=4, label_smoothing=0.2)
    torch.testing.assert_close(smoothed.sum(1), torch.ones(3))
    torch.testing.assert_close(smoothed[0], 0.8 * torch.tensor([0.75, 0.25, 0.0, 0.0]) + 0.05)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 6), channels=st.integers(1, 4), height=st.integers(1, 9), width=st.integers(1, 9),
       seed=st.integers(0, 10_000))
def test_mixup_property_convex_combination(batch, channels, height, width, seed):
    x = random_images(batch, channels, height, width, seed=seed)
    result = fastmix.mixup(x, per_sample=True, generator=torch.Generator().manual_seed(seed))
    lo = torch.minimum(x, x[result.perm])
    hi = torch.maximum(x, x[result.perm])
    assert bool(((result.images >= lo - 1e-6) & (result.images <= hi + 1e-6)).all())
    assert bool(((result.lam >= 0) & (result.lam <= 1)).all())


@pytest.mark.parametrize("bad, error", [
    (lambda: fastmix.mixup(torch.zeros(3, 4, 4)), ValueError),
    (lambda: fastmix.mixup(torch.zeros(0, 3, 4, 4)), ValueError),
    (lambda: fastmix.mixup(torch.zeros(2, 3, 4, 4, dtype=torch.int32)), TypeError),
    (lambda: fastmix.mixup(torch.ones(2, 3, 4, 4), perm=torch.tensor([0, 2])), ValueError),
    (lambda: fastmix.mixup(torch.ones(2, 3, 4, 4), perm=torch.tensor([0])), ValueError),
    (lambda: fastmix.mixup(torch.ones(2, 3, 4, 4), lam=1.5), ValueError),
    (lambda: fastmix.mixup(torch.ones(2, 3, 4, 4), lam=float("nan")), ValueError),
    (lambda: fastmix.mixup(torch.ones(2, 3, 4, 4), torch.tensor([1, 2, 3])), ValueError),
    (lambda: fastmix.mixup(torch.ones(2, 3, 4, 4), alpha=float("nan")), ValueError),
    (lambda: fastmix.mixup(torch.ones(2, 3, 4, 4), generator=42), TypeError),
])
def test_mixup_bad_input(bad, error):
    with pytest.raises(error):
        bad()


def test_batch_of_one():
    x = random_images(1, 3, 4, 4)
    result = fastmix.mixup(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.perm, torch.tensor([0]))
    torch.testing.assert_close(result.images, x)
