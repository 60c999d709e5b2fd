"""Boxes that reach outside the frame, given straight to the `fastmix::box_*` ops (the operators
refuse them; the ops are public too): every backend clips them to the frame. The PyTorch path's
shared-box fast path once sliced a negative start from the end of the image."""
from __future__ import annotations

import pytest
import torch

from fastmix import ops
from fastmix.backends import numba as numba_backend

BACKENDS = ["pytorch", "triton"] + (["numba"] if numba_backend.available() else [])

OUT_OF_FRAME = [(-3, 5, 2, 9), (4, 20, -6, 3), (-8, -2, 1, 4), (10, 30, 12, 40)]


def _clipped_masked_reference(images, perm, box, fill=None):
    """Per-pixel definition: inside the box clipped to the frame, the partner (or `fill`)."""
    height, width = images.shape[2:]
    y1, y2, x1, x2 = box
    rows = torch.arange(height)
    cols = torch.arange(width)
    inside = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
    source = images[perm] if fill is None else torch.full_like(images, fill)
    return torch.where(inside, source, images)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("box", OUT_OF_FRAME)
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_shared_box_outside_the_frame_is_clipped(backend, box, dtype):
    gen = torch.Generator().manual_seed(7)
    images = (torch.rand(4, 3, 13, 11, generator=gen) * 250 + 1).to(dtype)
    perm = torch.tensor([2, 3, 1, 0])
    boxes = torch.tensor([box] * 4)
    before = images.clone()

    pasted = ops.box_paste(images, perm, boxes, backend=backend)
    filled = ops.box_fill(images, boxes, 7.0, backend=backend)

    torch.testing.assert_close(pasted, _clipped_masked_reference(images, perm, box), rtol=0, atol=0)
    torch.testing.assert_close(filled, _clipped_masked_reference(images, perm, box, fill=7), rtol=0, atol=0)
    assert torch.equal(images, before)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [0.5, 256.0, -1.0, float("nan"), float("inf")])
def test_the_fill_op_refuses_values_its_output_dtype_cannot_hold(backend, value):
    """The public `fastmix::box_fill` op, not only `cutout`, refuses a fill it would round or
    saturate; uint8 images with a float output take any finite value."""
    images = torch.randint(1, 255, (2, 3, 6, 5), dtype=torch.uint8)
    boxes = torch.tensor([[1, 3, 0, 2], [0, 6, 2, 5]])
    with pytest.raises(ValueError, match="value"):
        ops.box_fill(images, boxes, value, backend=backend)
    if value == value and abs(value) != float("inf"):
        filled = ops.box_fill(images, boxes, value, torch.float32, backend=backend)
        assert filled[0, 0, 1, 0].item() == value
