"""Mixup blend, box paste (CutMix, SaliencyMix) and box fill (CutOut): one pass each.

Programs run on a 1-D grid of (sample, chunk) pairs, sample fastest, so the program that reads a
partner's chunk runs next to the program that reads the same chunk as its own sample: the
second read of each image comes from L2, and memory traffic is one read and one write of the
batch. A chunk is a contiguous range of elements of one dense sample (`_common.element_tile`):
a piece of a channels_last sample (one contiguous range of H*W*C elements) or a pixel tile of
one NCHW channel plane, so loads and stores are vectorised in both layouts and a sample with
many channels and few pixels (a 512x7x7 feature map, a 32x32 frame) spreads over many programs.
Images whose samples are not dense (a column slice) are read through their strides into a
dense NCHW output; dense inputs keep their memory format. Box kernels load whole chunks and
select per element, which keeps the loads vectorised.
Arithmetic is float32 (float64 for float64 images); uint8 results are rounded half-to-even and
saturated, as the PyTorch path does. Partner indices are clamped into the batch: an
out-of-range perm (rejected by the fastmix::* ops, on the host or with an asynchronous device
assert) can never make a kernel read outside the images.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _launch
from ._common import element_tile, sample_and_chunk, strided_offset, to_output

# Sizes and in-sample strides only index here (never vectorise: in-sample strides are read only
# for non-dense inputs) and change from model to model: no specialisation on them (value 1,
# multiple of 16), which would multiply compiles. Plane, sample sizes and batch strides stay
# specialised: their divisibility by 16 is what lets the loads and stores be vectorised.
_SIZE_ARGS = ["batch", "channels", "height", "width", "sxc", "sxh", "sxw"]


@triton.jit
def _partner(perm_ptr, b, batch):
    partner = tl.load(perm_ptr + b)
    return tl.minimum(tl.maximum(partner, 0), batch - 1)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _mixup_kernel(x_ptr, out_ptr, perm_ptr, lam_ptr, batch, channels, height, width, plane,
                  sample_numel, sxb, sxc, sxh, sxw, sob,
                  X_SAME: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                  ACC: tl.constexpr, OUT_IS_UINT8: tl.constexpr, BLOCK: tl.constexpr):
    b, chunk = sample_and_chunk(batch)
    offset, channel, pixel, row, col, valid = element_tile(chunk, channels, width, plane, sample_numel,
                                                           CHANNELS_LAST, BLOCK)
    x_offset = offset if X_SAME else strided_offset(channel, row, col, sxc, sxh, sxw)
    lam = tl.load(lam_ptr + b).to(ACC)
    own = tl.load(x_ptr + b * sxb + x_offset, mask=valid).to(ACC)
    other = tl.load(x_ptr + _partner(perm_ptr, b, batch) * sxb + x_offset, mask=valid).to(ACC)
    mixed = lam * own + (1.0 - lam) * other
    tl.store(out_ptr + b * sob + offset, to_output(mixed, out_ptr, OUT_IS_UINT8), mask=valid)


@triton.jit(do_not_specialize=_SIZE_ARGS)
def _box_kernel(x_ptr, out_ptr, perm_ptr, boxes_ptr, fill_ptr, batch, channels, height, width, plane,
                sample_numel, sxb, sxc, sxh, sxw, sob,
                X_SAME: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                PASTE: tl.constexpr, CONVERT: tl.constexpr, BLOCK: tl.constexpr):
    """PASTE: the partner's pixels inside the box; otherwise the value at fill_ptr inside the box.
    CONVERT (uint8 in, float out): values pass through float32, which holds every uint8 exactly."""
    b, chunk = sample_and_chunk(batch)
    offset, channel, pixel, row, col, valid = element_tile(chunk, channels, width, plane, sample_numel,
                                                           CHANNELS_LAST, BLOCK)
    y1 = tl.load(boxes_ptr + 4 * b)
    y2 = tl.load(boxes_ptr + 4 * b + 1)
    x1 = tl.load(boxes_ptr + 4 * b + 2)
    x2 = tl.load(boxes_ptr + 4 * b + 3)
    inside = (row >= y1) & (row < y2) & (col >= x1) & (col < x2)
    x_offset = offset if X_SAME else strided_offset(channel, row, col, sxc, sxh, sxw)
    out_ty = out_ptr.dtype.element_ty
    # Whole-chunk loads (masked by the sample only) stay vectorisable. The partner's chunk is an
    # L2 hit (its own program reads it at about the same time); CutOut reads the few pixels
    # under its box needlessly.
    own = tl.load(x_ptr + b * sxb + x_offset, mask=valid)
    if CONVERT:
        own = own.to(tl.float32).to(out_ty)
    if PASTE:
        pasted = tl.load(x_ptr + _partner(perm_ptr, b, batch) * sxb + x_offset, mask=valid)
        if CONVERT:
            pasted = pasted.to(tl.float32).to(out_ty)
        result = tl.where(inside, pasted, own)
    else:
        result = tl.where(inside, tl.load(fill_ptr), own)
    tl.store(out_ptr + b * sob + offset, result, mask=valid)


def _element_launch(images: torch.Tensor, out: torch.Tensor):
    """(grid, block, layout arguments, layout constexprs) of the element kernels."""
    batch, channels, height, width = images.shape
    _launch.check_sample_offsets(images)
    chunks, block = _launch.element_chunks(out)
    plane = height * width
    args = (batch, channels, height, width, plane, channels * plane,
            images.stride(0), *images.stride()[1:], out.stride(0))
    flags = {"X_SAME": _launch.same_sample_layout(images, out), "CHANNELS_LAST": _launch.is_channels_last(out),
             "BLOCK": block, "num_warps": _launch.warps_for(block)}
    return _launch.sample_grid(batch, chunks), args, flags


def mixup_blend(images: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor,
                out_dtype: torch.dtype) -> torch.Tensor:
    """lam[i] * x[i] + (1 - lam[i]) * x[perm[i]], written as `out_dtype`."""
    _launch.check_launchable(_mixup_kernel, images, perm, lam)
    out = _launch.output_like(images, dtype=out_dtype)
    grid, args, flags = _element_launch(images, out)
    if out.numel():
        compute = torch.float64 if torch.float64 in (images.dtype, out_dtype) else torch.float32
        _mixup_kernel[grid](images, out, perm, lam, *args, ACC=_launch.accumulator(compute),
                            OUT_IS_UINT8=out_dtype == torch.uint8, **flags)
    return out


def box_paste(images: torch.Tensor, perm: torch.Tensor, boxes: torch.Tensor,
              out_dtype: torch.dtype) -> torch.Tensor:
    """Inside sample i's box (y1, y2, x1, x2) the pixels of sample perm[i], elsewhere sample i."""
    return _box(images, perm, boxes, boxes.new_zeros(1), out_dtype, paste=True)


def box_fill(images: torch.Tensor, boxes: torch.Tensor, value: float,
             out_dtype: torch.dtype) -> torch.Tensor:
    """Inside sample i's box `value` (converted to `out_dtype` as torch converts it), elsewhere sample i."""
    # Filled on the device (no host-to-device copy, no synchronisation), converted as torch does.
    fill = torch.full((1,), value, dtype=out_dtype, device=images.device)
    return _box(images, boxes.new_zeros(1), boxes, fill, out_dtype, paste=False)


def _box(images, perm, boxes, fill, out_dtype, *, paste):
    _launch.check_launchable(_box_kernel, images, perm, boxes)
    boxes = boxes.contiguous()
    out = _launch.output_like(images, dtype=out_dtype)
    grid, args, flags = _element_launch(images, out)
    if out.numel():
        _box_kernel[grid](images, out, perm, boxes, fill, *args, PASTE=paste, CONVERT=images.dtype != out_dtype,
                          **flags)
    return out
