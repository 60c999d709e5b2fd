"""The fastmix custom ops: opcheck, autograd (gradcheck on the PyTorch path, the Triton path's
backward against it), torch.compile without graph breaks, backend selection and input errors.

Triton runs under TRITON_INTERPRET=1 here (tests/conftest.py sets it without CUDA).
"""
from __future__ import annotations

import warnings

import pytest
import torch

from fastmix import cutmix, cutout, dispatch, mixup, ops, sage_mix
from fastmix.backends.pytorch import sage as torch_sage
from fastmix.backends.triton import _launch

BACKENDS = ["pytorch", "triton"]


def images(shape=(3, 2, 5, 6), dtype=torch.float64, channels_last=False, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


PERM = torch.tensor([2, 0, 0])  # repeats: sample 0 is the partner of two samples, 1 of none
BOXES = torch.tensor([[1, 4, 0, 3], [0, 5, 2, 6], [2, 2, 1, 1]])
SHIFTS = torch.tensor([[1, -2], [-4, 5], [0, 0]])


def sage_maps(dtype=torch.float64):
    grad = torch.rand(3, 2, 5, 6, generator=torch.Generator().manual_seed(1), dtype=dtype)
    return torch_sage.saliency_masses(grad, PERM, torch.tensor([0.3, 0.6, 0.5]), 3, 1.0)


def mixing_cases(dtype=torch.float64):
    """(op, args after the images, kwargs) for every differentiable op."""
    g1, g2 = sage_maps()
    return {
        "mixup_blend": (ops.mixup_blend, (PERM, torch.tensor([0.2, 0.7, 1.0], dtype=torch.float32)), {}),
        "box_paste": (ops.box_paste, (PERM, BOXES), {}),
        "box_fill": (ops.box_fill, (BOXES, 0.5), {}),
        "sage_mask_blend": (ops.sage_mask_blend, (PERM, g1, g2, SHIFTS), {}),
    }


def first_output(result):
    return result[0] if isinstance(result, tuple) else result


# --- opcheck ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["mixup_blend", "box_paste", "box_fill", "sage_mask_blend"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_mixing_ops(name, backend, channels_last):
    op, args, kwargs = mixing_cases()[name]
    x = images(dtype=torch.float32, channels_last=channels_last).requires_grad_()
    args = tuple(a.float() if a.dtype == torch.float64 else a for a in args if isinstance(a, torch.Tensor)) \
        if name == "sage_mask_blend" else args
    if name == "box_fill":
        args = (BOXES, 0.5)
    torch.library.opcheck(op, (x, *args), {**kwargs, "backend": backend})


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_uint8_to_float(backend):
    x = torch.randint(0, 255, (3, 2, 5, 6), dtype=torch.uint8)
    torch.library.opcheck(ops.mixup_blend, (x, PERM, torch.rand(3)), {"out_dtype": torch.float16, "backend": backend})
    torch.library.opcheck(ops.box_paste, (x, PERM, BOXES), {"out_dtype": torch.float32, "backend": backend})
    torch.library.opcheck(ops.box_fill, (x, BOXES, 3.0), {"backend": backend})


@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_sage_search_ops(backend):
    grad = images(dtype=torch.float16)
    torch.library.opcheck(ops.sage_saliency, (grad, PERM, torch.tensor([0.3, 0.6, 0.5])),
                          {"kernel_size": 3, "sigma": 1.0, "backend": backend})
    g1, g2 = sage_maps(torch.float32)
    shared = torch_sage.flat_to_shifts(torch.tensor([0, 17, 40, 98]), 5, 6)
    torch.library.opcheck(ops.sage_scores, (g1, g2, shared), {"backend": backend})
    torch.library.opcheck(ops.sage_scores, (g1, g2, shared.expand(3, -1, -1).contiguous()), {"backend": backend})


# --- autograd -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mixup_blend", "box_paste", "box_fill", "sage_mask_blend"])
def test_gradcheck_pytorch_path(name):
    op, args, kwargs = mixing_cases()[name]
    x = images((3, 1, 5, 6)).requires_grad_()
    fn = lambda inp: first_output(op(inp, *args, **kwargs, backend="pytorch"))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("name", ["mixup_blend", "box_paste", "box_fill", "sage_mask_blend"])
def test_triton_backward_matches_pytorch(name, dtype, channels_last):
    op, args, kwargs = mixing_cases()[name]
    upstream = images(dtype=dtype, seed=4)
    grads = []
    for backend in BACKENDS:
        x = images(dtype=dtype, channels_last=channels_last).requires_grad_()
        out = first_output(op(x, *args, **kwargs, backend=backend))
        (out * upstream).sum().backward()
        grads.append(x.grad)
    assert grads[1].dtype == dtype
    tol = 1e-3 if dtype == torch.float16 else 1e-6
    torch.testing.assert_close(grads[1], grads[0], rtol=tol, atol=tol)


def test_partner_receives_gradient_through_the_shift():
    """Feature-level mixing: the partner's gradient is (1 - M) * g moved back by the shift."""
    g1, g2 = sage_maps()
    x = images().requires_grad_()
    mixed, mask, lam = ops.sage_mask_blend(x, PERM, g1, g2, SHIFTS, backend="triton")
    assert not mask.requires_grad and not lam.requires_grad
    mixed[0].sum().backward()
    dy, dx = SHIFTS[0].tolist()
    expected_partner = torch_sage.shift_maps((1 - mask[:1, None]).expand(1, 2, 5, 6), -SHIFTS[:1])[0]
    torch.testing.assert_close(x.grad[2], expected_partner)  # PERM[0] = 2
    torch.testing.assert_close(x.grad[0], mask[0].expand(2, 5, 6))
    assert float(x.grad[1].abs().sum()) == 0.0
    assert (dy, dx) != (0, 0)


def test_operators_are_differentiable():
    x = images(dtype=torch.float32).requires_grad_()
    grad = torch.rand(3, 2, 5, 6)
    for result in (mixup(x, perm=PERM, lam=0.3), cutmix(x, boxes=BOXES, perm=PERM), cutout(x, boxes=BOXES),
                   sage_mix(x, grad=grad, perm=PERM, mass=0.4, shifts=SHIFTS)):
        (g,) = torch.autograd.grad(result.images.sum(), x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0


# --- torch.compile ------------------------------------------------------------------------------

def test_compile_fullgraph_no_graph_break():
    g1, g2 = sage_maps(torch.float32)
    shifts = torch_sage.flat_to_shifts(torch.tensor([3, 17, 40, 98]), 5, 6)

    def step(x, grad, perm, lam, boxes, mass):
        maps1, maps2 = ops.sage_saliency(grad, perm, mass, 3, 1.0, backend="triton")
        scores, best = ops.sage_scores(maps1, maps2, shifts, backend="triton")
        mixed, mask, sage_lam = ops.sage_mask_blend(x, perm, maps1, maps2, shifts[best], backend="triton")
        mixed = ops.mixup_blend(mixed, perm, lam, backend="pytorch")
        mixed = ops.box_paste(mixed, perm, boxes, backend="triton")
        return ops.box_fill(mixed, boxes, 0.0) * 2, scores, sage_lam

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    x = images(dtype=torch.float32).requires_grad_()
    args = (torch.rand(3, 2, 5, 6), PERM, torch.tensor([0.2, 0.7, 1.0]), BOXES, torch.tensor([0.3, 0.6, 0.5]))
    out, scores, lam = compiled(x, *args)
    expected, e_scores, e_lam = step(x, *args)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(scores, e_scores)
    (g,) = torch.autograd.grad(out.sum(), x)
    (e_g,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(g, e_g)
    assert g1.shape == lam.shape + (5, 6)


# --- backend selection and errors ---------------------------------------------------------------

def test_auto_resolves_to_pytorch_on_cpu_and_triton_can_be_forced():
    x = images(dtype=torch.float32)
    assert ops.resolve("auto", x) == "pytorch"
    assert ops.resolve("triton", x) == "triton"
    assert dispatch.BACKENDS == ("auto", "pytorch", "triton", "numba")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.mixup_blend(x, PERM, torch.rand(3), backend="cuda")


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error():
    class CompiledKernel:  # stands in for a JITFunction: not the interpreter
        pass
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        _launch.check_launchable(CompiledKernel(), torch.zeros(1))


def test_op_input_errors():
    x = images(dtype=torch.float32)
    with pytest.raises(TypeError, match="perm"):
        ops.mixup_blend(x, PERM.int(), torch.rand(3))
    with pytest.raises(ValueError, match="lam"):
        ops.mixup_blend(x, PERM, torch.rand(2))
    with pytest.raises(ValueError, match="boxes"):
        ops.box_paste(x, PERM, BOXES[:, :3])
    with pytest.raises(TypeError, match="out_dtype"):
        ops.mixup_blend(x, PERM, torch.rand(3), out_dtype=torch.float16)
    with pytest.raises(TypeError, match="images"):
        ops.sage_mask_blend(x.to(torch.uint8), PERM, *sage_maps(torch.float32), SHIFTS)
    g1, g2 = sage_maps(torch.float32)
    with pytest.raises(ValueError, match="at least one candidate"):
        ops.sage_scores(g1, g2, torch.zeros(0, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="g2"):
        ops.sage_scores(g1, g2[:, :4], SHIFTS)
    with pytest.raises(ValueError, match="reflect padding"):
        ops.sage_saliency(torch.rand(3, 1, 2, 9), PERM, torch.rand(3), 5, 1.0, backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_coarse_to_fine_search_option(backend):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=gen)
    grad = torch.randn(2, 3, 5, 4, generator=gen)
    result = sage_mix(x, grad=grad, search="coarse_to_fine", generator=gen, backend=backend)
    exhaustive = sage_mix(x, grad=grad, search="exhaustive", perm=result.perm.cpu(),
                          mass=result.extras["mass"].cpu(), backend="pytorch")
    # Frames of at most 32 px a side: coarse-to-fine is the exhaustive search.
    assert torch.equal(result.extras["candidates"], exhaustive.extras["candidates"])
    torch.testing.assert_close(result.extras["scores"], exhaustive.extras["scores"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="search must be one of"):
        sage_mix(x, grad=grad, search="grid")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf / inf in the interpreter
def test_sage_mix_rejects_non_finite_saliency():
    x = torch.randn(2, 3, 5, 5)
    grad = torch.randn(2, 3, 5, 5)
    grad[1, 0, 0, 0] = float("inf")
    for backend in BACKENDS:
        with pytest.raises(ValueError, match="NaN or infinite"):
            sage_mix(x, grad=grad, rand_pos=0.5, backend=backend)
    with pytest.raises(ValueError, match="non-negative"):
        sage_mix(x, saliency=-torch.rand(2, 5, 5))


# --- ops.call: the dispatcher skipped where nothing needs it --------------------------------------

def _blend_args():
    x = images(shape=(4, 3, 7, 9), dtype=torch.float32, seed=3)
    perm, lam = torch.tensor([3, 0, 1, 2]), torch.tensor([0.2, 0.9, 0.5, 0.0])
    boxes = torch.tensor([[1, 5, 2, 8], [0, 7, 0, 9], [3, 3, 1, 4], [-2, 4, 6, 20]])
    g1, g2 = torch.rand(2, 4, 7, 9, generator=torch.Generator().manual_seed(4)).unbind(0)
    shifts = torch.tensor([[1, -2], [-3, 5], [0, 0], [6, 8]])
    return x, {"mixup_blend": (ops.mixup_blend, (x, perm, lam, None, "auto")),
               "box_paste": (ops.box_paste, (x, perm, boxes, None, "auto")),
               "box_fill": (ops.box_fill, (x, boxes, 2.0, None, "auto")),
               "sage_mask_blend": (ops.sage_mask_blend, (x, perm, g1, g2, shifts, "auto")),
               "sage_scores": (ops.sage_scores, (g1, g2, shifts, 1 << 20, "auto"))}


@pytest.mark.parametrize("name", ["mixup_blend", "box_paste", "box_fill", "sage_mask_blend", "sage_scores"])
def test_call_runs_the_implementation_directly_and_gives_the_dispatched_result(name, monkeypatch):
    x, cases = _blend_args()
    op, args = cases[name]
    dispatched = op(*args)
    seen = []
    monkeypatch.setattr(ops._backend, "runs_directly",
                        lambda tensors, real=ops._backend.runs_directly: seen.append(real(tensors)) or seen[-1])
    direct = ops.call(op, *args)
    assert seen == [True]
    torch.testing.assert_close(direct, dispatched, rtol=0, atol=0)
    assert first_output(direct).data_ptr() != x.data_ptr()


def test_call_goes_through_the_dispatcher_when_something_needs_it():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from helpers import RecordingMode

    x, cases = _blend_args()
    plain = [x, torch.tensor([1, 0])]
    assert ops._backend.runs_directly(plain)
    assert not ops._backend.runs_directly([x.clone().requires_grad_()])  # autograd must record the op
    with torch.no_grad():
        assert ops._backend.runs_directly([x.clone().requires_grad_()])
    assert not ops._backend.runs_directly([x.to("meta")])

    op, args = cases["mixup_blend"]
    with RecordingMode() as mode:
        assert not ops._backend.runs_directly(plain)
        ops.call(op, *args)
    assert any("fastmix.mixup_blend" in name for name in mode.ops), mode.ops  # the mode saw the op itself
    fake_mode = FakeTensorMode()
    fake_args = [fake_mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
    with fake_mode:
        out = ops.call(op, *fake_args)
    assert out.shape == x.shape and out.device == x.device

    with warnings.catch_warnings():  # newer torch deprecates torch.jit.trace; it is still used
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(lambda t: ops.call(op, t, *args[1:]), (x,), check_trace=False)
    assert "fastmix::mixup_blend" in str(traced.graph)  # the trace recorded the op, not its insides
    torch.testing.assert_close(traced(x), op(*args), rtol=0, atol=0)

    def per_sample(v):  # vmap: the transform needs the dispatcher (the op's batching fallback)
        assert not ops._backend.runs_directly([v])
        return v
    torch.vmap(per_sample)(x)


def test_operators_record_gradients_through_call():
    x = images(shape=(4, 3, 7, 9), dtype=torch.float32, seed=5).requires_grad_()
    result = mixup(x, lam=torch.tensor([0.3, 0.6, 0.5, 0.9]), perm=torch.tensor([1, 2, 3, 0]))
    (result.images * torch.arange(result.images.numel()).view_as(x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
