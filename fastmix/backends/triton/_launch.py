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
ELEMENT_BLOCK = 1024          # elements per program of a channels_last sample
MAX_GRID_X = 2**31 - 1        # CUDA's limit on grid axis 0 (axes 1 and 2: 65,535, unused)
MAX_INDEX = 2**31 - 1         # in-sample offsets and map indices are int32

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


def output_like(images: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Output for `images`: the same strides when each sample is a dense NCHW or channels_last
    block, otherwise (a column slice, any other layout) dense NCHW."""
    if images.is_contiguous() or images.is_contiguous(memory_format=torch.channels_last):
        return empty_like(images, dtype=dtype)
    return empty(images.shape, dtype or images.dtype, images.device)


def is_channels_last(out: torch.Tensor) -> bool:
    """Layout of an `output_like` tensor (NCHW when it is both, e.g. C == 1)."""
    return not out.is_contiguous()


def same_sample_layout(images: torch.Tensor, out: torch.Tensor) -> bool:
    """Each sample of images laid out like out's, so an element's offset within the sample is
    the same in both (the batch stride may differ)."""
    return images.stride()[1:] == out.stride()[1:]


def element_chunks(out: torch.Tensor) -> tuple[int, int]:
    """(chunks per sample, elements per chunk) of the element kernels for a dense output:
    channels_last samples are cut into ELEMENT_BLOCK pieces; NCHW samples into one pixel tile of
    one channel plane each (C * tiles chunks)."""
    _, channels, height, width = out.shape
    plane = height * width
    if channels * plane > MAX_INDEX:
        raise ValueError(f"a sample of {channels}x{height}x{width} elements exceeds the kernels' int32 "
                         f"indexing ({MAX_INDEX} elements per sample)")
    if is_channels_last(out):
        return triton.cdiv(channels * plane, ELEMENT_BLOCK), ELEMENT_BLOCK
    block = pixel_block(plane)
    return channels * triton.cdiv(plane, block), block


def check_sample_offsets(tensor: torch.Tensor, name: str = "images") -> None:
    """Offsets inside one sample (all dims but the batch) must fit the kernels' int32 arithmetic;
    batch offsets are 64-bit. Only a view with enormous strides can break this."""
    largest = sum((size - 1) * abs(stride) for size, stride in zip(tensor.shape[1:], tensor.stride()[1:]) if size)
    if largest > MAX_INDEX:
        raise ValueError(f"{name}: offsets inside one sample reach {largest}, beyond the kernels' int32 indexing "
                         f"({MAX_INDEX}); pass a contiguous tensor")


def sample_grid(batch: int, chunks: int) -> tuple[int]:
    """1-D grid of batch * chunks programs (sample fastest), checked against CUDA's limit.
    Launchers skip the launch when it is empty."""
    programs = batch * chunks
    if programs > MAX_GRID_X:
        raise ValueError(f"{batch} samples x {chunks} chunks = {programs} programs exceed CUDA's grid limit "
                         f"({MAX_GRID_X}); split the batch")
    return (programs,)


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
