"""fastmix::sage_saliency, fastmix::sage_scores, fastmix::sage_mask_blend (algorithms.md 1.4b).

Only sage_mask_blend is differentiable, with respect to the images: for
out = M * x + (1 - M) * shift(x[perm]), dL/dx = M * g + index_add over perm of
shift^-1((1 - M) * g), the inverse shift (zero fill) being the adjoint of the shift. The mask
and lam are marked non-differentiable; saliency inputs get no gradient.
"""
from __future__ import annotations

import torch

from ..backends.pytorch import sage as torch_sage
from ..backends.pytorch.blend import compute_dtype
from ..backends.pytorch.gaussian import gaussian_kernel1d
from ._backend import (FLOATS, INDICES, MAP_FLOATS, check_images, check_perm_meta, check_tensor, custom_op,
                       perm_on_device, perm_to, resolve)


def _check_grad(grad, perm, mass, kernel_size):
    check_tensor(grad, "grad", (None, None, None, None), FLOATS, grad.device)
    batch, _, height, width = grad.shape
    check_perm_meta(perm, batch, grad.device)
    check_tensor(mass, "mass", (batch,), MAP_FLOATS, grad.device)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    pad = kernel_size // 2
    if pad >= height or pad >= width:
        raise ValueError(f"reflect padding of {pad} px needs maps larger than {pad} px in both "
                         f"dimensions, got {height}x{width}; use a smaller kernel_size (1 disables smoothing)")


def _check_maps(g1, g2):
    check_tensor(g1, "g1", (None, None, None), MAP_FLOATS, g1.device)
    check_tensor(g2, "g2", tuple(g1.shape), (g1.dtype,), g1.device)


@custom_op("fastmix::sage_saliency")
def sage_saliency(grad: torch.Tensor, perm: torch.Tensor, mass: torch.Tensor, kernel_size: int = 5,
                  sigma: float = 1.0, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(G1, G2) [B, H, W]: s = mean over channels of |grad| ([B, C, H, W]; a saliency map is
    [B, 1, H, W], non-negative), an all-zero s made uniform, smoothed by a kernel_size x
    kernel_size Gaussian (reflect padding), normalised to mass max(a, 1e-12) for G1 and, for the
    partner s[perm], max(1 - a, 1e-12) for G2. float32 (float64 for float64 grad)."""
    _check_grad(grad, perm, mass, kernel_size)
    perm = perm_on_device(perm, grad.shape[0], grad.device)  # perm: the grad's device or the CPU
    if resolve(backend, grad) == "triton":
        from ..backends.triton import saliency as triton_saliency
        dtype = compute_dtype(grad.dtype)
        weights = (torch.ones(1, dtype=dtype, device=grad.device) if kernel_size == 1  # no smoothing
                   else gaussian_kernel1d(kernel_size, sigma, dtype, grad.device))
        return triton_saliency.saliency_masses(grad, perm, mass, weights)
    return torch_sage.saliency_masses(grad, perm, mass, kernel_size, sigma)


@sage_saliency.register_fake
def _(grad, perm, mass, kernel_size=5, sigma=1.0, backend="auto"):
    _check_grad(grad, perm, mass, kernel_size)
    batch, _, height, width = grad.shape
    dtype = compute_dtype(grad.dtype)
    return grad.new_empty((batch, height, width), dtype=dtype), grad.new_empty((batch, height, width), dtype=dtype)


def _check_shifts(g1, shifts):
    batch = g1.shape[0]
    if shifts.dim() == 2:
        check_tensor(shifts, "shifts", (None, 2), INDICES, g1.device)
    else:
        check_tensor(shifts, "shifts", (batch, None, 2), INDICES, g1.device)
    if shifts.shape[-2] == 0:
        raise ValueError("shifts must hold at least one candidate")


@custom_op("fastmix::sage_scores")
def sage_scores(g1: torch.Tensor, g2: torch.Tensor, shifts: torch.Tensor,
                chunk_elements: int = torch_sage.DEFAULT_CHUNK_ELEMENTS,
                backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [B, K], best_index [B] int64): score of each candidate shift (dy, dx), shared
    [K, 2] or per sample [B, K, 2], and the first maximum per sample. `chunk_elements` bounds the
    PyTorch path's temporaries (the Triton path needs none)."""
    _check_maps(g1, g2)
    _check_shifts(g1, shifts)
    chosen = resolve(backend, g1, (g1.dtype,))
    if chosen == "triton":
        from ..backends.triton import scores as triton_scores
        scores = triton_scores.shift_scores(g1, g2, shifts)
    elif chosen == "numba":
        from ..backends.numba import sage as numba_sage
        scores = numba_sage.shift_scores(g1, g2, shifts)
    else:
        scores = torch_sage.shift_scores(g1, g2, shifts, chunk_elements)
    return scores, scores.argmax(dim=1)


@sage_scores.register_fake
def _(g1, g2, shifts, chunk_elements=torch_sage.DEFAULT_CHUNK_ELEMENTS, backend="auto"):
    _check_maps(g1, g2)
    _check_shifts(g1, shifts)
    batch, candidates = g1.shape[0], shifts.shape[-2]
    return g1.new_empty((batch, candidates)), g1.new_empty((batch,), dtype=torch.int64)


def _check_mask_blend(images, perm, g1, g2, shifts):
    check_images(images, allow_uint8=False)
    batch, _, height, width = images.shape
    check_perm_meta(perm, batch, images.device)
    check_tensor(g1, "g1", (batch, height, width), MAP_FLOATS, images.device)
    check_tensor(g2, "g2", (batch, height, width), (g1.dtype,), images.device)
    check_tensor(shifts, "shifts", (batch, 2), INDICES, images.device)


@custom_op("fastmix::sage_mask_blend")
def sage_mask_blend(images: torch.Tensor, perm: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor,
                    shifts: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mixed, M [B, H, W], lam [B]) with T = G2 shifted by shifts[b] = (dy, dx) (zero fill),
    M = G1 / max(G1 + T, 1e-16), lam = mean(M), mixed = M * x + (1 - M) * shift(x[perm])."""
    _check_mask_blend(images, perm, g1, g2, shifts)
    perm = perm_on_device(perm, images.shape[0], images.device)  # perm: the images' device or the CPU
    chosen = resolve(backend, images, (images.dtype,))
    if chosen == "triton":
        from ..backends.triton import mask_blend as triton_mask_blend
        return triton_mask_blend.sage_mask_blend(images, perm, g1, g2, shifts)
    if chosen == "numba":
        from ..backends.numba import blend as numba_blend
        return numba_blend.sage_mask_blend(images, perm, g1, g2, shifts)
    mask, lam = torch_sage.sage_mask(g1, g2, shifts)
    return torch_sage.sage_blend(images, perm, mask, shifts), mask, lam


@sage_mask_blend.register_fake
def _(images, perm, g1, g2, shifts, backend="auto"):
    _check_mask_blend(images, perm, g1, g2, shifts)
    return torch.empty_like(images), torch.empty_like(g1), g1.new_empty((images.shape[0],))


def _save_mask_blend(ctx, inputs, output):
    images, perm, _, _, shifts, _ = inputs
    _, mask, lam = output
    ctx.mark_non_differentiable(mask, lam)
    ctx.save_for_backward(perm_to(perm, images.device), mask, shifts)
    ctx.images_dtype = images.dtype


def _mask_blend_backward(ctx, grad, _grad_mask, _grad_lam):
    perm, mask, shifts = ctx.saved_tensors
    g = grad.to(compute_dtype(grad.dtype))
    weight = mask.to(g.dtype)[:, None]
    partner = torch_sage.shift_maps((1.0 - weight) * g, -shifts)
    grad_images = torch.index_add(weight * g, 0, perm, partner)
    return grad_images.to(ctx.images_dtype), None, None, None, None, None


sage_mask_blend.register_autograd(_mask_blend_backward, setup_context=_save_mask_blend)
