"""Drop-in replacements for torchvision.transforms.v2 `MixUp` and `CutMix`, backed by fastmix's
operators, and `SageMix`, SAGE in the same call convention.

    from fastmix.compat.torchvision import CutMix, MixUp   # instead of: from torchvision.transforms.v2 import ...
    cutmix = CutMix(num_classes=10)
    images, labels = cutmix(images, labels)          # labels: float32 [B, num_classes]

Kept from torchvision (torchvision/transforms/v2/_augment.py):
- Constructor `(*, alpha=1.0, num_classes=None, labels_getter="default")`. Labels are class
  indices [B] (num_classes required) or probabilities [B, num_classes] (num_classes may be None).
- Call convention: `t(images, labels)` or `t(sample)` where the sample is any nesting of tuples,
  lists and dicts; the same structure comes back with the image batch mixed and the labels
  replaced by mixed soft labels, every other leaf untouched. The default labels getter takes the
  second element of a tuple/list input if it is a tensor, otherwise (in that element or in a
  dict input) the value under the key "labels", else the first key containing "label"
  (case-insensitive). The image batch is the first tensor leaf other than the labels.
- One lam ~ Beta(alpha, alpha) per batch. Pairing: sample i is mixed with sample i-1, i.e. with
  `images.roll(1, 0)`; x' = lam * x + (1 - lam) * x.roll(1, 0), and the same for the labels.
- CutMix: one box per batch around a uniform integer centre (cy in [0, H), cx in [0, W)), with
  half-extents int(0.5*sqrt(1-lam)*H) and int(0.5*sqrt(1-lam)*W), clipped to the image; lam is
  corrected to 1 - box area / (H*W). This is exactly `fastmix.cutmix`'s box geometry.
- PIL images, bounding boxes and masks are rejected.

Deliberate differences: draws come from a `torch.Generator` (`generator=`, keyword only), not the
global torch RNG; the parameters can be drawn with `make_params(images)` and injected with
`t(..., params=...)`; the input is never modified; MixUp accepts uint8 images (blended in float32
and rounded; torchvision raises); soft labels are returned as float32 whatever their input dtype;
a 5-D video batch is not supported.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from .. import params as draws
from .._checks import check_images
from ..gradient_saliency import saliency as gradient_saliency
from ..operators.boxes import cutmix
from ..operators.mixup import mixup
from ..operators.sage import sage_mix
from ..result import MixResult


def default_labels_getter(inputs):
    """torchvision's default heuristic: see the module docstring."""
    if isinstance(inputs, (tuple, list)):
        if len(inputs) < 2:
            raise ValueError("the default labels_getter takes the labels from the second element of the input; "
                             f"got a {type(inputs).__name__} of length {len(inputs)}")
        inputs = inputs[1]
    if isinstance(inputs, torch.Tensor):
        return inputs
    if not isinstance(inputs, Mapping):
        raise ValueError("the default labels_getter found no labels: pass (images, labels), a dict with a "
                         f"'labels' key, or labels_getter=callable; got {type(inputs).__name__}")
    keys = [key for key in inputs.keys() if isinstance(key, str)]
    key = next((k for k in keys if k.lower() == "labels"), None)
    if key is None:
        key = next((k for k in keys if "label" in k.lower()), None)
    if key is None:
        raise ValueError(f"the default labels_getter found no 'labels' key among {list(inputs.keys())}")
    return inputs[key]


def _is_rejected(leaf) -> bool:
    """PIL images and torchvision's BoundingBoxes / Mask, which mixing would silently corrupt."""
    module = type(leaf).__module__
    return module.startswith("PIL.") or (module.startswith("torchvision")
                                         and type(leaf).__name__ in ("BoundingBoxes", "Mask"))


class _BatchTransform(torch.nn.Module):
    """Structure handling of torchvision v2's batch transforms; subclasses mix (images, labels)."""

    def __init__(self, *, num_classes: int | None, labels_getter, generator: torch.Generator | None):
        super().__init__()
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")
        if labels_getter != "default" and not callable(labels_getter):
            raise TypeError(f"labels_getter must be 'default' or a callable, got {labels_getter!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.num_classes = num_classes
        self._labels_getter: Callable = default_labels_getter if labels_getter == "default" else labels_getter
        self.generator = generator
        self.last_result: MixResult | None = None

    def _checked_labels(self, labels) -> torch.Tensor:
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"the labels must be a tensor, got {type(labels).__name__}")
        if labels.dim() not in (1, 2):
            raise ValueError("labels must be class indices of shape (batch_size,) or probabilities of shape "
                             f"(batch_size, num_classes), got shape {tuple(labels.shape)}")
        if labels.dim() == 2 and self.num_classes is not None and labels.shape[1] != self.num_classes:
            raise ValueError(f"2-D labels have {labels.shape[1]} classes but num_classes={self.num_classes} "
                             "(num_classes may be left to None)")
        if labels.dim() == 1 and self.num_classes is None:
            raise ValueError("num_classes must be passed if the labels are class indices (1-D)")
        return labels.float() if labels.dim() == 2 else labels

    def _transform(self, inputs: tuple, mix: Callable[[torch.Tensor, torch.Tensor], MixResult]):
        """Find the images and labels in `inputs`, mix them with `mix`, rebuild the structure."""
        structure = inputs if len(inputs) > 1 else inputs[0]
        labels = self._labels_getter(structure)
        checked = self._checked_labels(labels)
        leaves, spec = tree_flatten(structure)
        if any(_is_rejected(leaf) for leaf in leaves):
            raise ValueError(f"{type(self).__name__}() does not support PIL images, bounding boxes and masks")
        label_index = next((i for i, leaf in enumerate(leaves) if leaf is labels), None)
        if label_index is None:
            raise ValueError("labels_getter must return the labels tensor that is part of the input")
        image_index = next((i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor) and i != label_index),
                           None)
        if image_index is None:
            raise ValueError("found no image batch: the input must hold a [B, C, H, W] tensor besides the labels")
        images = leaves[image_index]
        check_images(images)
        if images.shape[0] != checked.shape[0]:
            raise ValueError(f"the batch size of the images does not match that of the labels: "
                             f"{images.shape[0]} != {checked.shape[0]}")
        result = mix(images, checked)
        self.last_result = result
        outputs = list(leaves)
        # keep a tensor subclass such as tv_tensors.Image, as torchvision's wrap() does
        outputs[image_index] = result.images.as_subclass(type(images))
        outputs[label_index] = result.targets(checked, self.num_classes).to(images.device)
        return tree_unflatten(outputs, spec)


def roll_pairing(batch: int) -> torch.Tensor:
    """torchvision's partner of sample i: images.roll(1, 0)[i] = images[i - 1]."""
    return torch.arange(batch).roll(1)


class _BetaLam(_BatchTransform):
    """MixUp's and CutMix's shared part: alpha and the one Beta(alpha, alpha) draw per batch."""

    def __init__(self, *, alpha: float = 1.0, num_classes: int | None = None, labels_getter="default",
                 generator: torch.Generator | None = None):
        super().__init__(num_classes=num_classes, labels_getter=labels_getter, generator=generator)
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (the Beta distribution's parameter), got {alpha}")
        self.alpha = float(alpha)

    def _draw_lam(self) -> torch.Tensor:
        return draws.beta(self.alpha, 1, self.generator)


class MixUp(_BetaLam):
    """torchvision.transforms.v2.MixUp: x' = lam * x + (1 - lam) * x.roll(1, 0), one lam per batch.

    `make_params(images)` returns {"lam": float}; pass it back as `params=` to inject it.
    """

    def make_params(self, images: torch.Tensor) -> dict:
        return {"lam": float(self._draw_lam())}

    def forward(self, *inputs, params: dict | None = None):
        def mix(images, labels):
            chosen = self.make_params(images) if params is None else params
            return mixup(images, labels, lam=chosen["lam"], perm=roll_pairing(images.shape[0]))
        return self._transform(inputs, mix)


class CutMix(_BetaLam):
    """torchvision.transforms.v2.CutMix: one box of x.roll(1, 0) pasted into every sample.

    `make_params(images)` returns {"box": (y1, y2, x1, x2), "lam": area-corrected lam}; note the
    box is in fastmix's (y1, y2, x1, x2) order, not torchvision's (x1, y1, x2, y2). Pass it back as
    `params=` to inject it (only "box" is read: lam always follows from the box).
    """

    def make_params(self, images: torch.Tensor) -> dict:
        _, _, height, width = images.shape
        lam = self._draw_lam()
        cy = draws.randint(height, (1,), self.generator)
        cx = draws.randint(width, (1,), self.generator)
        box = draws.box_from_lam(lam, height, width, cy, cx)[0]
        area = int((box[1] - box[0]) * (box[3] - box[2]))
        return {"box": tuple(int(v) for v in box), "lam": 1.0 - area / (height * width)}

    def forward(self, *inputs, params: dict | None = None):
        def mix(images, labels):
            chosen = self.make_params(images) if params is None else params
            return cutmix(images, labels, boxes=torch.tensor(chosen["box"]), perm=roll_pairing(images.shape[0]))
        return self._transform(inputs, mix)


class SageMix(_BatchTransform):
    """SAGE in torchvision v2's call convention: `SageMix(model=model, num_classes=10)(images, labels)`.

    The saliency is the input gradient of `loss` ("bce": BCE on softmax, as SAGE) through `model`,
    computed inside the call (one extra forward and backward; the model's parameter gradients and
    mode are left as they were), unless `grad=` or `saliency=` is given to the call. For SAGE's
    full training step, where the clean-pass gradient also updates the model, use
    `fastmix.training.sage_step`. Pairing is a random permutation, as in SAGE. The SAGE options
    are those of `fastmix.sage_mix`; `params` may inject its `perm`, `mass` and `shifts`.
    """

    INJECTABLE = ("perm", "mass", "shifts")

    def __init__(self, *, model: torch.nn.Module | None = None, num_classes: int | None = None,
                 alpha: float = 1.0, upper_lambda: float = 1.0, rand_pos: float = 0.01, kernel_size: int = 5,
                 sigma: float = 1.0, search: str = "random", loss: str = "bce", labels_getter="default",
                 generator: torch.Generator | None = None):
        super().__init__(num_classes=num_classes, labels_getter=labels_getter, generator=generator)
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        self.model = model
        self.options = dict(alpha=alpha, upper_lambda=upper_lambda, rand_pos=rand_pos,
                            kernel_size=kernel_size, sigma=sigma, search=search)
        self.loss = loss

    def forward(self, *inputs, params: dict | None = None, grad=None, saliency=None):
        unknown = sorted(set(params or {}) - set(self.INJECTABLE))
        if unknown:
            raise ValueError(f"SageMix params may only inject {self.INJECTABLE}, got {unknown}")

        def mix(images, labels):
            maps = saliency
            if grad is None and maps is None:
                if self.model is None:
                    raise ValueError("SageMix needs a model= to compute the saliency, or grad= / saliency= in the call")
                maps = gradient_saliency(self.model, images, labels, loss=self.loss,
                                         num_classes=self.num_classes).saliency
            return sage_mix(images, labels, grad=grad, saliency=maps, generator=self.generator,
                            **self.options, **(params or {}))
        return self._transform(inputs, mix)


__all__ = ["MixUp", "CutMix", "SageMix", "default_labels_getter", "roll_pairing"]
