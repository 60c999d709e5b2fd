"""DALI per-sample tensors <-> the [B, C, H, W] batches and [B] parameters fastmix's operators take.

DALI hands a python operator one tensor per sample; the layout is known from the graph (see
layouts.py) and, on the CPU, checked against the images' "layout" property at run time. HWC
samples become a channels_last NCHW view of the batch, CHW samples a contiguous one (a view of
DALI's buffer when the samples lie back to back, else a stack); fastmix keeps the memory format,
so the mixed batch converts back to the input's layout without another copy.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch


def check_declared_layout(layout_samples: list[torch.Tensor], declared: str, operator: str) -> None:
    """Run time, CPU: the images' own layout must be the one the graph gave (an unlabelled batch
    takes the declared one)."""
    actual = bytes(layout_samples[0].cpu().tolist()).decode("ascii") if layout_samples else ""
    if actual and actual != declared:
        raise ValueError(f"{operator}: the graph gave the images layout {declared!r} but they have {actual!r}; "
                         "pass the right layout= or label them with fn.reshape(images, layout=...)")


def sample_to_chw(sample: torch.Tensor, layout: str) -> torch.Tensor:
    return sample.permute(2, 0, 1) if layout == "HWC" else sample


def chw_to_layout(images: torch.Tensor, layout: str) -> torch.Tensor:
    """[..., C, H, W] -> the same data in `layout` ([..., H, W, C] for HWC)."""
    return images.movedim(-3, -1) if layout == "HWC" else images


def check_uniform(samples: list[torch.Tensor], operator: str, what: str = "image") -> None:
    shapes = sorted({tuple(s.shape) for s in samples})
    if len(shapes) > 1:
        raise ValueError(f"{operator} mixes the samples of a batch with each other, so every {what} must have "
                         f"the same shape; this batch has shapes {shapes}. Resize or crop to one size first "
                         "(e.g. fn.resize(images, size=[H, W]) or fn.crop_mirror_normalize(crop=...)).")


@dataclass
class ImageBatch:
    """A uniform batch of DALI images as one NCHW tensor, and the layout to return it in."""

    nchw: torch.Tensor
    layout: str

    @classmethod
    def from_samples(cls, samples: list[torch.Tensor], layout: str, operator: str) -> "ImageBatch":
        """`samples` in `layout` (known from the graph) -> one NCHW batch."""
        if any(s.dim() != 3 for s in samples):
            raise ValueError(f"{operator} needs 3-D {layout} images, got shapes {[tuple(s.shape) for s in samples]}")
        check_uniform(samples, operator)
        return cls(stacked_to_nchw(batch_tensor(samples), layout), layout)

    def to_layout(self, nchw: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, ...] in this batch's layout (contiguous for channels_last HWC)."""
        return chw_to_layout(nchw, self.layout)


def _wrap_memory(pointer: int, nbytes: int, device: torch.device) -> torch.Tensor:
    """uint8 [nbytes] over memory DALI owns, without a copy (valid while the batch function runs)."""
    if device.type == "cpu":
        return torch.frombuffer((ctypes.c_uint8 * nbytes).from_address(pointer), dtype=torch.uint8)

    class _CudaBuffer:  # the smallest __cuda_array_interface__ torch accepts
        __cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (pointer, False), "version": 2,
                                    "strides": None, "stream": None}

    return torch.as_tensor(_CudaBuffer(), device=device)


def batch_tensor(samples: list[torch.Tensor]) -> torch.Tensor:
    """[B, ...] of uniform samples: a view of DALI's buffer when the samples lie back to back in
    one allocation (the usual case for a DALI TensorList), else a stacked copy."""
    first = samples[0]
    nbytes = first.numel() * first.element_size()
    contiguous = all(s.is_contiguous() and s.dtype == first.dtype and s.device == first.device for s in samples)
    if contiguous and nbytes and all(s.data_ptr() == first.data_ptr() + i * nbytes for i, s in enumerate(samples)):
        flat = _wrap_memory(first.data_ptr(), nbytes * len(samples), first.device)
        return flat.view(first.dtype).view(len(samples), *first.shape)
    return torch.stack(samples)


def stacked_to_nchw(stacked: torch.Tensor, layout: str) -> torch.Tensor:
    """[B, ...] stacked samples in `layout` -> an NCHW view (channels_last for HWC)."""
    return stacked.permute(0, 3, 1, 2) if layout == "HWC" else stacked


def host_vector(samples: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Per-sample scalars as a CPU [B] tensor: the operators validate and place parameters on the
    host. On the GPU this is one small read, ordered on DALI's stream (no device-wide sync)."""
    return torch.stack([s.reshape(()) for s in samples]).to(device="cpu", dtype=dtype)


def stack_saliency(samples: list[torch.Tensor], images: ImageBatch, operator: str) -> torch.Tensor:
    """Per-sample saliency maps [H, W], [1, H, W] or [H, W, 1] -> [B, H, W] on the images' device."""
    height, width = images.nchw.shape[2:]
    maps = []
    for s in samples:
        if s.dim() == 3 and s.shape[0] == 1:
            s = s[0]
        elif s.dim() == 3 and s.shape[2] == 1:
            s = s[..., 0]
        if tuple(s.shape) != (height, width):
            raise ValueError(f"{operator}: each saliency map must be [H, W], [1, H, W] or [H, W, 1] with the images' "
                             f"H, W = {height}, {width}; got shapes {[tuple(t.shape) for t in samples]}")
        maps.append(s)
    return torch.stack(maps).to(images.nchw.device)
