"""Triton Mixup blend, box paste and box fill kernels against the PyTorch path.

Kernels run under TRITON_INTERPRET=1 without CUDA (tests/conftest.py) on random tiny inputs of
many shapes, every supported dtype, NCHW and channels_last. Every buffer a kernel writes is
poisoned first (NaN; integers: the dtype's maximum, and uint8 inputs are drawn from [0, 254] so
255 never is a correct output), so an element the kernel skips fails the comparison.

Tolerances: float32 / float64 outputs match to 1e-6 relative; float16 outputs to one ulp;
bfloat16 outputs to one ulp because the interpreter converts float32 to bfloat16 by truncation
while torch (and the GPU) round to nearest; uint8 outputs exactly (the interpreter does not fuse
multiply-adds; the GPU suite allows 1 for FMA rounding at .5 ties).
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmix.backends.pytorch import blend as torch_blend
from fastmix.backends.triton import _launch
from fastmix.backends.triton import blend as triton_blend

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.uint8]
SETTINGS = settings(max_examples=6, deadline=None, derandomize=True)


def tolerance(dtype: torch.dtype) -> dict:
    if dtype == torch.uint8:
        return {"atol": 0, "rtol": 0}
    if dtype in (torch.float16, torch.bfloat16):
        eps = torch.finfo(dtype).eps
        return {"atol": eps, "rtol": eps}
    return {"atol": 1e-6, "rtol": 1e-6}


def random_images(shape, dtype, channels_last, seed):
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        images = torch.randint(0, 255, shape, generator=gen).to(torch.uint8)
    else:
        images = (torch.randn(shape, generator=gen) * 3).to(dtype)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


def random_boxes(batch, height, width, gen):
    y = torch.sort(torch.randint(0, height + 1, (batch, 2), generator=gen), dim=1).values
    x = torch.sort(torch.randint(0, width + 1, (batch, 2), generator=gen), dim=1).values
    return torch.stack([y[:, 0], y[:, 1], x[:, 0], x[:, 1]], dim=1)


def check_same(result, expected, dtype):
    assert result.dtype == expected.dtype
    assert result.stride() == expected.stride(), "the output must keep the input's memory format"
    torch.testing.assert_close(result.double(), expected.double(), **tolerance(dtype))


shapes = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 13), st.integers(1, 13))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_mixup_blend_matches_pytorch(dtype, channels_last, shape, seed):
    images = random_images(shape, dtype, channels_last, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    perm = torch.randint(0, shape[0], (shape[0],), generator=gen)  # repeats allowed
    lam = torch.rand(shape[0], generator=gen)
    lam[0] = 0.5  # a weight that produces exact .5 ties for uint8
    with _launch.poisoned_buffers():
        result = triton_blend.mixup_blend(images, perm, lam, images.dtype)
    check_same(result, torch_blend.mixup_blend(images, perm, lam), dtype)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_box_paste_matches_pytorch(dtype, channels_last, shape, seed):
    images = random_images(shape, dtype, channels_last, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    perm = torch.randperm(shape[0], generator=gen)
    boxes = random_boxes(shape[0], shape[2], shape[3], gen)
    with _launch.poisoned_buffers():
        result = triton_blend.box_paste(images, perm, boxes, images.dtype)
    check_same(result, torch_blend.box_paste(images, perm, boxes), dtype)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**16), value=st.sampled_from([0.0, 1.5, -2.25, 127.0]))
def test_box_fill_matches_pytorch(dtype, channels_last, shape, seed, value):
    if dtype == torch.uint8 and value < 0:
        value = 7.0
    images = random_images(shape, dtype, channels_last, seed)
    boxes = random_boxes(shape[0], shape[2], shape[3], torch.Generator().manual_seed(seed + 1))
    with _launch.poisoned_buffers():
        result = triton_blend.box_fill(images, boxes, value, images.dtype)
    check_same(result, torch_blend.box_fill(images, boxes, value), dtype)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_uint8_in_float_out(out_dtype):
    """uint8 in, float out: the blend is not rounded to integers."""
    images = random_images((3, 3, 5, 7), torch.uint8, True, 0)
    perm = torch.tensor([2, 0, 1])
    lam = torch.tensor([0.3, 0.5, 0.9])
    boxes = torch.tensor([[0, 2, 1, 4], [1, 5, 0, 7], [3, 3, 2, 2]])
    as_float = images.to(out_dtype)
    with _launch.poisoned_buffers():
        mixed = triton_blend.mixup_blend(images, perm, lam, out_dtype)
        pasted = triton_blend.box_paste(images, perm, boxes, out_dtype)
        filled = triton_blend.box_fill(images, boxes, 0.25, out_dtype)
    check_same(mixed, torch_blend.mixup_blend(as_float, perm, lam), out_dtype)
    check_same(pasted, torch_blend.box_paste(as_float, perm, boxes), out_dtype)
    check_same(filled, torch_blend.box_fill(as_float, boxes, 0.25), out_dtype)
    assert not torch.equal(mixed.round(), mixed)


@pytest.mark.parametrize("op", ["mixup", "paste", "fill"])
def test_non_dense_strides(op):
    """A crop of columns (rows not back to back) is read through its strides; the output is dense."""
    images = random_images((2, 3, 6, 14), torch.float32, False, 3)[:, :, :, 3:10]
    perm = torch.tensor([1, 0])
    boxes = torch.tensor([[1, 5, 2, 6], [0, 6, 0, 3]])
    with _launch.poisoned_buffers():
        if op == "mixup":
            lam = torch.tensor([0.25, 0.75])
            result, expected = triton_blend.mixup_blend(images, perm, lam, images.dtype), \
                torch_blend.mixup_blend(images, perm, lam)
        elif op == "paste":
            result, expected = triton_blend.box_paste(images, perm, boxes, images.dtype), \
                torch_blend.box_paste(images, perm, boxes)
        else:
            result, expected = triton_blend.box_fill(images, boxes, 2.0, images.dtype), \
                torch_blend.box_fill(images, boxes, 2.0)
    assert not _launch.dense_rows(images) and _launch.dense_rows(result)
    check_same(result, expected, torch.float32)


def test_uint8_rounds_half_to_even_and_saturates():
    images = torch.tensor([[1, 2, 3, 0]], dtype=torch.uint8).view(1, 1, 1, 4).repeat(2, 1, 1, 1)
    images[1] = torch.tensor([2, 3, 4, 255], dtype=torch.uint8).view(1, 1, 4)
    lam = torch.tensor([0.5, 0.5])
    result = triton_blend.mixup_blend(images, torch.tensor([1, 0]), lam, torch.uint8)
    # (1+2)/2 = 1.5 -> 2, (2+3)/2 = 2.5 -> 2, (3+4)/2 = 3.5 -> 4, (0+255)/2 = 127.5 -> 128
    assert result[0, 0, 0].tolist() == [2, 2, 4, 128]
