"""Routes each deterministic step to a backend through the fastmix custom ops.

The operators draw their random parameters (on the CPU) and call these functions, which move
the parameters to the images' device and call the `fastmix::*` ops (fastmix/ops) through
`ops.call` (the dispatcher is skipped for plain CPU tensors that record no gradient). `backend`:
"auto" runs the Triton kernels on CUDA tensors and the PyTorch path on CPU tensors; "pytorch"
or "triton" force one (Triton on CPU tensors needs TRITON_INTERPRET=1, which is how CI tests the
kernels). Saliency inputs are detached: SAGE's search is not differentiable, its mix is.
"""
from __future__ import annotations

import torch

from . import ops
from .backends.pytorch import sage as torch_sage

BACKENDS = ops.BACKENDS
resolve = ops.resolve


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a (small, host-drawn) parameter tensor to `device` without waiting for the GPU.

    A plain `.to("cuda")` of pageable host memory synchronises the stream (and fails under
    `torch.cuda.set_sync_debug_mode("error")`); a pinned copy sent with non_blocking=True does
    not, and the caching host allocator keeps the pinned buffer alive until the copy is done."""
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def mixup_blend(images, perm, lam, *, out_dtype=None, backend="auto", out=None):
    """`out`: write the mix there (it may be the images: in place; see ops.mixup_blend_into)."""
    device = images.device
    perm, lam = to_device(perm, device), to_device(lam, device)
    if out is not None:
        return ops.mixup_blend_into(out, images, perm, lam, out_dtype, backend)
    return ops.call(ops.mixup_blend, images, perm, lam, out_dtype, backend)


def box_paste(images, perm, boxes, *, out_dtype=None, backend="auto", out=None):
    device = images.device
    perm, boxes = to_device(perm, device), to_device(boxes, device)
    if out is not None:
        return ops.box_paste_into(out, images, perm, boxes, out_dtype, backend)
    return ops.call(ops.box_paste, images, perm, boxes, out_dtype, backend)


def box_fill(images, boxes, value, *, out_dtype=None, backend="auto", out=None):
    boxes = to_device(boxes, images.device)
    if out is not None:
        return ops.box_fill_into(out, images, boxes, float(value), out_dtype, backend)
    return ops.call(ops.box_fill, images, boxes, float(value), out_dtype, backend)


def sage_saliency(grad, perm, mass, kernel_size=5, sigma=1.0, *, backend="auto"):
    """(G1, G2) [B, H, W] from grad [B, C, H, W] or a non-negative saliency map [B, 1, H, W]."""
    device = grad.device
    return ops.call(ops.sage_saliency, grad.detach(), to_device(perm, device), to_device(mass, device), kernel_size,
                    sigma, backend)


def sage_scores(g1, g2, shifts, *, backend="auto", chunk_elements=torch_sage.DEFAULT_CHUNK_ELEMENTS):
    """(scores [B, K], best_index [B]) for shared [K, 2] or per-sample [B, K, 2] candidates."""
    return ops.call(ops.sage_scores, g1.detach(), g2.detach(), to_device(shifts, g1.device), chunk_elements, backend)


def sage_coarse_to_fine(g1, g2, *, backend="auto", chunk_elements=torch_sage.DEFAULT_CHUNK_ELEMENTS):
    """(candidates, scores, best_index) of the coarse-to-fine search, scored on `backend`."""
    def score(maps1, maps2, shifts):
        return ops.call(ops.sage_scores, maps1, maps2, shifts, chunk_elements, backend)[0]
    return torch_sage.coarse_to_fine(g1.detach(), g2.detach(), score)


def sage_mask_and_blend(images, perm, g1, g2, best_shifts, *, backend="auto"):
    """(mixed, mask M [B, H, W], lam [B]); differentiable with respect to `images`."""
    device = images.device
    return ops.call(ops.sage_mask_blend, images, to_device(perm, device), g1.detach(), g2.detach(),
                    to_device(best_shifts, device), backend)
