"""DALI per-sample tensors <-> the [B, C, H, W] batches and [B] parameters fastmix's operators take.

DALI hands a python operator one tensor per sample, and the layout travels separately (as the
"layout" property of the images, read at run time). HWC samples become a channels_last NCHW
view of their stack, CHW samples a contiguous one; fastmix keeps the memory format, so the
mixed batch converts back to the input's layout without another copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LAYOUTS = ("HWC", "CHW")


def decode_layout(layout_samples: list[torch.Tensor], operator: str) -> str:
    """The layout string from the per-sample uint8 "layout" property (one per batch in DALI)."""
    layout = bytes(layout_samples[0].cpu().tolist()).decode("ascii") if layout_samples else ""
    if layout == "":
        raise ValueError(f"{operator}: the images carry no layout; give them one, e.g. "
                         "fn.reshape(images, layout='HWC'), or read them with a decoder")
    if layout not in LAYOUTS:
        raise ValueError(f"{operator} supports images with layout HWC (e.g. from fn.decoders.image) or CHW "
                         f"(e.g. from fn.crop_mirror_normalize); the input's layout is {layout!r}")
    return layout


def validate_output_layout(output_layout: str | None) -> None:
    """At graph construction: the label requested for the images output."""
    if output_layout is not None and output_layout not in LAYOUTS:
        raise ValueError(f"output_layout must be 'HWC', 'CHW' or None, got {output_layout!r}")


def check_output_layout(layout: str, output_layout: str | None, operator: str) -> None:
    """At run time: the label given to the output must be the input's layout."""
    if output_layout is not None and output_layout != layout:
        raise ValueError(f"{operator}: output_layout={output_layout!r} but the input images have layout "
                         f"{layout!r}; the output keeps the input's layout")


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
    def from_samples(cls, samples: list[torch.Tensor], layout_samples: list[torch.Tensor],
                     operator: str) -> "ImageBatch":
        layout = decode_layout(layout_samples, operator)
        if any(s.dim() != 3 for s in samples):
            raise ValueError(f"{operator} needs 3-D {layout} images, got shapes {[tuple(s.shape) for s in samples]}")
        check_uniform(samples, operator)
        return cls(stacked_to_nchw(torch.stack(samples), layout), layout)

    def to_layout(self, nchw: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, ...] in this batch's layout (contiguous for channels_last HWC)."""
        return chw_to_layout(nchw, self.layout)


def stacked_to_nchw(stacked: torch.Tensor, layout: str) -> torch.Tensor:
    """[B, ...] stacked samples in `layout` -> an NCHW view (channels_last for HWC)."""
    return stacked.permute(0, 3, 1, 2) if layout == "HWC" else stacked


def host_vector(samples: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Per-sample scalars as a CPU [B] tensor: the operators validate and place parameters on the
    host. On the GPU this is one small read, ordered on DALI's stream (no device-wide sync)."""
    return torch.stack([s.reshape(()) for s in samples]).to(device="cpu", dtype=dtype)


def stack_labels(samples: list[torch.Tensor], operator: str) -> torch.Tensor:
    """Integer class ids (per sample a scalar or [1], as fn.readers.file gives) -> [B] int64;
    soft labels (per sample float [C]) -> [B, C] float32."""
    if all(s.numel() == 1 and not s.dtype.is_floating_point for s in samples):
        return torch.stack([s.reshape(()) for s in samples]).long()
    if all(s.dim() == 1 and s.dtype.is_floating_point for s in samples):
        check_uniform(samples, operator, "soft label")
        return torch.stack(samples).float()
    raise ValueError(f"{operator}: labels must be one integer class id per sample (shape [] or [1]) or one "
                     f"float vector [num_classes] per sample; got {[(tuple(s.shape), str(s.dtype)) for s in samples]}")


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
