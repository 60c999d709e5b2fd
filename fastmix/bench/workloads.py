"""The benchmark sizes and the synthetic inputs every contender of a size receives.

Classification sizes (CIFAR, ImageNet) give normalised float32 images, int labels and an input
gradient: Gaussian noise under a few Gaussian blobs per image, so the saliency-guided operators
(SAGE, Puzzle Mix, Co-Mixup) see concentrated saliency the way a trained network's gradient is
concentrated, rather than uniform noise. The COCO-like size gives uint8 1024 x 1024 images with
about 20 elliptical instance masks each, in fastmix's `InstanceBatch` form and in the per-image
NumPy form of the reference Copy-Paste.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CIFAR_MEAN, CIFAR_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)  # CIFAR-100
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClassificationSize:
    name: str
    batch: int
    channels: int
    side: int
    num_classes: int
    mean: tuple
    std: tuple
    label: str

    @property
    def shape(self) -> list[int]:
        return [self.batch, self.channels, self.side, self.side]

    def image_bytes(self) -> int:
        return 4 * self.batch * self.channels * self.side * self.side


@dataclass(frozen=True)
class InstanceSize:
    name: str
    batch: int
    side: int
    instances: int
    label: str

    @property
    def shape(self) -> list[int]:
        return [self.batch, 3, self.side, self.side]

    def image_bytes(self) -> int:
        return self.batch * 3 * self.side * self.side  # uint8

    def mask_bytes(self) -> int:
        return self.batch * self.instances * self.side * self.side  # bool


SIZES = {
    "full": {
        "cifar": ClassificationSize("cifar", 100, 3, 32, 100, CIFAR_MEAN, CIFAR_STD, "CIFAR (B=100, 3x32x32)"),
        "imagenet": ClassificationSize("imagenet", 256, 3, 224, 1000, IMAGENET_MEAN, IMAGENET_STD,
                                       "ImageNet (B=256, 3x224x224)"),
        "coco": InstanceSize("coco", 8, 1024, 20, "COCO-like (B=8, 3x1024x1024, 20 instances/image)"),
    },
    "tiny": {  # the CI smoke test: every code path, seconds in all
        "cifar": ClassificationSize("cifar", 4, 3, 16, 10, CIFAR_MEAN, CIFAR_STD, "tiny CIFAR (B=4, 3x16x16)"),
        "imagenet": ClassificationSize("imagenet", 2, 3, 32, 10, IMAGENET_MEAN, IMAGENET_STD,
                                       "tiny ImageNet (B=2, 3x32x32)"),
        "coco": InstanceSize("coco", 2, 64, 3, "tiny COCO-like (B=2, 3x64x64, 3 instances/image)"),
    },
}


def _blobs(batch: int, side: int, gen: torch.Generator, count: int = 3) -> torch.Tensor:
    """[B, 1, side, side] sum of `count` Gaussian blobs per image plus a small floor."""
    coords = torch.arange(side, dtype=torch.float32)
    centres = torch.rand(batch, count, 2, generator=gen) * side
    sigmas = side * (0.08 + 0.12 * torch.rand(batch, count, 1, generator=gen))
    dy = coords.view(1, 1, side, 1) - centres[..., 0].view(batch, count, 1, 1)
    dx = coords.view(1, 1, 1, side) - centres[..., 1].view(batch, count, 1, 1)
    sig = sigmas.view(batch, count, 1, 1)
    blobs = torch.exp(-(dy ** 2 + dx ** 2) / (2 * sig ** 2)).sum(dim=1, keepdim=True)
    return blobs + 0.05


def classification_inputs(size: ClassificationSize, count: int, device: torch.device, seed: int = 0) -> list[dict]:
    """`count` independent sets of {"x", "y", "grad"} on `device` (built on the CPU, then moved)."""
    sets = []
    mean = torch.tensor(size.mean).view(1, -1, 1, 1)
    std = torch.tensor(size.std).view(1, -1, 1, 1)
    for index in range(count):
        gen = torch.Generator().manual_seed(seed * 1000 + index)
        shape = (size.batch, size.channels, size.side, size.side)
        pixels = torch.rand(shape, generator=gen)
        x = (pixels - mean) / std
        y = torch.randint(0, size.num_classes, (size.batch,), generator=gen)
        grad = torch.randn(shape, generator=gen) * _blobs(size.batch, size.side, gen) * 1e-3
        sets.append({"x": x.to(device), "y": y.to(device), "grad": grad.to(device),
                     "mean": mean.to(device), "std": std.to(device)})
    return sets


def _ellipse_masks(count: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """bool [count, side, side] random axis-aligned ellipses, 3% to 25% of the side in radius."""
    coords = torch.arange(side, dtype=torch.float32)
    centre = torch.rand(count, 2, generator=gen) * side
    radius = side * (0.03 + 0.22 * torch.rand(count, 2, generator=gen))
    dy = (coords.view(1, side, 1) - centre[:, 0].view(count, 1, 1)) / radius[:, 0].view(count, 1, 1)
    dx = (coords.view(1, 1, side) - centre[:, 1].view(count, 1, 1)) / radius[:, 1].view(count, 1, 1)
    return dy ** 2 + dx ** 2 <= 1.0


def instance_inputs(size: InstanceSize, count: int, device: torch.device, seed: int = 0) -> list[dict]:
    """`count` sets of {"batch": InstanceBatch on device, "samples": per-image NumPy dicts,
    "params": one CopyPasteParams draw shared by fastmix and the reference}."""
    from fastmix.copy_paste import InstanceBatch, draw_copy_paste_params, masks_to_boxes

    sets = []
    for index in range(count):
        gen = torch.Generator().manual_seed(seed * 1000 + index)
        images, masks, boxes, labels, samples = [], [], [], [], []
        for _ in range(size.batch):
            image = torch.randint(0, 256, (3, size.side, size.side), generator=gen, dtype=torch.uint8)
            mask = _ellipse_masks(size.instances, size.side, gen)
            label = torch.randint(1, 81, (size.instances,), generator=gen)
            images.append(image)
            masks.append(mask)
            boxes.append(masks_to_boxes(mask))
            labels.append(label)
            samples.append({"image": image.permute(1, 2, 0).contiguous().numpy(), "masks": mask.numpy(),
                            "labels": label.numpy().astype(np.int64)})
        batch = InstanceBatch.from_lists(torch.stack(images), masks, boxes, labels)
        params = draw_copy_paste_params(batch.counts, batch.image_sizes, (size.side, size.side),
                                        max_instances=batch.max_instances, generator=gen)
        on_device = InstanceBatch.from_lists(torch.stack(images).to(device), [m.to(device) for m in masks],
                                             [b.to(device) for b in boxes], [lab.to(device) for lab in labels])
        sets.append({"batch": on_device, "samples": samples, "params": params})
    return sets
