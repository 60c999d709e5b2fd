"""Batch transforms in the style of torchvision.transforms.v2: `t(images, labels) -> (images, targets)`.

Labels are int class indices [B] or soft labels [B, num_classes]; targets are float32
[B, num_classes], on the images' device (labels must be there too). Every transform keeps its own
torch.Generator (`generator=`, or `seed=` to create one) and exposes the MixResult of its last
call as `last_result`.

Convention shared with `fastmix.compat.torchvision` (the torchvision drop-ins): every constructor
argument is keyword-only, `num_classes=` may be None when the labels are already soft, draws come
from `generator=`, lam ~ Beta(alpha, alpha) once per batch by default. What remains different, on
purpose (the drop-ins reproduce torchvision exactly, these transforms the papers' code):

- pairing: a random permutation here (the Mixup/CutMix/SaliencyMix/SAGE code), sample i-1
  (`roll(1, 0)`) in the drop-ins, as torchvision;
- alpha <= 0: no mixing here (lam = 1, as timm and the Mixup code), an error in the drop-ins,
  as torchvision (Beta(0, 0) is undefined);
- `seed=`, `per_sample=` and `label_smoothing=` exist only here; `labels_getter=`, nested
  samples and `make_params`/`params=` only in the drop-ins.

Boxes (`last_result.boxes`) are int64 [B, 4] rows of (y1, y2, x1, x2); `last_result.boxes_xyxy()`
gives torchvision's (x1, y1, x2, y2).
"""
from __future__ import annotations

import torch

from .gradient_saliency import saliency as gradient_saliency
from .operators.boxes import cutmix, cutout, saliencymix
from .operators.mixup import mixup
from .operators.sage import DEFAULT_UPPER_LAMBDA, sage_mix
from .result import MixResult


class _BatchMix(torch.nn.Module):
    def __init__(self, *, num_classes: int | None, per_sample: bool = False, label_smoothing: float = 0.0,
                 generator: torch.Generator | None = None, seed: int | None = None):
        super().__init__()
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int (or None for soft labels), got {num_classes!r}")
        self.num_classes = num_classes
        self.per_sample = per_sample
        self.label_smoothing = label_smoothing
        if generator is not None and seed is not None:
            raise ValueError("pass generator= or seed=, not both")
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

    def __init__(self, *, num_classes: int | None = None, alpha: float = 1.0, per_sample: bool = False,
                 label_smoothing: float = 0.0, generator: torch.Generator | None = None, seed: int | None = None):
        super().__init__(num_classes=num_classes, per_sample=per_sample, label_smoothing=label_smoothing,
                         generator=generator, seed=seed)
        self.alpha = alpha

    def operator_kwargs(self) -> dict:
        return {}

    def forward(self, images, labels):
        result = type(self).operator(images, alpha=self.alpha, per_sample=self.per_sample,
                                     generator=self.generator, **self.operator_kwargs())
        return self._finish(result, labels)


class MixUp(_AlphaMix):
    """Mixup with lam ~ Beta(alpha, alpha), per batch or per sample: `MixUp(num_classes=10)`."""

    operator = staticmethod(mixup)


class CutMix(_AlphaMix):
    """CutMix with the official box geometry and area-corrected lam: `CutMix(num_classes=10)`."""

    operator = staticmethod(cutmix)


class SaliencyMix(_AlphaMix):
    """SaliencyMix: the partner's most salient box, pasted at the same place.

    Images in [0, 1] by default; for normalised images pass `mean=`/`std=` (the boxes are then
    those of the un-normalised images) or `value_range=`. Out-of-range images raise."""

    operator = staticmethod(saliencymix)

    def __init__(self, *, num_classes: int | None = None, alpha: float = 1.0, value_range=(0.0, 1.0),
                 mean=None, std=None, **kwargs):
        super().__init__(num_classes=num_classes, alpha=alpha, **kwargs)
        self.value_range, self.mean, self.std = value_range, mean, std

    def operator_kwargs(self) -> dict:
        return {"value_range": self.value_range, "mean": self.mean, "std": self.std}


class CutOut(_BatchMix):
    """CutOut: erase a square per sample; targets are the (smoothed) one-hot labels."""

    def __init__(self, *, num_classes: int | None = None, length: int | None = None, value: float = 0.0,
                 **kwargs):
        kwargs.setdefault("per_sample", True)
        super().__init__(num_classes=num_classes, **kwargs)
        self.length, self.value = length, value

    def forward(self, images, labels):
        return self._finish(cutout(images, length=self.length, value=self.value,
                                   per_sample=self.per_sample, generator=self.generator), labels)


class SageMix(_BatchMix):
    """SAGE. Call with grad= or saliency=, or give `model` to compute the input-gradient saliency
    (BCE on softmax, the model's parameter gradients untouched) inside the call.

    upper_lambda defaults to 0.6 and search to "auto" (see `fastmix.sage_mix`). `eval_mode` is the
    reference's --eval_mode for the saliency pass of `model`: True runs it in eval mode (BatchNorm
    statistics untouched), False in train mode (the reference's default: they update), and None
    (the default) keeps the model's current mode, so a model in eval mode is never switched to
    train mode by the transform. The model's mode is restored after the pass.
    """

    def __init__(self, *, num_classes: int | None = None, alpha: float = 1.0,
                 upper_lambda: float = DEFAULT_UPPER_LAMBDA, rand_pos: float = 0.01, kernel_size: int = 5,
                 sigma: float = 1.0, model: torch.nn.Module | None = None, search: str = "auto",
                 eval_mode: bool | None = None, **kwargs):
        super().__init__(num_classes=num_classes, **kwargs)
        if eval_mode not in (None, True, False):
            raise ValueError(f"eval_mode must be None, True or False, got {eval_mode!r}")
        self.alpha, self.upper_lambda, self.rand_pos = alpha, upper_lambda, rand_pos
        self.kernel_size, self.sigma, self.search = kernel_size, sigma, search
        self.eval_mode = eval_mode
        self.model = model

    def forward(self, images, labels, *, grad=None, saliency=None):
        if grad is None and saliency is None:
            if self.model is None:
                raise ValueError("SageMix needs grad= or saliency=, or a model= to compute the saliency")
            eval_mode = (not self.model.training) if self.eval_mode is None else self.eval_mode
            saliency = gradient_saliency(self.model, images, labels, num_classes=self.num_classes,
                                         eval_mode=eval_mode).saliency
        result = sage_mix(images, grad=grad, saliency=saliency, alpha=self.alpha,
                          upper_lambda=self.upper_lambda, rand_pos=self.rand_pos,
                          kernel_size=self.kernel_size, sigma=self.sigma, search=self.search,
                          per_sample_mass=self.per_sample, generator=self.generator)
        return self._finish(result, labels)
