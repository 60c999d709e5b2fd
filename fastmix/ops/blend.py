"""fastmix::mixup_blend, fastmix::box_paste, fastmix::box_fill.

Backward of a mix is another mix plus a scatter through perm: for out[i] = w[i] * x[i] +
(1 - w[i]) * x[perm[i]], dL/dx = w * g + index_add over perm of (1 - w) * g (perm may repeat
indices). The backward is written with differentiable torch ops, so double backward works too.
"""
from __future__ import annotations

from typing import Optional

import torch

from .._checks import check_fill_value, check_out
from ..backends.pytorch import blend as torch_blend
from ._backend import (INDICES, call, check_images, check_perm_meta, check_tensor, custom_op, output_dtype,
                       perm_on_device, perm_to, resolve, runs_directly)


def _check_mix(images, perm, out_dtype):
    check_images(images, allow_uint8=True)
    check_perm_meta(perm, images.shape[0], images.device)
    return output_dtype(images, out_dtype)


def _check_boxes(images, boxes):
    check_tensor(boxes, "boxes", (images.shape[0], 4), INDICES, images.device)


@custom_op("fastmix::mixup_blend")
def mixup_blend(images: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor,
                out_dtype: Optional[torch.dtype] = None, backend: str = "auto") -> torch.Tensor:
    """lam[i] * x[i] + (1 - lam[i]) * x[perm[i]] for lam float32 [B] in [0, 1]."""
    out_dtype = _check_mix(images, perm, out_dtype)
    check_tensor(lam, "lam", (images.shape[0],), (torch.float32, torch.float64), images.device)
    perm = perm_on_device(perm, images.shape[0], images.device)  # perm: the images' device or the CPU
    chosen = resolve(backend, images, (images.dtype, out_dtype))
    if chosen == "triton":
        from ..backends.triton import blend as triton_blend
        return triton_blend.mixup_blend(images, perm, lam, out_dtype)
    if chosen == "numba":
        from ..backends.numba import blend as numba_blend
        return numba_blend.mixup_blend(images, perm, lam, out_dtype)
    return torch_blend.mixup_blend(images.to(out_dtype), perm, lam)


@mixup_blend.register_fake
def _(images, perm, lam, out_dtype=None, backend="auto"):
    out_dtype = _check_mix(images, perm, out_dtype)
    return torch.empty_like(images, dtype=out_dtype)


def _save_mixup(ctx, inputs, output):
    images, perm, lam, _, _ = inputs
    ctx.save_for_backward(perm_to(perm, images.device), lam)
    ctx.images_dtype = images.dtype


def _mixup_backward(ctx, grad):
    perm, lam = ctx.saved_tensors
    g = grad.to(torch_blend.compute_dtype(grad.dtype))
    weight = lam.to(g.dtype).view(-1, 1, 1, 1)
    grad_images = torch.index_add(weight * g, 0, perm, (1.0 - weight) * g)
    return grad_images.to(ctx.images_dtype), None, None, None, None


mixup_blend.register_autograd(_mixup_backward, setup_context=_save_mixup)


@custom_op("fastmix::box_paste")
def box_paste(images: torch.Tensor, perm: torch.Tensor, boxes: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None, backend: str = "auto") -> torch.Tensor:
    """Inside sample i's half-open box (y1, y2, x1, x2) the pixels of sample perm[i]."""
    out_dtype = _check_mix(images, perm, out_dtype)
    _check_boxes(images, boxes)
    perm = perm_on_device(perm, images.shape[0], images.device)
    chosen = resolve(backend, images, (images.dtype, out_dtype))
    if chosen == "triton":
        from ..backends.triton import blend as triton_blend
        return triton_blend.box_paste(images, perm, boxes, out_dtype)
    if chosen == "numba":
        from ..backends.numba import blend as numba_blend
        return numba_blend.box_paste(images, perm, boxes, out_dtype)
    return torch_blend.box_paste(images.to(out_dtype), perm, boxes)


@box_paste.register_fake
def _(images, perm, boxes, out_dtype=None, backend="auto"):
    out_dtype = _check_mix(images, perm, out_dtype)
    _check_boxes(images, boxes)
    return torch.empty_like(images, dtype=out_dtype)


def _save_paste(ctx, inputs, output):
    images, perm, boxes, _, _ = inputs
    ctx.save_for_backward(perm_to(perm, images.device), boxes)
    ctx.images_dtype = images.dtype


def _paste_backward(ctx, grad):
    perm, boxes = ctx.saved_tensors
    g = grad.to(torch_blend.compute_dtype(grad.dtype))
    inside = torch_blend.box_mask(boxes, g.shape[2], g.shape[3])
    zero = g.new_zeros(())
    grad_images = torch.index_add(torch.where(inside, zero, g), 0, perm, torch.where(inside, g, zero))
    return grad_images.to(ctx.images_dtype), None, None, None, None


box_paste.register_autograd(_paste_backward, setup_context=_save_paste)


@custom_op("fastmix::box_fill")
def box_fill(images: torch.Tensor, boxes: torch.Tensor, value: float,
             out_dtype: Optional[torch.dtype] = None, backend: str = "auto") -> torch.Tensor:
    """Inside sample i's half-open box (y1, y2, x1, x2) `value` (CutOut), elsewhere sample i."""
    check_images(images, allow_uint8=True)
    out_dtype = output_dtype(images, out_dtype)
    _check_boxes(images, boxes)
    check_fill_value(value, out_dtype)
    chosen = resolve(backend, images, (images.dtype, out_dtype))
    if chosen == "triton":
        from ..backends.triton import blend as triton_blend
        return triton_blend.box_fill(images, boxes, value, out_dtype)
    if chosen == "numba":
        from ..backends.numba import blend as numba_blend
        return numba_blend.box_fill(images, boxes, value, out_dtype)
    return torch_blend.box_fill(images.to(out_dtype), boxes, value)


@box_fill.register_fake
def _(images, boxes, value, out_dtype=None, backend="auto"):
    check_images(images, allow_uint8=True)
    _check_boxes(images, boxes)
    check_fill_value(value, output_dtype(images, out_dtype))
    return torch.empty_like(images, dtype=output_dtype(images, out_dtype))


def _save_fill(ctx, inputs, output):
    images, boxes, _, _, _ = inputs
    ctx.save_for_backward(boxes)
    ctx.images_dtype = images.dtype


def _fill_backward(ctx, grad):
    (boxes,) = ctx.saved_tensors
    inside = torch_blend.box_mask(boxes, grad.shape[2], grad.shape[3])
    return torch.where(inside, grad.new_zeros(()), grad).to(ctx.images_dtype), None, None, None, None


box_fill.register_autograd(_fill_backward, setup_context=_save_fill)


# Writing into a given tensor (the operators' `out=`). Not custom ops: a mix into `out`, possibly
# the images themselves, records no gradient and is not traced; the ops above are.
def _write(out, images, out_dtype, backend, numba_kernel: str, params: tuple, op, op_args: tuple):
    """Check `out` (fastmix._checks.check_out: the images themselves or disjoint from them),
    then let the numba kernels write into it (plain CPU tensors; in place they walk perm's
    cycles and touch only the elements that change) or compute the mix with `op` and copy it
    in (safe in place too: the result exists before `out` is written)."""
    dtype = output_dtype(images, out_dtype)
    check_out(out, images, dtype)
    tensors = [images, out] + [p for p in params if isinstance(p, torch.Tensor)]
    # The kernels write dense NCHW or channels_last tensors; any other `out` (a strided view, or
    # the images themselves when they are one) gets the computed mix copied in.
    dense = out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last)
    if dense and resolve(backend, images, (images.dtype, dtype)) == "numba" and runs_directly(tensors):
        from ..backends.numba import blend as numba_blend
        return getattr(numba_blend, numba_kernel)(images, *params, dtype, out=out)
    return out.copy_(call(op, images, *op_args, out_dtype, backend))


def mixup_blend_into(out: torch.Tensor, images: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor,
                     out_dtype: Optional[torch.dtype] = None, backend: str = "auto") -> torch.Tensor:
    """mixup_blend written into `out` (which may be `images`: in place); returns `out`."""
    _check_mix(images, perm, out_dtype)
    check_tensor(lam, "lam", (images.shape[0],), (torch.float32, torch.float64), images.device)
    return _write(out, images, out_dtype, backend, "mixup_blend", (perm, lam), mixup_blend, (perm, lam))


def box_paste_into(out: torch.Tensor, images: torch.Tensor, perm: torch.Tensor, boxes: torch.Tensor,
                   out_dtype: Optional[torch.dtype] = None, backend: str = "auto") -> torch.Tensor:
    """box_paste written into `out` (which may be `images`: in place); returns `out`."""
    _check_mix(images, perm, out_dtype)
    _check_boxes(images, boxes)
    return _write(out, images, out_dtype, backend, "box_paste", (perm, boxes), box_paste, (perm, boxes))


def box_fill_into(out: torch.Tensor, images: torch.Tensor, boxes: torch.Tensor, value: float,
                  out_dtype: Optional[torch.dtype] = None, backend: str = "auto") -> torch.Tensor:
    """box_fill written into `out` (which may be `images`: in place); returns `out`."""
    check_images(images, allow_uint8=True)
    _check_boxes(images, boxes)
    check_fill_value(value, output_dtype(images, out_dtype))
    return _write(out, images, out_dtype, backend, "box_fill", (boxes, value), box_fill, (boxes, value))
