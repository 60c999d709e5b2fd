"""The instance-segmentation batch: images plus, per image, instance masks, boxes and labels.

Two equivalent forms:

* **lists** (one entry per image): images ``[C, h_i, w_i]``, masks ``[N_i, h_i, w_i]`` (bool or
  uint8, nonzero = object), boxes ``[N_i, 4]`` float32 ``(x1, y1, x2, y2)`` in pixels with
  x2/y2 exclusive, labels ``[N_i]`` int64. Images may differ in size.
* **padded** (:class:`InstanceBatch`): images ``[B, C, H, W]`` with image i in the top-left
  ``image_sizes[i]`` corner and zeros elsewhere, masks ``[B, Nmax, H, W]``, boxes
  ``[B, Nmax, 4]``, labels ``[B, Nmax]``, and ``counts[B]``: slots at or beyond ``counts[i]``
  are padding (zeros) and are ignored by every operator.

``counts`` and ``image_sizes`` are small int64 tensors kept on the CPU: they size the work, and
reading them must not wait for the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .._checks import FLOAT_DTYPES

IMAGE_DTYPES = FLOAT_DTYPES + (torch.uint8,)
MASK_DTYPES = (torch.bool, torch.uint8)

__all__ = ["InstanceBatch", "masks_to_boxes"]


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """float32 [N, 4] (x1, y1, x2, y2) boxes of masks [N, H, W], x2/y2 exclusive; empty -> zeros."""
    from ..backends.pytorch.copy_paste import instance_boxes_areas

    _check_mask_dtype(masks, "masks")
    return instance_boxes_areas(masks != 0)[0]


def _check_mask_dtype(masks: torch.Tensor, name: str) -> None:
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(masks).__name__}")
    if masks.dtype not in MASK_DTYPES:
        raise TypeError(f"{name} must be bool or uint8 (nonzero = object pixel), got {masks.dtype}")


def _check_label_dtype(labels: torch.Tensor, name: str) -> None:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids, got {labels.dtype}")


def _check_box_dtype(boxes: torch.Tensor, name: str) -> None:
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dtype == torch.bool or boxes.dtype.is_complex:
        raise TypeError(f"{name} must be float (x1, y1, x2, y2) pixel boxes, got {boxes.dtype}")


def _check_image_dtype(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype not in IMAGE_DTYPES:
        allowed = ", ".join(str(d).replace("torch.", "") for d in IMAGE_DTYPES)
        raise TypeError(f"{name} must have dtype in ({allowed}), got {images.dtype}")


def _as_host_int64(values, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    t = torch.as_tensor(values)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise TypeError(f"{name} must be integers, got {t.dtype}")
    t = t.to(device="cpu", dtype=torch.int64)
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(t.shape)}")
    return t


@dataclass
class InstanceBatch:
    """A padded batch of images with instance annotations (see the module docstring).

    Build it from per-image lists with :meth:`from_lists`; get the lists back with
    :meth:`to_lists`. The constructor validates the padded tensors and raises ``TypeError`` /
    ``ValueError`` saying what is wrong.
    """

    images: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    counts: torch.Tensor
    image_sizes: torch.Tensor | None = None

    def __post_init__(self):
        _check_image_dtype(self.images, "images")
        if self.images.dim() != 4:
            raise ValueError(f"images must be [B, C, H, W], got shape {list(self.images.shape)}")
        batch, _, height, width = self.images.shape
        if batch == 0:
            raise ValueError("images is an empty batch (B == 0)")
        if height == 0 or width == 0:
            raise ValueError(f"images have an empty spatial size {(height, width)}")
        _check_mask_dtype(self.masks, "masks")
        _check_box_dtype(self.boxes, "boxes")
        _check_label_dtype(self.labels, "labels")
        if self.masks.dim() != 4 or self.masks.shape[0] != batch or tuple(self.masks.shape[2:]) != (height, width):
            raise ValueError(f"masks must be [B={batch}, Nmax, H={height}, W={width}], got {list(self.masks.shape)}")
        slots = self.masks.shape[1]
        if tuple(self.boxes.shape) != (batch, slots, 4):
            raise ValueError(f"boxes must be [B={batch}, Nmax={slots}, 4] to match the masks, got {list(self.boxes.shape)}")
        if tuple(self.labels.shape) != (batch, slots):
            raise ValueError(f"labels must be [B={batch}, Nmax={slots}] to match the masks, got {list(self.labels.shape)}")
        for name in ("masks", "boxes", "labels"):
            t = getattr(self, name)
            if t.device != self.images.device:
                raise ValueError(f"{name} is on {t.device} but the images are on {self.images.device}")
        self.counts = _as_host_int64(self.counts, "counts", (batch,))
        if bool((self.counts < 0).any()) or bool((self.counts > slots).any()):
            raise ValueError(f"counts must lie in [0, Nmax={slots}], got {self.counts.tolist()}")
        if self.image_sizes is None:
            self.image_sizes = torch.tensor([[height, width]] * batch, dtype=torch.int64)
        self.image_sizes = _as_host_int64(self.image_sizes, "image_sizes", (batch, 2))
        sizes = self.image_sizes
        if bool((sizes < 1).any()) or bool((sizes[:, 0] > height).any()) or bool((sizes[:, 1] > width).any()):
            raise ValueError(f"image_sizes must lie in [1, {height}] x [1, {width}], got {sizes.tolist()}")
        self.boxes = self.boxes.to(torch.float32)
        self.labels = self.labels.to(torch.int64)

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    @property
    def max_instances(self) -> int:
        return self.masks.shape[1]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def active(self) -> torch.Tensor:
        """bool [B, Nmax]: True for real instances, False for padding slots (on the images' device)."""
        slots = torch.arange(self.max_instances)[None, :]
        return (slots < self.counts[:, None]).to(self.device)

    @classmethod
    def from_lists(cls, images, masks: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor] | None = None,
                   labels: Sequence[torch.Tensor] | None = None) -> "InstanceBatch":
        """Pad per-image lists into a batch.

        images: a sequence of [C, h_i, w_i] tensors or one [B, C, H, W] tensor. masks: per image
        [N_i, h_i, w_i] bool/uint8. boxes: per image [N_i, 4] (x1, y1, x2, y2) pixels, or None to
        derive them from the masks. labels: per image [N_i] integer class ids (required).
        """
        if isinstance(images, torch.Tensor):
            _check_image_dtype(images, "images")
            if images.dim() != 4:
                raise ValueError(f"a tensor of images must be [B, C, H, W], got shape {list(images.shape)}")
            image_list = list(images.unbind(0))
        elif isinstance(images, (list, tuple)):
            image_list = list(images)
        else:
            raise TypeError(f"images must be a sequence of [C, H, W] tensors or a [B, C, H, W] tensor, "
                            f"got {type(images).__name__}")
        batch = len(image_list)
        if batch == 0:
            raise ValueError("images is an empty batch (B == 0)")
        if labels is None:
            raise ValueError("labels are required: one [N_i] tensor of class ids per image")
        for name, seq in (("masks", masks), ("labels", labels), ("boxes", boxes)):
            if seq is None:
                continue
            if not isinstance(seq, (list, tuple)):
                raise TypeError(f"{name} must be a list with one tensor per image, got {type(seq).__name__}")
            if len(seq) != batch:
                raise ValueError(f"{name} has {len(seq)} entries but there are {batch} images")

        first = image_list[0]
        _check_image_dtype(first, "images[0]")
        for i, image in enumerate(image_list):
            _check_image_dtype(image, f"images[{i}]")
            if image.dim() != 3:
                raise ValueError(f"images[{i}] must be [C, H, W], got shape {list(image.shape)}")
            if image.shape[0] != first.shape[0] or image.dtype != first.dtype or image.device != first.device:
                raise ValueError(f"images[{i}] ({image.shape[0]} channels, {image.dtype}, {image.device}) differs "
                                 f"from images[0] ({first.shape[0]} channels, {first.dtype}, {first.device})")
            if image.shape[1] == 0 or image.shape[2] == 0:
                raise ValueError(f"images[{i}] has an empty spatial size {tuple(image.shape[1:])}")
            mask = masks[i]
            _check_mask_dtype(mask, f"masks[{i}]")
            if mask.dim() != 3 or tuple(mask.shape[1:]) != tuple(image.shape[1:]):
                raise ValueError(f"masks[{i}] must be [N, {image.shape[1]}, {image.shape[2]}] like images[{i}], "
                                 f"got {list(mask.shape)}")
            _check_label_dtype(labels[i], f"labels[{i}]")
            if labels[i].dim() != 1 or labels[i].shape[0] != mask.shape[0]:
                raise ValueError(f"image {i} has {mask.shape[0]} masks but labels[{i}] has shape {list(labels[i].shape)}")
            if boxes is not None:
                _check_box_dtype(boxes[i], f"boxes[{i}]")
                if boxes[i].dim() != 2 or tuple(boxes[i].shape) != (mask.shape[0], 4):
                    raise ValueError(f"image {i} has {mask.shape[0]} masks but boxes[{i}] has shape "
                                     f"{list(boxes[i].shape)} (expected [{mask.shape[0]}, 4])")
            for name, t in (("masks", mask), ("labels", labels[i])) + ((("boxes", boxes[i]),) if boxes is not None else ()):
                if t.device != first.device:
                    raise ValueError(f"{name}[{i}] is on {t.device} but the images are on {first.device}")

        sizes = torch.tensor([[im.shape[1], im.shape[2]] for im in image_list], dtype=torch.int64)
        height, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        counts = torch.tensor([m.shape[0] for m in masks], dtype=torch.int64)
        slots = int(counts.max())
        device, mask_dtype = first.device, masks[0].dtype
        if any(m.dtype != mask_dtype for m in masks):
            raise ValueError("all masks must share one dtype (bool or uint8)")
        padded_images = first.new_zeros((batch, first.shape[0], height, width))
        padded_masks = torch.zeros((batch, slots, height, width), dtype=mask_dtype, device=device)
        padded_boxes = torch.zeros((batch, slots, 4), dtype=torch.float32, device=device)
        padded_labels = torch.zeros((batch, slots), dtype=torch.int64, device=device)
        for i, image in enumerate(image_list):
            h, w, n = image.shape[1], image.shape[2], masks[i].shape[0]
            padded_images[i, :, :h, :w] = image
            padded_masks[i, :n, :h, :w] = masks[i]
            padded_boxes[i, :n] = masks_to_boxes(masks[i]) if boxes is None else boxes[i].to(torch.float32)
            padded_labels[i, :n] = labels[i]
        return cls(padded_images, padded_masks, padded_boxes, padded_labels, counts, sizes)

    def to_lists(self):
        """(images, masks, boxes, labels): per-image lists cropped to each image's size and count."""
        images, masks, boxes, labels = [], [], [], []
        for i in range(self.batch_size):
            h, w = self.image_sizes[i].tolist()
            n = int(self.counts[i])
            images.append(self.images[i, :, :h, :w])
            masks.append(self.masks[i, :n, :h, :w])
            boxes.append(self.boxes[i, :n])
            labels.append(self.labels[i, :n])
        return images, masks, boxes, labels
