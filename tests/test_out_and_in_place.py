"""`out=`: the operators and ops writing into a given tensor, and mixing in place (`out=images`).

The numba in-place kernels walk perm's cycles (each sample blended or pasted from its partner
before the partner changes, one saved chunk or box per cycle): compared bit for bit with the
PyTorch path's out-of-place result on random batches of many shapes, dtypes and layouts, with
permutations made of one long cycle, of pairs (timm's flip), with fixed points, and with
repeated partners (not a permutation: mixed out of place, then copied in). Also: every backend
and operator honours `out=`, the input is untouched when `out` is another tensor, and bad `out`
tensors (partial overlap, wrong shape / dtype / device / layout, gradients) are refused.
"""
from __future__ import annotations

import pytest
import torch

import fastmix
from fastmix import ops
from fastmix.backends import numba as numba_backend
from fastmix.backends.pytorch import blend as tb
from helpers import random_images

needs_numba = pytest.mark.skipif(not numba_backend.available(), reason="numba does not import here")

SHAPES = [(1, 3, 7, 5), (2, 1, 1, 1), (3, 3, 13, 17), (6, 2, 8, 1), (9, 3, 32, 31), (4, 3, 224, 96)]
DTYPES = [torch.uint8, torch.float32, torch.float64]


def pairing(kind: str, batch: int, gen) -> torch.Tensor:
    if kind == "random":
        return torch.randperm(batch, generator=gen)
    if kind == "flip":  # timm's pairing: cycles of two (and a fixed point in the middle of odd batches)
        return torch.arange(batch - 1, -1, -1)
    if kind == "one cycle":
        return torch.roll(torch.arange(batch), 1)
    if kind == "fixed points":
        perm = torch.randperm(batch, generator=gen)
        perm[::2] = torch.arange(batch)[::2]  # every even sample its own partner, the rest shuffled
        odd = torch.arange(batch)[1::2]
        perm[1::2] = odd[torch.randperm(odd.numel(), generator=gen)]
        return perm
    return torch.randint(0, batch, (batch,), generator=gen)  # repeated partners


def boxes_of(batch, height, width, gen):
    """Per-sample boxes in and around the frame: some empty, some clipped, some overlapping."""
    y = torch.sort(torch.randint(-2, height + 3, (batch, 2), generator=gen), dim=1).values
    x = torch.sort(torch.randint(-2, width + 3, (batch, 2), generator=gen), dim=1).values
    return torch.stack([y[:, 0], y[:, 1], x[:, 0], x[:, 1]], dim=1)


def images_of(shape, dtype, channels_last, seed):
    x = random_images(*shape, dtype=dtype, seed=seed)
    if dtype != torch.uint8:
        x = x * 3
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@needs_numba
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("kind", ["random", "flip", "one cycle", "fixed points", "repeats"])
def test_numba_in_place_equals_the_pytorch_path(shape, dtype, channels_last, kind):
    from fastmix.backends.numba import blend as nb

    gen = torch.Generator().manual_seed(hash((shape, str(dtype), channels_last, kind)) % 2**31)
    x = images_of(shape, dtype, channels_last, seed=gen.initial_seed() % 1000)
    batch, _, height, width = shape
    perm = pairing(kind, batch, gen)
    lam = torch.rand(batch, generator=gen)
    boxes = boxes_of(batch, height, width, gen)
    # One box for the batch (kept inside the frame, as the operators draw it): partners that
    # share a box and pair with each other swap it.
    shared = boxes[:1].expand(batch, 4).clone()
    shared[:, 0:2].clamp_(0, height)
    shared[:, 2:4].clamp_(0, width)
    cases = {"mixup": (lambda t, out=None: nb.mixup_blend(t, perm, lam, out=out), tb.mixup_blend(x, perm, lam)),
             "paste": (lambda t, out=None: nb.box_paste(t, perm, boxes, out=out), tb.box_paste(x, perm, boxes)),
             "paste, one box": (lambda t, out=None: nb.box_paste(t, perm, shared, out=out),
                                tb.box_paste(x, perm, shared)),
             "fill": (lambda t, out=None: nb.box_fill(t, boxes, 7.0, out=out), tb.box_fill(x, boxes, 7.0))}
    for name, (run, expected) in cases.items():
        batch_copy = x.clone(memory_format=torch.preserve_format)
        result = run(batch_copy, out=batch_copy)
        assert result is batch_copy, name
        assert batch_copy.stride() == x.stride(), name
        assert torch.equal(batch_copy, expected), (name, (batch_copy.double() - expected.double()).abs().max())


@needs_numba
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_numba_in_place_parallel_chunks(dtype):
    """A batch large enough for several chunks per sample and several threads' work items."""
    from fastmix.backends.numba import blend as nb

    gen = torch.Generator().manual_seed(7)
    x = images_of((5, 3, 150, 130), dtype, False, seed=3)
    perm, lam, boxes = torch.randperm(5, generator=gen), torch.rand(5, generator=gen), boxes_of(5, 150, 130, gen)
    for run, expected in ((lambda t: nb.mixup_blend(t, perm, lam, out=t), tb.mixup_blend(x, perm, lam)),
                          (lambda t: nb.box_paste(t, perm, boxes, out=t), tb.box_paste(x, perm, boxes))):
        batch_copy = x.clone()
        run(batch_copy)
        assert torch.equal(batch_copy, expected)


def _operator_calls(x, seed):
    def gen():
        return torch.Generator().manual_seed(seed)
    scaled = x if x.dtype == torch.uint8 else x.clamp(0, 1)
    return {
        "mixup": lambda t, **kw: fastmix.mixup(t, generator=gen(), per_sample=True, **kw),
        "cutmix": lambda t, **kw: fastmix.cutmix(t, generator=gen(), per_sample=True, **kw),
        "cutout": lambda t, **kw: fastmix.cutout(t, generator=gen(), **kw),
        "saliencymix": lambda t, **kw: fastmix.saliencymix(t, generator=gen(), **kw),
    }, scaled


@pytest.mark.parametrize("backend", ["pytorch", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_operators_write_into_out_and_in_place(backend, dtype, channels_last):
    base = images_of((6, 3, 20, 24), dtype, channels_last, seed=11)
    calls, x = _operator_calls(base, seed=5)
    for name, call in calls.items():
        expected = call(x, backend=backend)
        untouched = x.clone()
        buffer = torch.full_like(x, 255 if dtype == torch.uint8 else float("nan"))
        into = call(x, backend=backend, out=buffer)
        assert into.images is buffer, name
        assert torch.equal(buffer, expected.images), name
        assert torch.equal(x, untouched), f"{name}: out= must leave the input alone"
        assert torch.equal(into.lam, expected.lam) and torch.equal(into.perm, expected.perm), name
        batch = x.clone(memory_format=torch.preserve_format)
        in_place = call(batch, backend=backend, out=batch)
        assert in_place.images is batch, name
        assert torch.equal(batch, expected.images), name


@needs_numba
def test_ops_into_checks_run_on_the_numba_path():
    """The numba path of `out=` skips the custom op but not its checks."""
    x = images_of((3, 2, 5, 6), torch.uint8, False, seed=1)
    boxes = torch.tensor([[0, 2, 0, 3]] * 3)
    with pytest.raises(ValueError, match="cannot be represented"):
        ops.box_fill_into(x.clone(), x, boxes, 0.5, None, "numba")
    with pytest.raises((ValueError, IndexError), match="perm"):
        ops.box_paste_into(torch.empty_like(x), x, torch.tensor([0, 1, 3]), boxes, None, "numba")
    with pytest.raises(ValueError, match="lam"):
        ops.mixup_blend_into(torch.empty_like(x), x, torch.tensor([1, 2, 0]), torch.rand(2), None, "numba")


@pytest.mark.parametrize("backend", ["pytorch", pytest.param("numba", marks=needs_numba)])
def test_bad_out_is_refused(backend):
    base = images_of((4, 3, 8, 8), torch.float32, False, seed=2)
    x = base[:3]
    perm, lam = torch.tensor([2, 0, 1]), torch.full((3,), 0.4)
    with pytest.raises(ValueError, match="share no memory"):
        fastmix.mixup(x, lam=lam, perm=perm, backend=backend, out=base[1:])  # overlaps, is not the images
    with pytest.raises(ValueError, match="shape"):
        fastmix.mixup(x, lam=lam, perm=perm, backend=backend, out=torch.empty(3, 3, 8, 9))
    with pytest.raises(ValueError, match="dtype"):
        fastmix.mixup(x, lam=lam, perm=perm, backend=backend, out=torch.empty(3, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="device"):
        fastmix.mixup(x, lam=lam, perm=perm, backend=backend, out=torch.empty(3, 3, 8, 8, device="meta"))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fastmix.cutout(x, backend=backend, out=x.numpy())
    with pytest.raises(ValueError, match="gradient"):
        fastmix.cutmix(x.clone().requires_grad_(), lam=0.5, perm=perm, backend=backend, out=torch.empty_like(x))
    with torch.no_grad():  # allowed where no gradient is recorded
        leaf = x.clone().requires_grad_()
        result = fastmix.cutmix(leaf, lam=0.5, perm=perm, backend=backend, out=torch.empty_like(x))
    assert not result.images.requires_grad


@needs_numba
def test_numba_out_layout_rules():
    from fastmix.backends.numba import blend as nb

    x = images_of((3, 2, 4, 4), torch.float32, False, seed=5)
    perm, lam = torch.tensor([2, 0, 1]), torch.full((3,), 0.5)
    with pytest.raises(ValueError, match="channels_last"):
        nb.mixup_blend(x, perm, lam, out=torch.empty(3, 4, 2, 4).transpose(1, 2))
    # A channels_last out for an NCHW input is allowed: the result takes out's layout.
    out = torch.empty_like(x, memory_format=torch.channels_last)
    assert torch.equal(nb.mixup_blend(x, perm, lam, out=out), tb.mixup_blend(x, perm, lam))
    # An op without an in-place kernel refuses out=images with a clear message.
    g = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match="does not mix in place"):
        nb.sage_mask_blend(x, perm, g, g, torch.zeros(3, 2, dtype=torch.int64), out=x)


@pytest.mark.parametrize("backend", ["pytorch", pytest.param("numba", marks=needs_numba)])
def test_strided_out_and_strided_images_in_place(backend):
    """An `out` the kernels cannot write directly (a strided view), and strided images mixed in
    place, get the computed mix copied in on every backend rather than an error."""
    base = images_of((4, 3, 10, 12), torch.uint8, False, seed=9)
    perm = torch.tensor([1, 2, 3, 0])
    expected = fastmix.cutmix(base[:, :, ::2, ::2], lam=0.5, perm=perm, backend="pytorch",
                              generator=torch.Generator().manual_seed(1)).images
    buffer = torch.full((4, 3, 10, 12), 255, dtype=torch.uint8)[:, :, ::2, ::2]
    into = fastmix.cutmix(base[:, :, ::2, ::2], lam=0.5, perm=perm, backend=backend, out=buffer,
                          generator=torch.Generator().manual_seed(1))
    assert into.images is buffer and torch.equal(buffer, expected)
    strided = base.clone()[:, :, ::2, ::2]
    in_place = fastmix.cutmix(strided, lam=0.5, perm=perm, backend=backend, out=strided,
                              generator=torch.Generator().manual_seed(1))
    assert in_place.images is strided and torch.equal(strided, expected)


@needs_numba
@pytest.mark.parametrize("perm", [[1, 2, 3, 0], [1, 1, 0, 2]], ids=["permutation", "repeats"])
def test_numba_in_place_int32_perm(perm):
    from fastmix.backends.numba import blend as nb

    x = images_of((4, 3, 6, 7), torch.uint8, False, seed=4)
    perm = torch.tensor(perm, dtype=torch.int32)
    lam = torch.rand(4, generator=torch.Generator().manual_seed(2))
    boxes = torch.tensor([[1, 5, 2, 6]] * 4)
    for run, expected in ((lambda t: nb.mixup_blend(t, perm, lam, out=t), tb.mixup_blend(x, perm.long(), lam)),
                          (lambda t: nb.box_paste(t, perm, boxes, out=t), tb.box_paste(x, perm.long(), boxes))):
        batch_copy = x.clone()
        run(batch_copy)
        assert torch.equal(batch_copy, expected)
