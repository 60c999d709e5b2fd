"""The "training step overhead" benchmark: one ResNet-18 SGD step with and without each operator.

The model is ResNet-18 written in plain torch (torchvision does not import everywhere the suite
runs): BasicBlocks [2, 2, 2, 2] at widths 64-128-256-512; the CIFAR variant has a 3x3 stride-1
stem and no max-pool (as PreActResNet-18 in SAGE's and Puzzle Mix's code), the ImageNet variant
the 7x7 stride-2 stem and max-pool. Steps come from `fastmix.training` (`mix_step` for the
model-free operators, `sage_step` for SAGE, which includes SAGE's extra clean forward and
backward for the saliency) and, for contrast, from `reference_sage_step` (the same iteration
with the reference-structure SAGE mix). Every step is a full SGD iteration: zero_grad, forward,
loss, backward, optimizer.step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# SAGE's CIFAR-10 recipe (algorithms.md section 1.6).
SAGE_RECIPE = {"upper_lambda": 0.6, "rand_pos": 0.01}
SAGE_UPDATE_RATIO = 0.7


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, num_classes: int, small_input: bool, width: int = 64):
        super().__init__()
        if small_input:
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        layers, channels = [], width
        for stage, stride in enumerate((1, 2, 2, 2)):
            out = width * 2 ** stage
            layers += [BasicBlock(channels, out, stride), BasicBlock(out, out, 1)]
            channels = out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = self.layers(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@dataclass
class StepContender:
    operator: str     # "none", "mixup", ..., "sage"
    contender: str    # shown in the table
    kind: str         # "baseline" | "fastmix-auto" | "reference"
    make_step: Callable  # (model, optimizer, num_classes) -> fn(input_set)


def _fastmix_mix(operator: str, **kwargs):
    def make(model, optimizer, num_classes):
        from fastmix.training import mix_step

        return lambda s: mix_step(model, optimizer, s["x"], s["y"], operator=operator, num_classes=num_classes, **kwargs)
    return make


def _fastmix_sage(model, optimizer, num_classes):
    from fastmix.training import sage_step

    return lambda s: sage_step(model, optimizer, s["x"], s["y"], update_ratio=SAGE_UPDATE_RATIO,
                               num_classes=num_classes, **SAGE_RECIPE)


def _reference_sage(model, optimizer, num_classes):
    from .references import get

    reference_sage_step = get("reference_sage_step")

    rng = np.random.RandomState(0)
    return lambda s: reference_sage_step(model, optimizer, s["x"], s["y"], num_classes,
                                         update_ratio=SAGE_UPDATE_RATIO, rng=rng, **SAGE_RECIPE)


STEP_CONTENDERS = [
    StepContender("none", "no mixing", "baseline", _fastmix_mix("none")),
    StepContender("mixup", "fastmix Mixup", "fastmix-auto", _fastmix_mix("mixup")),
    StepContender("cutmix", "fastmix CutMix", "fastmix-auto", _fastmix_mix("cutmix")),
    StepContender("cutout", "fastmix CutOut", "fastmix-auto", _fastmix_mix("cutout")),
    StepContender("saliencymix", "fastmix SaliencyMix", "fastmix-auto", _fastmix_mix("saliencymix", value_range=None)),
    StepContender("sage", "fastmix SAGE (+ saliency pass)", "fastmix-auto", _fastmix_sage),
    StepContender("sage", "reference SAGE (+ saliency pass)", "reference", _reference_sage),
]


def build_model(num_classes: int, small_input: bool, width: int, device: torch.device):
    """ResNet-18 and its SGD optimiser (SAGE's: nesterov, momentum 0.9, wd 1e-4; small lr so
    random data cannot blow the weights up during timing)."""
    torch.manual_seed(0)
    model = ResNet18(num_classes, small_input, width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    return model, optimizer
