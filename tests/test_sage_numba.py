"""SAGE's fused numba CPU pipeline (fastmix.backends.numba.sage, _sage_kernels) against the
PyTorch path: the saliency prep, the scores + first-max kernel and the whole operator, on random
inputs of many shapes (B=1, odd and 1-pixel sizes), poisoned outputs, float32 and float64."""
import numpy as np
import pytest
import torch

pytest.importorskip("numba")

import fastmix  # noqa: E402
from fastmix.backends import numba as numba_backend  # noqa: E402
from fastmix.backends.numba import _sage_kernels as sk  # noqa: E402
from fastmix.backends.numba import sage as ns  # noqa: E402
from fastmix.backends.pytorch import sage as ts  # noqa: E402
from fastmix.backends.pytorch.gaussian import gaussian_kernel1d  # noqa: E402
from fastmix.operators.sage import scale_free  # noqa: E402

pytestmark = pytest.mark.skipif(not numba_backend.available(), reason="numba does not import here")

TOL = {torch.float32: {"rtol": 2e-5, "atol": 1e-7}, torch.float64: {"rtol": 1e-12, "atol": 1e-15}}
# (B, C, H, W, kernel_size)
PREP_CASES = [(1, 1, 1, 1, 1), (1, 3, 5, 5, 5), (2, 3, 7, 4, 3), (3, 1, 13, 17, 5), (4, 2, 9, 6, 5),
              (5, 3, 32, 31, 5), (2, 1, 1, 9, 1), (3, 3, 6, 11, 7)]


def _draws(batch, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(batch, generator=gen), torch.rand(batch, generator=gen) * 0.9 + 0.05


def _poisoned_prep(source, perm, mass, kernel_size, sigma, check_negative):
    """sage_prep on NaN-poisoned outputs (the wrapper allocates fresh ones)."""
    batch, _, height, width = source.shape
    dtype = source.dtype
    weights = (torch.ones(1, dtype=dtype) if kernel_size == 1 else gaussian_kernel1d(kernel_size, sigma, dtype))
    unit, g1, g2 = (torch.full((batch, height, width), float("nan"), dtype=dtype) for _ in range(3))
    flags = np.full(batch, -1, dtype=np.int64)
    sk.sage_prep(source.contiguous().numpy(), check_negative, perm.numpy(), mass.to(dtype).numpy(),
                 weights.numpy(), unit.numpy(), g1.numpy(), g2.numpy(), flags)
    return g1, g2, flags


@pytest.mark.parametrize("case", PREP_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prep_matches_pytorch(case, dtype):
    batch, channels, height, width, kernel_size = case
    gen = torch.Generator().manual_seed(sum(case))
    grad = (torch.randn(batch, channels, height, width, generator=gen) * 1e-3).to(dtype)
    if batch > 2:
        grad[1] = 0.0  # an all-zero gradient: a uniform map
        grad[2] *= 2.0 ** 70  # huge: the power-of-two rescale keeps the float32 sums finite
    perm, mass = _draws(batch, sum(case))
    want1, want2 = ts.saliency_masses(scale_free(grad), perm, mass, kernel_size, 1.3)
    got1, got2, flags = _poisoned_prep(grad, perm, mass, kernel_size, 1.3, False)
    assert not flags.any()
    torch.testing.assert_close(got1, want1, **TOL[dtype])
    torch.testing.assert_close(got2, want2, **TOL[dtype])
    w1, w2, wflags = ns.saliency_masses(grad, perm, mass, kernel_size, 1.3)
    assert torch.equal(w1, got1) and torch.equal(w2, got2) and not wflags.any()
    assert w1.dtype == dtype


def test_prep_scale_is_exact_and_flags():
    gen = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 1, 9, 8, generator=gen)
    perm, mass = _draws(4, 0)
    base = ns.saliency_masses(maps, perm, mass, 5, 1.0, check_negative=True)
    scaled = ns.saliency_masses(maps * 2.0 ** -100, perm, mass, 5, 1.0, check_negative=True)
    assert torch.equal(base[0], scaled[0]) and torch.equal(base[1], scaled[1])
    bad = maps.clone()
    bad[1, 0, 3, 2] = -0.5
    bad[2, 0, 0, 0] = float("nan")
    bad[3, 0, 8, 7] = float("inf")
    _, _, flags = _poisoned_prep(bad, perm, mass, 5, 1.0, True)
    assert flags.tolist() == [0, sk.NEGATIVE, sk.NON_FINITE, sk.NON_FINITE]
    _, _, flags = _poisoned_prep(bad, perm, mass, 5, 1.0, False)  # a gradient may be negative
    assert flags.tolist() == [0, 0, sk.NON_FINITE, sk.NON_FINITE]
    with pytest.raises(ValueError, match="non-negative"):
        ns.raise_on_flags(np.array([0, sk.NON_FINITE, sk.NEGATIVE]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        ns.raise_on_flags(np.array([0, sk.NON_FINITE]))
    ns.raise_on_flags(np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 5, 5), (3, 7, 5), (4, 16, 13), (2, 1, 9)])
def test_scores_best_matches_pytorch(dtype, shape):
    batch, height, width = shape
    gen = torch.Generator().manual_seed(sum(shape) + 1)
    g1 = torch.rand(shape, generator=gen, dtype=dtype)
    g2 = torch.rand(shape, generator=gen, dtype=dtype)
    if height * width > 1:
        g1[0, 0, 0] = 0.0  # the eps clamp
    g1 = g1 / g1.sum(dim=(1, 2), keepdim=True) * 0.3
    g2 = g2 / g2.sum(dim=(1, 2), keepdim=True) * 0.7
    shared = ts.all_shifts(height, width)
    per_sample = shared[torch.randint(0, shared.shape[0], (batch, 7), generator=gen)]
    for shifts in (shared, per_sample, shared[torch.randperm(shared.shape[0], generator=gen)[:3]]):
        candidates = shifts.shape[-2]
        scores = torch.full((batch, candidates), float("nan"), dtype=dtype)
        best = torch.full((batch,), -7, dtype=torch.int64)
        solo = np.full((batch, height, width), np.nan, dtype=g1.numpy().dtype)
        shifts3 = (shifts[None] if shifts.dim() == 2 else shifts).contiguous()
        sk.sage_scores_best(g1.numpy(), g2.numpy(), shifts3.numpy(), g1.numpy().dtype.type(1e-16), solo,
                            np.full(batch, np.nan), np.full((batch, candidates), np.nan), scores.numpy(), best.numpy())
        want = ts.shift_scores(g1, g2, shifts)
        torch.testing.assert_close(scores, want, **TOL[dtype])
        assert torch.equal(best, scores.argmax(dim=1))  # torch.argmax: the first maximum
        wrapped, wrapped_best = ns.scores_and_best(g1, g2, shifts)
        assert torch.equal(wrapped, scores) and torch.equal(wrapped_best, best)


# (B, C, H, W), saliency given as a map (True) or a gradient, kernel_size, channels_last, dtype
MIX_CASES = [((1, 3, 8, 8), True, 1, False, torch.float32), ((2, 1, 5, 5), False, 5, False, torch.float32),
             ((3, 3, 12, 12), True, 5, True, torch.float32), ((4, 3, 9, 9), False, 3, True, torch.float64),
             ((6, 2, 16, 16), False, 5, False, torch.float64), ((5, 3, 1, 1), True, 1, False, torch.float32),
             ((7, 3, 33, 33), False, 5, False, torch.float32)]


@pytest.mark.parametrize("case", MIX_CASES, ids=str)
def test_sage_mix_numba_pipeline_matches_pytorch(case):
    shape, as_map, kernel_size, channels_last, dtype = case
    batch, channels, height, width = shape
    gen = torch.Generator().manual_seed(batch * 31 + height)
    x = torch.randn(shape, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    source = {"saliency": torch.rand(batch, height, width, generator=gen).to(dtype)} if as_map else \
        {"grad": torch.randn(shape, generator=gen).to(dtype)}
    kw = dict(source, kernel_size=kernel_size, perm=torch.randperm(batch, generator=gen), mass=0.35,
              rand_pos=1.0 if height * width == 1 else 0.3, generator=torch.Generator().manual_seed(5))
    ours = fastmix.sage_mix(x, backend="numba", **kw)
    kw["generator"] = torch.Generator().manual_seed(5)
    oracle = fastmix.sage_mix(x, backend="pytorch", **kw)
    assert ours.images.dtype == x.dtype and ours.images.stride() == x.stride()
    assert torch.equal(ours.extras["candidates"], oracle.extras["candidates"])
    torch.testing.assert_close(ours.extras["scores"], oracle.extras["scores"], **TOL[dtype])
    scores = oracle.extras["scores"]
    same = ours.extras["best_index"] == oracle.extras["best_index"]
    # A different pick only where two candidates tie to float rounding.
    torch.testing.assert_close(scores.gather(1, ours.extras["best_index"][:, None])[~same],
                               scores.amax(1, keepdim=True)[~same], **TOL[dtype])
    assert same.float().mean() > 0.5
    torch.testing.assert_close(ours.images[same], oracle.images[same], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.mask[same], oracle.mask[same], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.lam[same], oracle.lam[same], rtol=1e-5, atol=1e-7)


def test_sage_mix_numba_pipeline_errors_and_grad():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 10, 10, generator=gen)
    saliency = torch.rand(3, 10, 10, generator=gen)
    bad = saliency.clone()
    bad[1, 2, 3] = -1.0
    with pytest.raises(ValueError, match="non-negative"):
        fastmix.sage_mix(x, saliency=bad, backend="numba")
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fastmix.sage_mix(x, saliency=bad, backend="numba")
    grad = torch.randn(3, 3, 10, 10, generator=gen)
    grad[0, 1, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        fastmix.sage_mix(x, grad=grad, backend="numba")
    with pytest.raises(ValueError, match="kernel_size"):
        fastmix.sage_mix(x, saliency=saliency, kernel_size=4, backend="numba")
    with pytest.raises(ValueError, match="reflect"):
        fastmix.sage_mix(x[:, :, :2, :2], saliency=saliency[:, :2, :2], kernel_size=5, rand_pos=1.0,
                         backend="numba")
    # x requiring grad: the blend goes through the custom op and its backward
    perm = torch.tensor([2, 0, 1])
    grads = []
    for backend in ("numba", "pytorch"):
        leaf = x.clone().requires_grad_(True)
        out = fastmix.sage_mix(leaf, saliency=saliency, perm=perm, mass=0.4, shifts=torch.tensor([[1, -2]]),
                               backend=backend)
        (out.images * torch.linspace(-1, 1, out.images.numel()).view_as(out.images)).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
    assert x.grad is None and bool(torch.isfinite(saliency).all())  # inputs untouched


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [(2, 3, 100, 90), (3, 1, 7, 5), (1, 4, 130, 33), (2, 3, 1, 200)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mask_blend_parallel_row_blocks_match_pytorch(shape, channels_last, dtype, monkeypatch):
    """The parallel kernels (row blocks of about 16k elements, several per sample here), forced
    on small batches, against the PyTorch path: bit-identical images and mask."""
    from fastmix.backends.numba import blend as nb

    monkeypatch.setattr(nb, "SERIAL_MAX_ELEMENTS", 0)
    batch, _, height, width = shape
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 2).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    perm = torch.randperm(batch, generator=gen)
    g1 = torch.rand(batch, height, width, generator=gen)
    g2 = torch.rand(batch, height, width, generator=gen)
    g1[0, 0, :3] = 0.0  # the eps clamp where the partner is shifted out
    shifts = torch.stack([torch.randint(-height + 1, height, (batch,), generator=gen),
                          torch.randint(-width + 1, width, (batch,), generator=gen)], dim=1)
    shifts[0] = torch.tensor([height // 3, -(width // 4)])
    if batch > 1:  # the partner shifted out of the frame entirely (the kernels take any shift)
        shifts[-1] = torch.tensor([height + 1, 2])
    mask, lam = ts.sage_mask(g1, g2, shifts)
    expected = ts.sage_blend(x, perm, mask, shifts)
    out = torch.full_like(x, float("nan"))
    mixed, got_mask, got_lam = nb.sage_mask_blend(x, perm, g1, g2, shifts, out=out)
    assert mixed.data_ptr() == out.data_ptr() and mixed.stride() == x.stride()
    assert torch.equal(mixed, expected)
    assert torch.equal(got_mask, mask)
    torch.testing.assert_close(got_lam, lam, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("serial", [True, False], ids=["serial", "parallel"])
def test_prep_serial_and_parallel_agree(serial, monkeypatch):
    monkeypatch.setattr(ns, "SERIAL_MAX_ELEMENTS", 1 << 40 if serial else 0)
    gen = torch.Generator().manual_seed(4)
    grad = torch.randn(5, 3, 11, 14, generator=gen)
    perm, mass = _draws(5, 4)
    got1, got2, flags = ns.saliency_masses(grad, perm, mass, 5, 1.0)
    want1, want2, _ = _poisoned_prep(grad, perm, mass, 5, 1.0, False)
    assert torch.equal(got1, want1) and torch.equal(got2, want2) and not flags.any()


@pytest.mark.parametrize("source_dtype", [torch.float64, torch.float16])
def test_sage_mix_numba_mixed_dtypes_match_pytorch(source_dtype):
    """float64 gradients of float32 images (float64 maps, the mask cast for the blend) run the
    fused pipeline; float16 gradients (no numba float16) fall back to the ops, same results."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(4, 3, 10, 18, generator=gen)[..., ::2]  # a non-contiguous view
    grad = torch.randn(4, 3, 10, 9, generator=gen).to(source_dtype)
    kw = dict(grad=grad, perm=torch.tensor([3, 2, 0, 1]), mass=0.45, search="exhaustive")
    ours = fastmix.sage_mix(x, backend="numba", **kw)
    oracle = fastmix.sage_mix(x, backend="pytorch", **kw)
    maps_dtype = torch.float64 if source_dtype == torch.float64 else torch.float32
    assert ours.extras["scores"].dtype == oracle.extras["scores"].dtype == maps_dtype
    assert torch.equal(ours.shifts, oracle.shifts)
    torch.testing.assert_close(ours.images, oracle.images, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.lam, oracle.lam, rtol=1e-6, atol=1e-7)


def test_sage_mix_keeps_the_ops_where_the_dispatcher_is_needed():
    """Under a dispatch mode (as FakeTensor, vmap or jit.trace would be) sage_mix must run the
    fastmix ops, which the mode sees, not the numba kernels behind its back."""
    import fastmix
    from helpers import RecordingMode

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 12, 10, generator=gen)
    saliency = torch.rand(4, 12, 10, generator=gen)
    plain = fastmix.sage_mix(x, saliency=saliency, generator=torch.Generator().manual_seed(1), backend="numba")
    with RecordingMode() as mode:
        seen = fastmix.sage_mix(x, saliency=saliency, generator=torch.Generator().manual_seed(1), backend="numba")
    assert any("fastmix.sage_mask_blend" in name for name in mode.ops), mode.ops
    torch.testing.assert_close(seen.images, plain.images, rtol=1e-5, atol=1e-6)
