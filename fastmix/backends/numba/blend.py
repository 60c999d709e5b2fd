"""CPU torch tensors -> the numba kernels (fastmix.backends.numba._kernels).

Each function allocates its output like the PyTorch path does (the images' memory format, the
requested dtype), views input and output as NumPy arrays without copying (NCHW as is,
channels_last through its NHWC permutation; other layouts are made contiguous first) and runs
one fused pass. `out=` writes into a preallocated tensor instead (a loader's pinned buffer):
it must have the output's shape and dtype, be NCHW or channels_last, and either share no memory
with the images or be the images themselves (checked). `out=images` mixes in place: Mixup and
the box paste walk perm's cycles, so each sample is blended or pasted from its partner before
the partner changes, with one saved chunk (or box) per cycle; the paste and fill then touch box
elements only. A perm that is not a permutation (repeated partners) is mixed out of place and
copied into the images. Results are bit-identical to the PyTorch path (the mask-mean lam of SAGE agrees
to float rounding: it is summed in float64 by rows).
"""
from __future__ import annotations

import numpy as np
import torch

from ..._checks import check_out, indices_in_range
from . import _kernels
from ._runtime import kernel_call

MASK_EPS = 1e-16
# Up to this many output elements a blend, paste or fill runs on the calling thread (tests set it to
# force either launch). Two costs of a parallel launch decide it, both measured here on 2 cores:
# numba's workqueue layer (the fork-safe fallback without TBB) takes ~0.1 ms to launch, more than a
# whole uint8 blend of B=256 3x32x32; and with TBB, whose launch is cheap, the second thread still
# has to win the core from torch's OpenMP threads, which spin for a while after each torch op: in
# a loop that interleaves torch ops, a 786K-element paste took 0.17 ms in parallel vs 0.13 ms on
# the calling thread, while at 4.8M elements (B=32 3x224x224) the parallel kernels stayed ahead.
SERIAL_MAX_ELEMENTS = 1 << 20


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _launch(parallel_kernel, serial_kernel, elements: int, args: tuple) -> None:
    """The parallel kernel (under the launch lock) for large outputs, the serial one up to
    SERIAL_MAX_ELEMENTS (no threads are started, so no lock is needed)."""
    if elements > SERIAL_MAX_ELEMENTS:
        with kernel_call():
            parallel_kernel(*args)
    else:
        serial_kernel(*args)


def _check_perm(perm: torch.Tensor, batch: int) -> np.ndarray:
    """The kernels index without bounds checks: an index outside [0, B) must never reach them."""
    values = perm.detach().contiguous().numpy()
    if not indices_in_range(values, batch):
        raise IndexError(f"perm must hold indices in [0, {batch}), got values in [{values.min()}, {values.max()}]")
    return values


def _check_out(out: torch.Tensor, images: torch.Tensor, dtype: torch.dtype) -> bool:
    """`out=` rules (fastmix._checks.check_out: True for an in-place mix), and a layout the
    kernels write: dense NCHW or channels_last on the CPU."""
    in_place = check_out(out, images, dtype)
    if out.device.type != "cpu":
        raise ValueError(f"out must be a CPU tensor, got one on {out.device}")
    if not (out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last)):
        raise ValueError("out must be contiguous (NCHW) or channels_last")
    return in_place


def _in_place(out: torch.Tensor | None, images: torch.Tensor, dtype: torch.dtype) -> bool:
    return out is not None and _check_out(out, images, dtype)


def _like(images: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None):
    """(input, output, channels_last): the output (`out`, or a fresh tensor in the images' memory
    format) and the input in the same dense layout (a copy only when the layouts differ)."""
    if out is None:
        out = torch.empty_like(images, dtype=dtype)
        if not (out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last)):
            out = torch.empty(images.shape, dtype=dtype)
    elif _check_out(out, images, dtype):  # the blends with an in-place kernel never get here
        raise ValueError("this op does not mix in place: out must share no memory with the images")
    if out.is_contiguous():
        return images.detach().contiguous(), out, False
    return images.detach().contiguous(memory_format=torch.channels_last), out, True


def _flat(t: torch.Tensor) -> np.ndarray:
    """[B, N] view of a dense NCHW or channels_last tensor (both are contiguous per sample)."""
    if t.is_contiguous():
        return t.view(t.shape[0], -1).numpy()
    return t.permute(0, 2, 3, 1).view(t.shape[0], -1).numpy()


def _rows(t: torch.Tensor, channels_last: bool) -> np.ndarray:
    """[B, R, L] rows: NCHW [B, C*H, W], channels_last [B, H, W*C]."""
    b, c, h, w = t.shape
    if channels_last:
        return t.permute(0, 2, 3, 1).view(b, h, w * c).numpy()
    return t.view(b, c * h, w).numpy()


def mixup_blend(images: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor,
                out_dtype: torch.dtype | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """lam[i] * x[i] + (1 - lam[i]) * x[perm[i]] in out_dtype (uint8 in, float out allowed)."""
    out_dtype = images.dtype if out_dtype is None else out_dtype
    in_place = _in_place(out, images, out_dtype)
    perm_np = _check_perm(perm, images.shape[0])
    if in_place:
        order, starts = _kernels.walk_cycles(perm_np)
        if not starts.size:  # not a permutation: a repeated partner would be read after it changed
            return out.copy_(mixup_blend(images, perm, lam, out_dtype))
    # NumPy on B values (a few us where torch ops cost several times that); 1 - w is rounded in
    # the compute dtype, as the PyTorch path rounds it.
    weight = lam.detach().numpy().astype(np.float64 if out_dtype == torch.float64 else np.float32)
    other = weight.dtype.type(1.0) - weight
    if in_place:
        if out.numel():
            with kernel_call():
                _kernels.mixup_inplace(_flat(out), perm_np, order, starts, weight, other)
        return out
    x, out, _ = _like(images, out_dtype, out)
    if out.numel():
        args = (_flat(x), perm_np, _kernels.partner_walk(perm_np), weight, other, _flat(out))
        _launch(_kernels.mixup, _kernels.mixup_serial, out.numel(), args)
    return out


def box_paste(images: torch.Tensor, perm: torch.Tensor, boxes: torch.Tensor,
              out_dtype: torch.dtype | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inside sample i's half-open box (y1, y2, x1, x2) the pixels of sample perm[i]."""
    out_dtype = images.dtype if out_dtype is None else out_dtype
    in_place = _in_place(out, images, out_dtype)
    perm_np = _check_perm(perm, images.shape[0])
    if in_place:
        order, starts = _kernels.walk_cycles(perm_np)
        if not starts.size:  # not a permutation: a repeated partner would be read after it changed
            return out.copy_(box_paste(images, perm, boxes, out_dtype))
        if out.numel():
            channels_last = not out.is_contiguous()
            with kernel_call():
                _kernels.box_paste_inplace(_rows(out, channels_last), perm_np, order, starts, boxes.contiguous().numpy(),
                                           images.shape[2], images.shape[1] if channels_last else 1)
        return out
    x, out, channels_last = _like(images, out_dtype, out)
    if out.numel():
        args = (_rows(x, channels_last), perm_np, _kernels.partner_walk(perm_np), boxes.contiguous().numpy(),
                images.shape[2], images.shape[1] if channels_last else 1, _rows(out, channels_last))
        _launch(_kernels.box_paste, _kernels.box_paste_serial, out.numel(), args)
    return out


def box_fill(images: torch.Tensor, boxes: torch.Tensor, value: float, out_dtype: torch.dtype | None = None,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """Inside sample i's half-open box `value` (converted to out_dtype as torch.tensor does)."""
    out_dtype = images.dtype if out_dtype is None else out_dtype
    fill = torch.full((1,), value, dtype=out_dtype).numpy()  # converted as the PyTorch path converts it
    if _in_place(out, images, out_dtype):
        if out.numel():
            channels_last = not out.is_contiguous()
            with kernel_call():
                _kernels.box_fill_inplace(_rows(out, channels_last), boxes.contiguous().numpy(), fill, images.shape[2],
                                          images.shape[1] if channels_last else 1)
        return out
    x, out, channels_last = _like(images, out_dtype, out)
    if out.numel():
        args = (_rows(x, channels_last), boxes.contiguous().numpy(), fill, images.shape[2],
                images.shape[1] if channels_last else 1, _rows(out, channels_last))
        _launch(_kernels.box_fill, _kernels.box_fill_serial, out.numel(), args)
    return out


def sage_mask_blend(images: torch.Tensor, perm: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor,
                    shifts: torch.Tensor, out: torch.Tensor | None = None):
    """(mixed like images, M [B, H, W], lam [B]) with M = G1 / max(G1 + shift(G2), 1e-16) and
    mixed = M * x + (1 - M) * shift(x[perm]) (zero fill), as the PyTorch path computes them."""
    batch, _, height, width = images.shape
    x, out, channels_last = _like(images, images.dtype, out)
    perm_np = _check_perm(perm, batch)
    g1c, g2c = g1.detach().contiguous(), g2.detach().contiguous()
    mask = torch.empty_like(g1c)
    row_sums = np.zeros((batch, height))  # NumPy: each torch op on these small arrays costs several us
    map_type = np.float64 if g1.dtype == torch.float64 else np.float32
    image_type = np.float64 if _compute_dtype(images.dtype) == torch.float64 else np.float32
    if out.numel() or mask.numel():
        x_np = x.permute(0, 2, 3, 1).numpy() if channels_last else x.numpy()
        out_np = out.permute(0, 2, 3, 1).numpy() if channels_last else out.numpy()
        if channels_last:
            kernels = (_kernels.sage_mask_blend_nhwc, _kernels.sage_mask_blend_nhwc_serial)
        else:
            kernels = (_kernels.sage_mask_blend_nchw, _kernels.sage_mask_blend_nchw_serial)
        _launch(*kernels, out.numel(), (x_np, perm_np, g1c.numpy(), g2c.numpy(), shifts.contiguous().numpy(),
                                        map_type(MASK_EPS), image_type(1.0), mask.numpy(), row_sums, out_np))
    lam = torch.from_numpy(row_sums.sum(axis=1) / (height * width)).to(g1.dtype)
    return out, mask, lam
