"""Backend selection and the metadata checks the ops share (no host sync: they also run on
fake tensors under torch.compile)."""
from __future__ import annotations

import torch

from ..backends import triton as triton_backend

BACKENDS = ("auto", "pytorch", "triton")


def resolve(backend: str, tensor: torch.Tensor) -> str:
    """"auto": Triton for CUDA tensors when triton is installed, PyTorch otherwise. "triton" on
    CPU tensors runs the kernels under the Triton interpreter (TRITON_INTERPRET=1)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.device.type == "cuda" and triton_backend.available() else "pytorch"
    if backend == "triton" and not triton_backend.available():
        raise RuntimeError("backend='triton' needs the triton package (Linux); use backend='pytorch'")
    return backend


def check_tensor(tensor: torch.Tensor, name: str, shape: tuple, dtypes: tuple, device: torch.device) -> None:
    """`shape` entries of None match any size."""
    if tensor.dim() != len(shape) or any(want is not None and got != want for got, want in zip(tensor.shape, shape)):
        wanted = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape [{wanted}], got {tuple(tensor.shape)}")
    if tensor.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {dtypes}, got {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"{name} is on {tensor.device} but the images are on {device}")


FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAP_FLOATS = (torch.float32, torch.float64)
INDICES = (torch.int64,)


def check_images(images: torch.Tensor, *, allow_uint8: bool) -> None:
    allowed = FLOATS + ((torch.uint8,) if allow_uint8 else ())
    check_tensor(images, "images", (None, None, None, None), allowed, images.device)


def output_dtype(images: torch.Tensor, out_dtype: torch.dtype | None) -> torch.dtype:
    """The images' dtype, or a float dtype for uint8 images (uint8 in, float out)."""
    if out_dtype is None or out_dtype == images.dtype:
        return images.dtype
    if images.dtype == torch.uint8 and out_dtype in FLOATS:
        return out_dtype
    raise TypeError(f"out_dtype must be the images' dtype ({images.dtype}) or, for uint8 images, "
                    f"a float dtype; got {out_dtype}")
