"""SAGE: saliency-guided mixup with optimal rearrangements (Ma et al., BMVC 2022).

Spec: algorithms.md section 1. The partner's saliency is shifted over the sample's; the shift
that keeps the most total saliency under the soft mask M = G1 / max(G1 + shift(G2), 1e-16) is
chosen, and x' = M * x + (1 - M) * shift(x[perm]).
"""
from __future__ import annotations

import torch

from .. import dispatch, ops, params
from ..dispatch import to_device
from .._checks import check_images, require
from ..backends.pytorch import sage as torch_sage
from ..result import MixResult
from ._common import check_labels, resolve_perm

SEARCHES = ("auto", "random", "exhaustive", "coarse_to_fine")
# search="auto": the reference's random subset up to this image side (CIFAR 32 px, Tiny ImageNet
# 64 px), the coarse-to-fine search above it (ImageNet's 224 px would score K = 1998 random shifts
# of 224 x 224 maps per sample, seconds per batch on a CPU).
AUTO_RANDOM_MAX_SIDE = 64
# The README recipe of the official code for CIFAR-10 (PreActResNet18), the paper's main setting;
# the code's argparse default of 1.0 leaves a mass a ~ U(0, 1) and many almost unmixed batches.
DEFAULT_UPPER_LAMBDA = 0.6


def saliency_source(images: torch.Tensor, grad, saliency) -> torch.Tensor:
    """Exactly one of `grad` [B, C, H, W] or `saliency` ([B, H, W] or [B, 1, H, W]), checked and
    detached, as [B, C, H, W] (C = 1 for saliency): the input of the saliency prep, whose
    s = mean over channels of |.| is the saliency itself for a non-negative map."""
    source, is_saliency = _source_tensor(images, grad, saliency)
    if is_saliency:
        require(~(source < 0), "saliency must be non-negative")
    return scale_free(source)


def _source_tensor(images: torch.Tensor, grad, saliency) -> tuple[torch.Tensor, bool]:
    """(grad or saliency as [B, C, H, W], detached; True for a saliency map) with its shape,
    dtype and device checked (the value checks are the caller's)."""
    batch, _, height, width = images.shape
    if (grad is None) == (saliency is None):
        raise ValueError("pass exactly one of grad= (dL/dx, [B, C, H, W]) or saliency= ([B, H, W] or [B, 1, H, W])")
    if grad is not None:
        source = torch.as_tensor(grad)
        if source.dim() != 4 or source.shape[0] != batch or source.shape[2:] != images.shape[2:]:
            raise ValueError(f"grad must have shape [{batch}, C, {height}, {width}], got {tuple(source.shape)}")
        if not source.dtype.is_floating_point:
            raise TypeError(f"grad must be a float tensor, got {source.dtype}")
    else:
        source = torch.as_tensor(saliency)
        if source.dim() == 3:
            source = source[:, None]
        if source.shape != (batch, 1, height, width):
            raise ValueError(f"saliency must have shape [{batch}, {height}, {width}] or "
                             f"[{batch}, 1, {height}, {width}], got {tuple(source.shape)}")
        if not source.dtype.is_floating_point:
            raise TypeError(f"saliency must be a float tensor, got {source.dtype}")
    if source.device != images.device:
        raise ValueError(f"saliency/grad is on {source.device} but the images are on {images.device}")
    return source.detach(), saliency is not None


def scale_free(source: torch.Tensor) -> torch.Tensor:
    """Each sample divided by the power of two just below its largest |value|.

    The saliency prep normalises every map to a fixed mass, so only the shape of the saliency
    matters; without this step a large saliency (1e36) overflowed the float32 sums of the prep
    to inf and gave lam = 0 for every sample. A power-of-two scale is exact in floating point,
    so the result is bit-identical for any finite input scale, and the prep's sums stay finite.
    An all-zero sample stays zero; NaN or infinite values stay non-finite, which the prep check
    reports."""
    peak = source.abs().amax(dim=(1, 2, 3), keepdim=True)
    _, exponent = torch.frexp(peak)
    return source / torch.ldexp(torch.ones_like(peak), exponent - 1)


def resolve_mass(mass, alpha: float, upper_lambda: float, batch: int, per_sample: bool, generator) -> torch.Tensor:
    """Saliency mass a of each sample (its partner gets 1 - a): float32 [B]."""
    if mass is not None:
        mass_t = torch.as_tensor(mass, dtype=torch.float32)
        if mass_t.dim() == 0:
            mass_t = mass_t.expand(batch).clone()
        if mass_t.shape != (batch,):
            raise ValueError(f"mass must be a float or have shape [{batch}], got {tuple(mass_t.shape)}")
        require((mass_t >= 0) & (mass_t <= 1), "mass must lie in [0, 1]")
        return mass_t
    if not 0 <= upper_lambda <= 1:
        raise ValueError(f"upper_lambda must be in [0, 1], got {upper_lambda}")
    if alpha is None or alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if alpha == 0:  # the reference uses a = 0.5 when mixing is "off"
        draws = torch.full((batch if per_sample else 1,), 0.5)
    else:
        draws = params.beta(alpha, batch if per_sample else 1, generator)
    return (draws * upper_lambda).expand(batch).clone()


def resolve_shifts(shifts, search: str, rand_pos: float, per_sample_shifts: bool,
                   batch: int, height: int, width: int, generator) -> torch.Tensor:
    """Candidate shifts: int64 [K, 2] shared by the batch or [B, K, 2] per sample, as (dy, dx);
    None for the coarse-to-fine search, which picks its own."""
    if shifts is not None:
        shifts_t = torch.as_tensor(shifts)
        if shifts_t.dtype.is_floating_point or shifts_t.dtype == torch.bool:
            raise TypeError(f"shifts must be an integer tensor of (dy, dx), got {shifts_t.dtype}")
        if shifts_t.dim() not in (2, 3) or shifts_t.shape[-1] != 2 or shifts_t.shape[-2] == 0 \
                or (shifts_t.dim() == 3 and shifts_t.shape[0] != batch):
            raise ValueError(f"shifts must have shape [K, 2] or [{batch}, K, 2] with K >= 1, got {tuple(shifts_t.shape)}")
        dy, dx = shifts_t[..., 0], shifts_t[..., 1]
        require((dy.abs() < height) & (dx.abs() < width), f"shifts must satisfy |dy| < {height} and |dx| < {width}")
        return shifts_t.long()
    search = resolve_search(search, height, width)
    if search == "exhaustive":
        return torch_sage.all_shifts(height, width)
    if search == "coarse_to_fine":
        return None  # the candidates come out of the search itself
    population = (2 * height - 1) * (2 * width - 1)
    count = int(population * rand_pos)
    if not 0 < rand_pos <= 1 or count < 1:
        raise ValueError(f"rand_pos={rand_pos} gives K = int({population} * rand_pos) = {count} candidate "
                         f"shifts for {height}x{width} images; it must be in (0, 1] and give K >= 1")
    flat = params.choose_without_replacement(population, count, generator,
                                             rows=batch if per_sample_shifts else None)
    return torch_sage.flat_to_shifts(flat, height, width)


def resolve_search(search: str, height: int, width: int) -> str:
    """The search that `search` names; "auto" picks by image size (AUTO_RANDOM_MAX_SIDE)."""
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if search == "auto":
        return "random" if max(height, width) <= AUTO_RANDOM_MAX_SIDE else "coarse_to_fine"
    return search


def sage_mix(x: torch.Tensor, y: torch.Tensor | None = None, *, grad=None, saliency=None,
             alpha: float = 1.0, upper_lambda: float = DEFAULT_UPPER_LAMBDA, rand_pos: float = 0.01,
             kernel_size: int = 5, sigma: float = 1.0, perm=None, mass=None, shifts=None,
             search: str = "auto", per_sample_shifts: bool = False, per_sample_mass: bool = False,
             generator: torch.Generator | None = None, backend: str = "auto",
             chunk_elements: int = torch_sage.DEFAULT_CHUNK_ELEMENTS) -> MixResult:
    """Mix each sample with a shifted partner so that the most saliency survives.

    x: [B, C, H, W] float images (normalised; the shift fills with 0, the mean colour).
    grad: dL/dx [B, C, H, W] (saliency = mean over channels of |grad|), or saliency [B, H, W] /
    [B, 1, H, W]: exactly one of them. The saliency is smoothed with a kernel_size x kernel_size,
    sigma Gaussian with reflect padding (kernel_size=1: no smoothing), and normalised so that the
    sample's map has mass a and its partner's 1 - a, with a = Beta(alpha, alpha) * upper_lambda
    (alpha = 0: a = 0.5 * upper_lambda), one per batch as in the reference or one per sample with
    `per_sample_mass`. `mass` injects a (float or [B]). upper_lambda defaults to 0.6, the
    official README's CIFAR-10 recipe (the setting of the paper's main results; 0.5 and 0.7 for
    its CIFAR-100 models). The code's argparse default 1.0 (a ~ U(0, 1)) leaves many batches
    almost unmixed: a new-user trial on the demo photos found 8 of 30 batches with mean lam > 0.98.

    Candidate shifts (dy, dx) move the partner's content by dy rows and dx columns.
    `search="auto"` (the default) is "random" for images of at most 64 px a side (CIFAR, Tiny
    ImageNet: the reference's search) and "coarse_to_fine" above (seconds per ImageNet batch on
    a CPU otherwise); `MixResult.extras["search"]` records the choice. With `search="random"`
    K = int(P_h * P_w * rand_pos) of the P_h * P_w = (2H-1)(2W-1) shifts are
    drawn without replacement as reference flat indices k (dy = k % P_h + 1 - H,
    dx = k // P_h + 1 - W), shared by the batch, or per sample with `per_sample_shifts`.
    `search="exhaustive"` scores every shift. `search="coarse_to_fine"` (for large images) scores
    every shift of the maps sum-pooled to at most 32 px a side, then the full-resolution shifts
    around each sample's 4 best coarse ones (per-sample candidates; exhaustive on images of at most
    32 px a side). `shifts` injects [K, 2] or [B, K, 2] candidates. The first maximum wins ties.

    An all-zero saliency map is treated as uniform; NaN, infinite or negative saliency raises (a
    ValueError on CPU tensors, a device-side assert on CUDA ones: the call never waits for the
    GPU). Only the saliency's shape matters, not its scale: each map is first divided by the power
    of two just below its maximum (exact), so any finite saliency (1e-30 or 1e36) gives the same
    result up to rounding, and a power-of-two rescaling gives a bit-identical one.
    Returns a MixResult with images, lam = mean(M), perm, shifts (the chosen (dy, dx) per
    sample), mask M [B, 1, H, W], and extras: mass, candidates, scores, best_index, search.
    The result is differentiable with respect to x (sample and partner); saliency is not.
    """
    check_images(x, name="x", allow_uint8=False)
    batch, _, height, width = x.shape
    labels = check_labels(y, batch, x)
    source, is_saliency = _source_tensor(x, grad, saliency)
    numba_pipeline = _numba_pipeline(x, source, backend)
    if is_saliency and not numba_pipeline:  # the numba prep checks it in its pass
        require(~(source < 0), "saliency must be non-negative")
    perm_t = resolve_perm(perm, batch, generator)
    mass_t = resolve_mass(mass, alpha, upper_lambda, batch, per_sample_mass, generator)
    device = x.device
    perm_d = to_device(perm_t, device)
    if numba_pipeline:  # before the shifts, so that a bad saliency is reported first, as below
        g1, g2 = _numba_saliency(source, is_saliency, perm_d, mass_t, kernel_size, sigma)
    search = "injected" if shifts is not None else resolve_search(search, height, width)
    candidates = resolve_shifts(shifts, search, rand_pos, per_sample_shifts, batch, height, width, generator)

    if numba_pipeline:
        if candidates is None:
            candidates_d, scores, best_index = dispatch.sage_coarse_to_fine(
                g1, g2, backend=backend, chunk_elements=chunk_elements)
        else:
            from ..backends.numba import sage as numba_sage
            candidates_d = candidates
            scores, best_index = numba_sage.scores_and_best(g1, g2, candidates)
    else:
        g1, g2 = dispatch.sage_saliency(scale_free(source), perm_d, mass_t, kernel_size, sigma, backend=backend)
        require(torch.isfinite(g1), "saliency holds NaN or infinite values (check the loss and the gradient, "
                                    "e.g. fp16 overflow under AMP)")
        if candidates is None:
            candidates_d, scores, best_index = dispatch.sage_coarse_to_fine(
                g1, g2, backend=backend, chunk_elements=chunk_elements)
        else:
            candidates_d = to_device(candidates, device)
            scores, best_index = dispatch.sage_scores(g1, g2, candidates_d, backend=backend,
                                                      chunk_elements=chunk_elements)
    if candidates_d.dim() == 2:
        best_shifts = candidates_d[best_index]
    else:
        best_shifts = candidates_d[torch.arange(batch, device=device), best_index]
    if numba_pipeline and not (x.requires_grad and torch.is_grad_enabled()):
        from ..backends.numba import blend as numba_blend  # the op without its dispatch (autograd needs it)
        mixed, mask, lam = numba_blend.sage_mask_blend(x, perm_d, g1, g2, best_shifts)
    else:
        mixed, mask, lam = dispatch.sage_mask_and_blend(x, perm_d, g1, g2, best_shifts, backend=backend)
    return MixResult(images=mixed, lam=lam.float(), perm=perm_d, shifts=best_shifts, mask=mask[:, None].float(),
                     labels=labels, extras={"mass": to_device(mass_t, device), "candidates": candidates_d,
                                            "scores": scores, "best_index": best_index,
                                            "search": search})


def _numba_pipeline(x: torch.Tensor, source: torch.Tensor, backend: str) -> bool:
    """True when the whole CPU pipeline runs on the numba kernels without the custom ops: CPU
    float32/float64 images and saliency, backend "auto"/"numba" resolving to numba, where ops.call
    would skip the dispatcher too (outside torch.compile, which traces the ops, and the like). Each op costs 0.1-0.3 ms of dispatch and checks,
    more than its kernel at B=100 32x32. The scores and the blend are the numba ops' own kernels;
    the saliency prep is a fused numba kernel (the op runs it in torch), equal to float rounding."""
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    # Whatever would keep ops.call on the dispatcher (compile, jit.trace, modes such as FakeTensor,
    # vmap, tensor subclasses) keeps the ops here too; x itself may require grad (see the blend).
    if source.dtype not in (torch.float32, torch.float64) or type(x) is not torch.Tensor \
            or not ops.runs_directly([source]):
        return False
    return dispatch.resolve(backend, x, (x.dtype,)) == "numba"


def _numba_saliency(source, is_saliency, perm, mass, kernel_size, sigma):
    """(G1, G2) from the fused numba saliency prep, with the PyTorch path's checks and errors
    (the value checks are flags of the kernel's own pass over the saliency)."""
    from ..backends.numba import sage as numba_sage
    from ..ops.sage import _check_grad

    _check_grad(source, perm, mass, kernel_size)
    g1, g2, flags = numba_sage.saliency_masses(source, perm, mass, kernel_size, sigma, check_negative=is_saliency)
    numba_sage.raise_on_flags(flags)
    return g1, g2
