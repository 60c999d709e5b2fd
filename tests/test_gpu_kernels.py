"""The Triton kernels on real CUDA tensors at realistic sizes, against the PyTorch path on the
same GPU: B=256, 3x224x224 (ImageNet) and B=100, 3x32x32 (CIFAR, SAGE's reference setting).

Skipped, with a reason, without CUDA (the `gpu` marker; tests/conftest.py). Tolerances as in the
interpreter suites (tests/test_triton_blend.py, tests/test_triton_sage.py), except that the GPU
may contract a * b + c into one fused multiply-add, so uint8 results may differ by 1 at .5 ties
and float32 results by a few ulp. Near ties in the shift search follow the rule of
test_triton_sage.py: the chosen index must match unless the oracle's best two candidates are
within TIE_RTOL, and then the kernel's choice must score within TIE_RTOL of the best.
"""
from __future__ import annotations

import pytest
import torch

from fastmix import ops, sage_mix
from fastmix.backends.pytorch import sage as torch_sage

pytestmark = pytest.mark.gpu

TIE_RTOL = 1e-5
IMAGENET = (256, 3, 224, 224)
CIFAR = (100, 3, 32, 32)
BIG_CHUNK = 2 ** 26  # PyTorch-path scoring temporaries: 3 x 4 x 2^26 bytes = 768 MiB


@pytest.fixture(scope="module")
def device():
    return torch.device("cuda")


def random_images(shape, dtype, channels_last, device, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, shape, generator=gen, device=device).to(torch.uint8)
    else:
        x = torch.randn(shape, generator=gen, device=device).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def assert_images_close(result, expected):
    assert result.dtype == expected.dtype and result.stride() == expected.stride()
    if expected.dtype == torch.uint8:
        assert int((result.int() - expected.int()).abs().max()) <= 1
        return
    eps = torch.finfo(expected.dtype).eps
    tol = eps if expected.dtype in (torch.float16, torch.bfloat16) else 8 * eps
    torch.testing.assert_close(result.double(), expected.double(), rtol=tol, atol=tol * 4)


def sage_inputs(shape, device, seed=0, dtype=torch.float32):
    batch, _, height, width = shape
    gen = torch.Generator(device=device).manual_seed(seed)
    grad = torch.randn(shape, generator=gen, device=device, dtype=dtype)
    perm = torch.randperm(batch, generator=gen, device=device)
    mass = torch.rand(batch, generator=gen, device=device) * 0.6
    return grad, perm, mass


def check_best(best, expected_best, oracle_scores):
    top = oracle_scores.double().max(dim=1).values
    chosen = oracle_scores.double().gather(1, best[:, None])[:, 0]
    differs = best != expected_best
    assert bool((chosen[differs] >= top[differs] - TIE_RTOL * top[differs].abs()).all()), \
        "the kernel chose a shift that is not a near tie of the best"


def check_scores(g1, g2, shifts):
    scores, best = ops.sage_scores(g1, g2, shifts, backend="triton")
    expected, expected_best = ops.sage_scores(g1, g2, shifts, BIG_CHUNK, backend="pytorch")
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    check_best(best, expected_best, expected)
    return (best == expected_best).float().mean().item()


@pytest.mark.parametrize("shape", [IMAGENET, CIFAR], ids=["imagenet", "cifar"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.uint8])
def test_mixup_and_boxes(device, shape, dtype, channels_last):
    x = random_images(shape, dtype, channels_last, device)
    batch, _, height, width = shape
    gen = torch.Generator(device=device).manual_seed(1)
    perm = torch.randperm(batch, generator=gen, device=device)
    lam = torch.rand(batch, generator=gen, device=device)
    y = torch.sort(torch.randint(0, height + 1, (batch, 2), generator=gen, device=device), dim=1).values
    xs = torch.sort(torch.randint(0, width + 1, (batch, 2), generator=gen, device=device), dim=1).values
    boxes = torch.stack([y[:, 0], y[:, 1], xs[:, 0], xs[:, 1]], dim=1)
    for backend_result, expected in [
        (ops.mixup_blend(x, perm, lam, backend="triton"), ops.mixup_blend(x, perm, lam, backend="pytorch")),
        (ops.box_paste(x, perm, boxes, backend="triton"), ops.box_paste(x, perm, boxes, backend="pytorch")),
        (ops.box_fill(x, boxes, 1.0, backend="triton"), ops.box_fill(x, boxes, 1.0, backend="pytorch")),
    ]:
        assert_images_close(backend_result, expected)


@pytest.mark.parametrize("shape", [IMAGENET, CIFAR], ids=["imagenet", "cifar"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_saliency_prep(device, shape, dtype):
    grad, perm, mass = sage_inputs(shape, device, dtype=dtype)
    grad[3] = 0  # made uniform
    g1, g2 = ops.sage_saliency(grad, perm, mass, 5, 1.0, backend="triton")
    e1, e2 = ops.sage_saliency(grad, perm, mass, 5, 1.0, backend="pytorch")
    torch.testing.assert_close(g1, e1, rtol=1e-5, atol=1e-5 * float(e1.max()))
    torch.testing.assert_close(g2, e2, rtol=1e-5, atol=1e-5 * float(e2.max()))


def test_scores_cifar_reference_exhaustive_and_per_sample(device):
    grad, perm, mass = sage_inputs(CIFAR, device)
    g1, g2 = ops.sage_saliency(grad, perm, mass, backend="pytorch")
    population = 63 * 63
    gen = torch.Generator(device=device).manual_seed(2)
    reference = torch_sage.flat_to_shifts(torch.randperm(population, generator=gen, device=device)[:39], 32, 32)
    per_sample = torch_sage.flat_to_shifts(torch.rand(100, population, generator=gen, device=device)
                                           .argsort(dim=1)[:, :39], 32, 32)
    for shifts in (reference, per_sample, torch_sage.all_shifts(32, 32, device=device)):
        assert check_scores(g1, g2, shifts) > 0.9


def test_scores_imagenet_reference_candidates(device):
    grad, perm, mass = sage_inputs(IMAGENET, device)
    g1, g2 = ops.sage_saliency(grad, perm, mass, backend="pytorch")
    population = 447 * 447
    gen = torch.Generator(device=device).manual_seed(3)
    flat = torch.randperm(population, generator=gen, device=device)[:int(population * 0.01)]
    assert check_scores(g1, g2, torch_sage.flat_to_shifts(flat, 224, 224)) > 0.9


def test_coarse_to_fine_imagenet(device):
    grad, perm, mass = sage_inputs((16, 3, 224, 224), device)
    g1, g2 = ops.sage_saliency(grad, perm, mass, backend="pytorch")
    triton_scores = lambda a, b, s: ops.sage_scores(a, b, s, backend="triton")[0]  # noqa: E731
    torch_scores = lambda a, b, s: ops.sage_scores(a, b, s, BIG_CHUNK, backend="pytorch")[0]  # noqa: E731
    cand, scores, best = torch_sage.coarse_to_fine(g1, g2, triton_scores)
    e_cand, e_scores, e_best = torch_sage.coarse_to_fine(g1, g2, torch_scores)
    assert cand.shape == (16, 4 * 15 * 15, 2)
    same = (cand == e_cand).all(dim=2).all(dim=1)  # coarse near ties may pick other neighbourhoods
    assert float(same.float().mean()) > 0.9
    torch.testing.assert_close(scores[same], e_scores[same], rtol=1e-5, atol=1e-6)
    check_best(best[same], e_best[same], e_scores[same])


@pytest.mark.parametrize("shape", [IMAGENET, CIFAR], ids=["imagenet", "cifar"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_mask_blend(device, shape, dtype, channels_last):
    grad, perm, mass = sage_inputs(shape, device)
    g1, g2 = ops.sage_saliency(grad, perm, mass, backend="pytorch")
    x = random_images(shape, dtype, channels_last, device, seed=5)
    _, _, height, width = shape
    gen = torch.Generator(device=device).manual_seed(6)
    shifts = torch.stack([torch.randint(1 - height, height, (shape[0],), generator=gen, device=device),
                          torch.randint(1 - width, width, (shape[0],), generator=gen, device=device)], dim=1)
    mixed, mask, lam = ops.sage_mask_blend(x, perm, g1, g2, shifts, backend="triton")
    e_mixed, e_mask, e_lam = ops.sage_mask_blend(x, perm, g1, g2, shifts, backend="pytorch")
    torch.testing.assert_close(mask, e_mask, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lam, e_lam, rtol=1e-5, atol=1e-6)
    tol = torch.finfo(dtype).eps if dtype != torch.float32 else 1e-5
    assert mixed.stride() == e_mixed.stride()
    torch.testing.assert_close(mixed.double(), e_mixed.double(), rtol=tol, atol=tol * 4)


def test_sage_mix_cifar_reference_setting(device):
    x = random_images(CIFAR, torch.float32, False, device, seed=7)
    grad, _, _ = sage_inputs(CIFAR, device, seed=8)
    results = [sage_mix(x, grad=grad, alpha=1.0, upper_lambda=0.6, rand_pos=0.01,
                        generator=torch.Generator().manual_seed(9), backend=backend)
               for backend in ("pytorch", "triton")]
    expected, result = results
    check_best(result.extras["best_index"], expected.extras["best_index"], expected.extras["scores"])
    same = (result.shifts == expected.shifts).all(dim=1)
    assert float(same.float().mean()) > 0.9
    torch.testing.assert_close(result.images[same], expected.images[same], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.lam[same], expected.lam[same], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mixup_blend", "box_paste", "sage_mask_blend"])
def test_backward_matches_pytorch(device, name):
    shape = (64, 3, 32, 32)
    grad, perm, mass = sage_inputs(shape, device)
    g1, g2 = ops.sage_saliency(grad, perm, mass, backend="pytorch")
    gen = torch.Generator(device=device).manual_seed(10)
    lam = torch.rand(64, generator=gen, device=device)
    boxes = torch.tensor([4, 20, 8, 30], device=device).expand(64, 4).contiguous()
    shifts = torch.randint(-31, 32, (64, 2), generator=gen, device=device)
    upstream = torch.randn(shape, generator=gen, device=device)
    grads = []
    for backend in ("pytorch", "triton"):
        x = random_images(shape, torch.float32, True, device, seed=11).requires_grad_()
        if name == "mixup_blend":
            out = ops.mixup_blend(x, perm, lam, backend=backend)
        elif name == "box_paste":
            out = ops.box_paste(x, perm, boxes, backend=backend)
        else:
            out = ops.sage_mask_blend(x, perm, g1, g2, shifts, backend=backend)[0]
        (out * upstream).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_compile_fullgraph(device):
    shape = (8, 3, 32, 32)
    grad, perm, mass = sage_inputs(shape, device)
    x = random_images(shape, torch.float32, False, device, seed=12)
    lam = torch.rand(8, device=device)
    shifts = torch_sage.all_shifts(32, 32, device=device)[::37]

    def step(images):
        g1, g2 = ops.sage_saliency(grad, perm, mass)
        _, best = ops.sage_scores(g1, g2, shifts)
        mixed, _, sage_lam = ops.sage_mask_blend(images, perm, g1, g2, shifts[best])
        return ops.mixup_blend(mixed, perm, lam) * 2, sage_lam

    compiled = torch.compile(step, fullgraph=True)
    out, lam_out = compiled(x)
    expected, expected_lam = step(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(lam_out, expected_lam)


# --- issue 12: grids, perm, NaN, channel-parallel chunks on the real compiler -------------------

def test_8192x8192_frames_launch(device):
    """65,536 pixel tiles per plane: more than CUDA's grid axis 1 allows; the 1-D grid has no
    such limit. Compared with the PyTorch path on the same GPU."""
    x = random_images((2, 1, 8192, 8192), torch.float16, False, device, seed=3)
    perm, lam = torch.tensor([1, 0], device=device), torch.tensor([0.25, 0.75], device=device)
    assert_images_close(ops.mixup_blend(x, perm, lam, backend="triton"),
                        ops.mixup_blend(x, perm, lam, backend="pytorch"))
    g = torch.rand(2, 8192, 8192, device=device)
    shifts = torch.tensor([[100, -7], [-4000, 3]], device=device)
    mixed, mask, lam_out = ops.sage_mask_blend(x, perm, g, g.flip(0), shifts, backend="triton")
    e_mixed, e_mask, e_lam = ops.sage_mask_blend(x, perm, g, g.flip(0), shifts, backend="pytorch")
    torch.testing.assert_close(mask, e_mask, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lam_out, e_lam, rtol=1e-5, atol=1e-6)
    assert_images_close(mixed, e_mixed)


@pytest.mark.parametrize("shape", [(64, 512, 7, 7), (100, 3, 32, 32)], ids=["feature_map", "cifar"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_parallel_chunks(device, shape, channels_last):
    x = random_images(shape, torch.float32, channels_last, device, seed=4)
    batch = shape[0]
    gen = torch.Generator(device=device).manual_seed(5)
    perm = torch.randperm(batch, generator=gen, device=device)
    lam = torch.rand(batch, generator=gen, device=device)
    assert_images_close(ops.mixup_blend(x, perm, lam, backend="triton"),
                        ops.mixup_blend(x, perm, lam, backend="pytorch"))
    g1, g2 = torch.rand(2, batch, *shape[2:], generator=gen, device=device)
    shifts = torch.stack([torch.randint(1 - shape[2], shape[2], (batch,), generator=gen, device=device),
                          torch.randint(1 - shape[3], shape[3], (batch,), generator=gen, device=device)], dim=1)
    result = ops.sage_mask_blend(x, perm, g1, g2, shifts, backend="triton")
    expected = ops.sage_mask_blend(x, perm, g1, g2, shifts, backend="pytorch")
    assert_images_close(result[0], expected[0])
    torch.testing.assert_close(result[2], expected[2], rtol=1e-5, atol=1e-6)


def test_compiled_kernels_propagate_nan_like_pytorch(device):
    """Compiled tl.maximum drops NaN; the kernels' max_nan must not (the interpreter cannot show this)."""
    x = random_images((3, 2, 9, 11), torch.float32, False, device, seed=6)
    x[1, 0, 4, 4] = float("nan")
    perm, lam = torch.tensor([1, 2, 0], device=device), torch.tensor([0.3, 0.5, 0.9], device=device)
    torch.testing.assert_close(ops.mixup_blend(x, perm, lam, backend="triton"),
                               ops.mixup_blend(x, perm, lam, backend="pytorch"), equal_nan=True, rtol=1e-5, atol=1e-6)
    g1, g2 = torch.rand(2, 3, 9, 11, device=device)
    g1[0, 2, 2] = float("nan")
    g2[2, 0, 0] = float("nan")
    shifts = torch.tensor([[0, 0], [1, 1], [-2, 3]], device=device)
    for got, want in zip(ops.sage_mask_blend(x, perm, g1, g2, shifts, backend="triton"),
                         ops.sage_mask_blend(x, perm, g1, g2, shifts, backend="pytorch")):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-6)
    every = torch_sage.all_shifts(9, 11, device=device)
    got, _ = ops.sage_scores(g1, g2, every, backend="triton")
    want, _ = ops.sage_scores(g1, g2, every, backend="pytorch")
    assert torch.isnan(want).any()
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-6)
    mass = torch.tensor([0.2, float("nan"), 0.5], device=device)
    for got, want in zip(ops.sage_saliency(x.nan_to_num(), perm, mass, 3, 1.0, backend="triton"),
                         ops.sage_saliency(x.nan_to_num(), perm, mass, 3, 1.0, backend="pytorch")):
        torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-7)


def test_cpu_perm_is_checked_on_the_host_without_a_device_sync(device):
    x = random_images((3, 3, 8, 8), torch.float32, False, device, seed=7)
    lam = torch.rand(3, device=device)
    # Inputs first: creating a CUDA tensor from a Python list is itself a synchronising copy.
    perm, bad_perm = torch.tensor([2, 0, 1]), torch.tensor([2, 3, 1])
    device_perm = torch.tensor([2, 0, 1], device=device)
    boxes = torch.tensor([[1, 5, 2, 6]] * 3, device=device)
    shifts = torch.tensor([[1, -1]] * 3, device=device)
    candidates = torch_sage.all_shifts(8, 8, device=device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = ops.mixup_blend(x, perm, lam, backend="triton")  # CPU perm: checked on the host, copied, no sync
        with pytest.raises(ValueError, match="outside"):
            ops.mixup_blend(x, bad_perm, lam, backend="triton")
        ops.mixup_blend(x, device_perm, lam, backend="triton")  # device perm: an asynchronous assert only
        # Every Triton op launches and returns without waiting for the GPU.
        ops.box_paste(x, perm, boxes, backend="triton")
        ops.box_fill(x, boxes, 0.5, backend="triton")
        g1, g2 = ops.sage_saliency(x, perm, lam, 3, 1.0, backend="triton")
        ops.sage_scores(g1, g2, candidates, backend="triton")
        ops.sage_mask_blend(x, perm, g1, g2, shifts, backend="triton")
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert_images_close(out, ops.mixup_blend(x, device_perm, lam, backend="pytorch"))


def test_bad_device_perm_fails_with_a_device_assert_not_an_illegal_address(tmp_path):
    """A device perm is checked asynchronously; the failure (which ends the CUDA context) shows
    at the next synchronisation, in a subprocess so this session's context survives."""
    import subprocess
    import sys

    code = ("import torch; from fastmix import ops\n"
            "x = torch.rand(3, 3, 8, 8, device='cuda')\n"
            "perm, lam = torch.tensor([0, 5, 1], device='cuda'), torch.rand(3, device='cuda')\n"
            "ops.mixup_blend(x, perm, lam, backend='triton')\n"
            "torch.cuda.synchronize()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "assert" in output.lower() and "illegal memory access" not in output.lower(), output[-2000:]
