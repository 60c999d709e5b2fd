"""Batch transforms in the style of torchvision.transforms.v2: `t(images, labels) -> (images, targets)`.

Labels are int class indices [B] or soft labels [B, num_classes]; targets are float32
[B, num_classes]. Every transform keeps its own torch.Generator (seed it for reproducibility)
and exposes the MixResult of its last call as `last_result`.
"""
from __future__ import annotations

import torch

from .gradient_saliency import saliency as gradient_saliency
from .operators.boxes import cutmix, cutout, saliencymix
from .operators.mixup import mixup
from .operators.sage import sage_mix
from .result import MixResult


class _BatchMix(torch.nn.Module):
    def __init__(self, num_classes: int, *, per_sample: bool = False, label_smoothing: float = 0.0,
                 generator: torch.Generator | None = None, seed: int | None = None):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.per_sample = per_sample
        self.label_smoothing = label_smoothing
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator
        self.last_result: MixResult | None = None

    def _finish(self, result: MixResult, labels):
        self.last_result = result
        return result.images, result.targets(labels, self.num_classes, self.label_smoothing)


class _AlphaMix(_BatchMix):
    """A transform around one operator that draws lam ~ Beta(alpha, alpha)."""

    operator = None

    def __init__(self, num_classes: int, alpha: float = 1.0, **kwargs):
        super().__init__(num_classes, **kwargs)
        self.alpha = alpha

    def operator_kwargs(self) -> dict:
        return {}

    def forward(self, images, labels):
        result = type(self).operator(images, alpha=self.alpha, per_sample=self.per_sample,
                                     generator=self.generator, **self.operator_kwargs())
        return self._finish(result, labels)


class MixUp(_AlphaMix):
    """Mixup with lam ~ Beta(alpha, alpha), per batch or per sample."""

    operator = staticmethod(mixup)


class CutMix(_AlphaMix):
    """CutMix with the official box geometry and area-corrected lam."""

    operator = staticmethod(cutmix)


class SaliencyMix(_AlphaMix):
    """SaliencyMix: the partner's most salient box, pasted at the same place."""

    operator = staticmethod(saliencymix)

    def __init__(self, num_classes: int, alpha: float = 1.0, value_range=(0.0, 1.0), **kwargs):
        super().__init__(num_classes, alpha, **kwargs)
        self.value_range = value_range

    def operator_kwargs(self) -> dict:
        return {"value_range": self.value_range}


class CutOut(_BatchMix):
    """CutOut: erase a square per sample; targets are the (smoothed) one-hot labels."""

    def __init__(self, num_classes: int, length: int | None = None, value: float = 0.0, **kwargs):
        kwargs.setdefault("per_sample", True)
        super().__init__(num_classes, **kwargs)
        self.length, self.value = length, value

    def forward(self, images, labels):
        return self._finish(cutout(images, length=self.length, value=self.value,
                                   per_sample=self.per_sample, generator=self.generator), labels)


class SageMix(_BatchMix):
    """SAGE. Call with grad= or saliency=, or give `model` to compute the input-gradient saliency
    (BCE on softmax, the model's parameter gradients untouched) inside the call."""

    def __init__(self, num_classes: int, alpha: float = 1.0, upper_lambda: float = 1.0,
                 rand_pos: float = 0.01, kernel_size: int = 5, sigma: float = 1.0,
                 model: torch.nn.Module | None = None, search: str = "random", **kwargs):
        super().__init__(num_classes, **kwargs)
        self.alpha, self.upper_lambda, self.rand_pos = alpha, upper_lambda, rand_pos
        self.kernel_size, self.sigma, self.search = kernel_size, sigma, search
        self.model = model

    def forward(self, images, labels, *, grad=None, saliency=None):
        if grad is None and saliency is None:
            if self.model is None:
                raise ValueError("SageMix needs grad= or saliency=, or a model= to compute the saliency")
            saliency = gradient_saliency(self.model, images, labels, num_classes=self.num_classes).saliency
        result = sage_mix(images, grad=grad, saliency=saliency, alpha=self.alpha,
                          upper_lambda=self.upper_lambda, rand_pos=self.rand_pos,
                          kernel_size=self.kernel_size, sigma=self.sigma, search=self.search,
                          per_sample_mass=self.per_sample, generator=self.generator)
        return self._finish(result, labels)
