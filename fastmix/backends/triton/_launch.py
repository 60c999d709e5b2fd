"""Launch helpers shared by the kernel modules: allocation, block sizes, dtypes, device checks.

Every buffer a Triton launcher returns or fills is allocated through `empty` / `empty_like`.
Inside `poisoned_buffers()` those buffers start as NaN (integers: the dtype's maximum), so an
element a kernel never writes shows up in any comparison (the kernel tests run under it).
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

MAX_PIXEL_BLOCK = 1024

_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}
_poisoned = False


@contextlib.contextmanager
def poisoned_buffers():
    global _poisoned
    previous, _poisoned = _poisoned, True
    try:
        yield
    finally:
        _poisoned = previous


def _poison(tensor: torch.Tensor) -> torch.Tensor:
    if _poisoned:
        tensor.fill_(float("nan") if tensor.is_floating_point() else torch.iinfo(tensor.dtype).max)
    return tensor


def empty(shape, dtype: torch.dtype, device) -> torch.Tensor:
    return _poison(torch.empty(shape, dtype=dtype, device=device))


def empty_like(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Same shape and memory format (NCHW or channels_last) as `tensor`."""
    return _poison(torch.empty_like(tensor, dtype=dtype))


def accumulator(dtype: torch.dtype):
    """Triton arithmetic type for data of `dtype`: float64 stays float64, all else is float32."""
    return _TL_DTYPES[torch.float64 if dtype == torch.float64 else torch.float32]


def pixel_block(pixels: int) -> int:
    return min(MAX_PIXEL_BLOCK, triton.next_power_of_2(max(pixels, 1)))


def warps_for(lanes: int) -> int:
    """1 warp per 256 lanes of a block, between 1 and 8."""
    return max(1, min(8, lanes // 256))


def dense_rows(images: torch.Tensor) -> bool:
    """Rows of each channel plane stored back to back (NCHW, channels_last, not a column slice)."""
    return images.stride(2) == images.shape[3] * images.stride(3)


def check_launchable(kernel, *tensors: torch.Tensor) -> None:
    """Triton launches need CUDA tensors, or CPU tensors with the interpreter enabled."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(str(d) for d in devices)}")
    (device,) = devices
    if device.type == "cuda":
        return
    if type(kernel).__name__ != "InterpretedFunction":
        raise RuntimeError(
            f"the Triton backend runs CUDA tensors; {device} tensors need the Triton interpreter "
            "(set TRITON_INTERPRET=1 before triton is first imported) or backend='pytorch'")
