"""Drop-in replacements for torchvision.transforms.v2 `MixUp` and `CutMix`, backed by fastmix's
operators, and `SageMix`, SAGE in the same call convention.

    from fastmix.compat.torchvision import CutMix, MixUp   # instead of: from torchvision.transforms.v2 import ...
    cutmix = CutMix(num_classes=10)
    images, labels = cutmix(images, labels)          # labels: float32 [B, num_classes]

Checked against torchvision 0.29.1 (tests_peers/ compares with the real package). Kept from
torchvision (torchvision/transforms/v2/_augment.py):
- Constructor `(*, alpha=1.0, num_classes=None, labels_getter="default")`; `labels_getter` may
  also be a callable or None. Labels are class indices [B] (num_classes required; one-hot with
  `torch.nn.functional.one_hot`) or probabilities [B, num_classes] (num_classes may be None;
  floating labels keep their dtype, integer ones become float32).
- Call convention: `t(images, labels)` or `t(sample)` where the sample is any nesting of tuples,
  lists and dicts; the same structure comes back. The default labels getter takes the second
  element of a tuple/list input if it is a pure tensor, otherwise (in that element or in a dict
  input) the value under the key "labels", else the first key containing "label"
  (case-insensitive).
- Which leaves are mixed (torchvision's rule): every `tv_tensors.Image` and `tv_tensors.Video`;
  when the sample holds no Image, Video or PIL image, the first pure tensor (in `tree_flatten`
  order); the labels; every other leaf is passed through untouched (the very same object).
- Errors, in torchvision's order and with its types: PIL images, BoundingBoxes, Masks or KeyPoints
  in the sample (ValueError); labels not found, not a tensor, not 1-D/2-D, 2-D with another
  num_classes, or 1-D without num_classes (ValueError); CutMix with no image-like leaf (TypeError)
  or with several H x W (ValueError); an image that is not 4-D (5-D for a Video) or whose batch
  size differs from the labels' (ValueError). An empty batch gives empty outputs.
- One lam ~ Beta(alpha, alpha) per batch. Pairing: sample i is mixed with sample i-1, i.e. with
  `images.roll(1, 0)`; x' = lam * x + (1 - lam) * x.roll(1, 0), and the same for the labels.
- CutMix: one box per batch around a uniform integer centre (cy in [0, H), cx in [0, W)), with
  half-extents int(0.5*sqrt(1-lam)*H) and int(0.5*sqrt(1-lam)*W), clipped to the image; lam is
  corrected to 1 - box area / (H*W). This is exactly `fastmix.cutmix`'s box geometry.

Deliberate differences: draws come from a `torch.Generator` (`generator=`, keyword only), not the
global torch RNG; the parameters can be drawn with `make_params(images)` and injected with
`t(..., params=...)`; the input is never modified; MixUp accepts uint8 images (blended in float32
and rounded; torchvision raises); alpha and num_classes are checked at construction (torchvision
fails at the first call for num_classes < 1).
"""
from __future__ import annotations

import numbers
import sys
from collections.abc import Callable, Mapping
from contextlib import suppress

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from .. import params as draws
from ..dispatch import to_device
from .._checks import check_images
from ..gradient_saliency import saliency as gradient_saliency
from ..operators.boxes import cutmix
from ..operators.mixup import mixup
from ..operators.sage import DEFAULT_UPPER_LAMBDA, sage_mix
from ..result import MixResult


# ---- torchvision's types, without importing torchvision -----------------------------------------
# A tv_tensor or PIL image can only exist once its module is imported, so looking the classes up
# in sys.modules tells them apart without making torchvision or PIL a dependency.

def _tv_class(name: str):
    module = sys.modules.get("torchvision.tv_tensors")
    return getattr(module, name, None) if module is not None else None


def _isinstance(value, *names: str) -> bool:
    classes = tuple(c for c in (_tv_class(n) for n in names) if c is not None)
    return bool(classes) and isinstance(value, classes)


def _is_pil(value) -> bool:
    module = sys.modules.get("PIL.Image")
    return module is not None and isinstance(value, module.Image)


def is_pure_tensor(value) -> bool:
    """A torch.Tensor that is not a torchvision tv_tensor (torchvision's definition)."""
    return isinstance(value, torch.Tensor) and not _isinstance(value, "TVTensor")


def _is_rejected(value) -> bool:
    return _is_pil(value) or _isinstance(value, "BoundingBoxes", "Mask", "KeyPoints")


def needs_transform_list(flat_inputs: list) -> list[bool]:
    """torchvision's leaf rule: every tensor or PIL leaf, except that pure tensors are mixed only
    when the sample has no Image, Video or PIL image, and then only the first of them."""
    transform_pure_tensor = not any(_is_pil(v) or _isinstance(v, "Image", "Video") for v in flat_inputs)
    result = []
    for value in flat_inputs:
        needed = isinstance(value, torch.Tensor) or _is_pil(value)
        if needed and is_pure_tensor(value):
            needed, transform_pure_tensor = transform_pure_tensor, False
        result.append(needed)
    return result


def _size(value) -> tuple[int, int]:
    if _isinstance(value, "BoundingBoxes"):
        return tuple(value.canvas_size)
    if _is_pil(value):
        return value.size[1], value.size[0]
    if value.dim() < 2:
        raise TypeError(f"Input tensor should have at least two dimensions, but got {value.dim()}")
    return tuple(value.shape[-2:])


def query_size(flat_inputs: list) -> tuple[int, int]:
    """The one H x W of the image-like leaves (torchvision's query_size and its errors)."""
    sizes = {_size(v) for v in flat_inputs
             if is_pure_tensor(v) or _is_pil(v) or _isinstance(v, "Image", "Video", "Mask", "BoundingBoxes",
                                                                 "KeyPoints")}
    if not sizes:
        raise TypeError("No image, video, mask, bounding box of keypoint was found in the sample")
    if len(sizes) > 1:
        raise ValueError(f"Found multiple HxW dimensions in the sample: {', '.join(repr(str(s)) for s in sorted(sizes))}")
    return sizes.pop()


class LabelsNotFoundError(IndexError, ValueError):
    """A tuple/list sample too short to hold labels: torchvision fails there with an IndexError;
    this error is one (and a ValueError, as every other labels error) with a clear message."""


def default_labels_getter(inputs):
    """torchvision's default heuristic: see the module docstring."""
    if isinstance(inputs, (tuple, list)):
        if len(inputs) < 2:
            raise LabelsNotFoundError("When using the default labels_getter, the input passed to forward must be a dictionary "
                             "or a two-tuple whose second item is a dictionary or a tensor, but got a "
                             f"{type(inputs).__name__} of length {len(inputs)} instead.")
        inputs = inputs[1]
    if is_pure_tensor(inputs):
        return inputs
    if not isinstance(inputs, Mapping):
        raise ValueError("When using the default labels_getter, the input passed to forward must be a dictionary "
                         "or a two-tuple whose second item is a dictionary or a tensor, but got "
                         f"{type(inputs).__name__} instead.")
    candidate_key = None
    with suppress(StopIteration):
        candidate_key = next(key for key in inputs.keys() if key.lower() == "labels")
    if candidate_key is None:
        with suppress(StopIteration):
            candidate_key = next(key for key in inputs.keys() if "label" in key.lower())
    if candidate_key is None:
        raise ValueError("Could not infer where the labels are in the sample. Try passing a callable as the "
                         f"labels_getter parameter? (keys: {list(inputs.keys())}) If there are no labels in the "
                         "sample by design, pass labels_getter=None.")
    return inputs[candidate_key]


def _parse_labels_getter(labels_getter) -> Callable:
    if isinstance(labels_getter, str) and labels_getter == "default":
        return default_labels_getter
    if callable(labels_getter):
        return labels_getter
    if labels_getter is None:
        return lambda _: None
    raise ValueError(f"labels_getter should either be 'default', a callable, or None, but got {labels_getter}.")


def _wrap(output: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Give `output` the tensor subclass of `like` (tv_tensors.wrap for an Image or Video)."""
    if _isinstance(like, "TVTensor"):
        return sys.modules["torchvision.tv_tensors"].wrap(output, like=like)
    return output if type(output) is type(like) else output.as_subclass(type(like))


def roll_pairing(batch: int) -> torch.Tensor:
    """torchvision's partner of sample i: images.roll(1, 0)[i] = images[i - 1]."""
    return torch.arange(batch).roll(1)


class _BatchTransform(torch.nn.Module):
    """Structure handling of torchvision v2's MixUp/CutMix; subclasses mix the image batches.

    Hooks: `_draw(flat_needed, params)` returns the call's state (drawn once per call),
    `_mix_images(images_4d, labels, state)` a MixResult, `_mix_labels(labels, state)` the targets.
    """

    _labels_after_images = False  # SageMix's targets come from its image result

    def __init__(self, *, num_classes: int | None, labels_getter, generator: torch.Generator | None):
        super().__init__()
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
                raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
            num_classes = int(num_classes)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.num_classes = num_classes
        self._labels_getter: Callable = _parse_labels_getter(labels_getter)
        self.generator = generator
        self.last_result: MixResult | None = None

    def _checked_labels(self, labels):
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"The labels must be a tensor, but got {type(labels)} instead.")
        if labels.ndim not in (1, 2):
            raise ValueError("labels should be index based with shape (batch_size,) or probability based with shape "
                             f"(batch_size, num_classes), but got a tensor of shape {labels.shape} instead.")
        if labels.ndim == 2 and self.num_classes is not None and labels.shape[-1] != self.num_classes:
            raise ValueError("When passing 2D labels, the number of elements in last dimension must match "
                             f"num_classes: {labels.shape[-1]} != {self.num_classes}. You can Leave num_classes "
                             "to None.")
        if labels.ndim == 1 and self.num_classes is None:
            raise ValueError("num_classes must be passed if the labels are index-based (1D)")
        return labels

    def _mixup_label(self, label: torch.Tensor, lam: float) -> torch.Tensor:
        """torchvision's label mix, with its arithmetic: roll(1) * (1 - lam) + label * lam."""
        if label.ndim == 1:
            label = torch.nn.functional.one_hot(label, num_classes=self.num_classes)
        if not label.dtype.is_floating_point:
            label = label.float()
        return label.roll(1, 0).mul_(1.0 - lam).add_(label.mul(lam))

    def _check_image(self, value: torch.Tensor, batch: int) -> None:
        dims = 5 if _isinstance(value, "Video") else 4
        if value.ndim != dims:
            raise ValueError(f"Expected a batched input with {dims} dims, but got {value.ndim} dimensions instead.")
        if value.shape[0] != batch:
            raise ValueError("The batch size of the image or video does not match the batch size of the labels: "
                             f"{value.shape[0]} != {batch}.")

    def _mix_leaf(self, value: torch.Tensor, labels: torch.Tensor, state) -> torch.Tensor:
        """One Image, Video or pure-tensor batch: [B, ..., H, W] as [B, C', H, W] through the operator."""
        if value.shape[0] == 0:  # torchvision returns empty outputs; the operators reject B == 0
            return _wrap(value.clone(), value)
        images = value.as_subclass(torch.Tensor)
        flat = images.reshape(images.shape[0], -1, *images.shape[-2:]) if images.ndim != 4 else images
        check_images(flat)
        result = self._mix_images(flat, labels, state)
        self.last_result = result
        return _wrap(result.images.reshape(images.shape), value)

    def forward(self, *inputs, params: dict | None = None, **options):
        inputs = inputs if len(inputs) > 1 else inputs[0]
        flat_inputs, spec = tree_flatten(inputs)
        needed = needs_transform_list(flat_inputs)
        if any(_is_rejected(value) for value in flat_inputs):
            raise ValueError(f"{type(self).__name__}() does not support PIL images, bounding boxes, keypoints and "
                             "masks.")
        labels = self._checked_labels(self._labels_getter(inputs))
        batch = labels.shape[0]
        state = self._draw([v for v, n in zip(flat_inputs, needed) if n], params, **options)
        label_index = next((i for i, value in enumerate(flat_inputs) if value is labels), None)
        if label_index is None:
            raise ValueError("labels_getter must return the labels tensor that is part of the input")
        needed[label_index] = True
        outputs = list(flat_inputs)
        image_leaves = [i for i, n in enumerate(needed) if n and i != label_index and (
            is_pure_tensor(flat_inputs[i]) or _isinstance(flat_inputs[i], "Image", "Video"))]
        order = image_leaves + [label_index] if self._labels_after_images else sorted(image_leaves + [label_index])
        for i in order:
            if i == label_index:
                outputs[i] = self._mix_labels(labels, state)
            else:
                self._check_image(flat_inputs[i], batch)
                outputs[i] = self._mix_leaf(flat_inputs[i], labels, state)
        return tree_unflatten(outputs, spec)

    def _mix_labels(self, labels: torch.Tensor, state) -> torch.Tensor:
        return self._mixup_label(labels, state["lam"])


class _BetaLam(_BatchTransform):
    """MixUp's and CutMix's shared part: alpha and the one Beta(alpha, alpha) draw per batch."""

    def __init__(self, *, alpha: float = 1.0, num_classes: int | None = None, labels_getter="default",
                 generator: torch.Generator | None = None):
        super().__init__(num_classes=num_classes, labels_getter=labels_getter, generator=generator)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not float(alpha) > 0 \
                or float(alpha) == float("inf"):
            raise ValueError(f"alpha must be a finite number > 0 (the Beta distribution's parameter), got {alpha!r}")
        self.alpha = float(alpha)

    def _draw_lam(self) -> float:
        return float(draws.beta(self.alpha, 1, self.generator)[0])


class MixUp(_BetaLam):
    """torchvision.transforms.v2.MixUp: x' = lam * x + (1 - lam) * x.roll(1, 0), one lam per batch.

    `make_params(images)` returns {"lam": float}; pass it back as `params=` to inject it.
    """

    def make_params(self, images: torch.Tensor | None = None) -> dict:
        return {"lam": self._draw_lam()}

    def _draw(self, flat_needed, params):
        if params is None:
            return self.make_params()
        lam = float(params["lam"])
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam}")
        return {"lam": lam}

    def _mix_images(self, images, labels, state):
        return mixup(images, lam=state["lam"], perm=to_device(roll_pairing(images.shape[0]), images.device))


class CutMix(_BetaLam):
    """torchvision.transforms.v2.CutMix: one box of x.roll(1, 0) pasted into every sample.

    `make_params(images)` returns {"box": (y1, y2, x1, x2), "lam": area-corrected lam}; note the
    box is in fastmix's (y1, y2, x1, x2) order, not torchvision's (x1, y1, x2, y2). Pass it back as
    `params=` to inject it (only "box" is read: lam always follows from the box).
    """

    def make_params(self, images) -> dict:
        height, width = images if isinstance(images, tuple) else images.shape[-2:]
        lam = torch.tensor([self._draw_lam()])
        cy = draws.randint(height, (1,), self.generator)
        cx = draws.randint(width, (1,), self.generator)
        return self._box_params(tuple(int(v) for v in draws.box_from_lam(lam, height, width, cy, cx)[0]),
                                height, width)

    @staticmethod
    def _box_params(box, height: int, width: int) -> dict:
        y1, y2, x1, x2 = (int(v) for v in box)
        if not (0 <= y1 <= y2 <= height and 0 <= x1 <= x2 <= width):
            raise ValueError(f"the box (y1, y2, x1, x2) = {box} must lie inside the {height}x{width} image")
        return {"box": (y1, y2, x1, x2), "lam": float(1.0 - (x2 - x1) * (y2 - y1) / (width * height))}

    def _draw(self, flat_needed, params):
        height, width = query_size(flat_needed)
        if params is None:
            return self.make_params((height, width))
        return self._box_params(params["box"], height, width)

    def _mix_images(self, images, labels, state):
        return cutmix(images, boxes=torch.tensor(state["box"]),
                      perm=to_device(roll_pairing(images.shape[0]), images.device))


class SageMix(_BatchTransform):
    """SAGE in torchvision v2's call convention: `SageMix(model=model, num_classes=10)(images, labels)`.

    The saliency is the input gradient of `loss` ("bce": BCE on softmax, as SAGE) through `model`,
    computed inside the call (one extra forward and backward; the model's parameter gradients and
    mode are left as they were), unless `grad=` or `saliency=` is given to the call. For SAGE's
    full training step, where the clean-pass gradient also updates the model, use
    `fastmix.training.sage_step`. Pairing is a random permutation, as in SAGE. The SAGE options
    and their defaults are those of `fastmix.sage_mix` and `fastmix.SageMix` (upper_lambda 0.6,
    search "auto"); `params` may inject its `perm`, `mass` and `shifts`. The
    sample must hold one image batch (a 4-D Image or pure tensor).
    """

    INJECTABLE = ("perm", "mass", "shifts")
    _labels_after_images = True

    def __init__(self, *, model: torch.nn.Module | None = None, num_classes: int | None = None,
                 alpha: float = 1.0, upper_lambda: float = DEFAULT_UPPER_LAMBDA, rand_pos: float = 0.01,
                 kernel_size: int = 5, sigma: float = 1.0, search: str = "auto", loss: str = "bce",
                 labels_getter="default",
                 generator: torch.Generator | None = None):
        super().__init__(num_classes=num_classes, labels_getter=labels_getter, generator=generator)
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
        self.model = model
        self.options = dict(alpha=alpha, upper_lambda=upper_lambda, rand_pos=rand_pos,
                            kernel_size=kernel_size, sigma=sigma, search=search)
        self.loss = loss

    def _draw(self, flat_needed, params, grad=None, saliency=None):
        unknown = sorted(set(params or {}) - set(self.INJECTABLE))
        if unknown:
            raise ValueError(f"SageMix params may only inject {self.INJECTABLE}, got {unknown}")
        return {"params": params or {}, "grad": grad, "saliency": saliency, "result": None}

    def _mix_images(self, images, labels, state):
        if state["result"] is not None:
            raise ValueError("SageMix mixes one image batch per call; the sample holds several")
        maps, grad = state["saliency"], state["grad"]
        if grad is None and maps is None:
            if self.model is None:
                raise ValueError("SageMix needs a model= to compute the saliency, or grad= / saliency= in the call")
            maps = gradient_saliency(self.model, images, labels, loss=self.loss,
                                     num_classes=self.num_classes).saliency
        state["result"] = sage_mix(images, labels, grad=grad, saliency=maps, generator=self.generator,
                                   **self.options, **state["params"])
        return state["result"]

    def _mix_labels(self, labels, state):
        if state["result"] is None:
            raise ValueError("found no image batch to mix: the sample must hold a [B, C, H, W] tensor")
        return state["result"].targets(labels, self.num_classes)


__all__ = ["MixUp", "CutMix", "SageMix", "default_labels_getter", "roll_pairing", "needs_transform_list",
           "query_size", "is_pure_tensor"]
