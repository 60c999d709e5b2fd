"""Mixup, CutMix, CutOut, SaliencyMix and SAGE as DALI pipeline operators.

Each function is called inside ``@pipeline_def`` like an ``nvidia.dali.fn`` operator: it takes
DataNodes (images, optional labels, optional saliency) and returns a :class:`MixNodes`. The
random parameters are drawn by DALI's seeded random operators (see :mod:`fastmix.dali.draws`)
and injected into fastmix's own operator (``fastmix.mixup`` etc.), which does the mixing with
fastmix's kernels: PyTorch on the CPU, fastmix's GPU kernels for GPU images.

Images are HWC (e.g. uint8 from ``fn.decoders.image``) or CHW (e.g. float from
``fn.crop_mirror_normalize``); the layout is read from the input at run time. DALI fixes the
layouts of a python operator's outputs when the graph is built, before that layout is known, so
the mixed images carry a layout label only if you pass ``output_layout`` (checked against the
input's layout at run time). Downstream DALI operators that need a layout (e.g.
``fn.crop_mirror_normalize`` after mixing CHW images) need that label.

Every operator except CutOut mixes samples with each other and needs a batch of one image
shape; a batch with different shapes raises a ValueError that says so.
"""
from __future__ import annotations

from functools import partial

import torch

from ..labels import mix_targets
from ..operators import boxes as box_ops
from ..operators import mixup as mixup_ops
from ..operators import sage as sage_ops
from ..result import MixResult
from . import draws
from ._batch import (ImageBatch, check_output_layout, chw_to_layout, decode_layout, host_vector, sample_to_chw,
                     stack_labels, stack_saliency, validate_output_layout)
from ._bridge import call_torch, pipeline_device
from .nodes import MixNodes

__all__ = ["mixup", "cutmix", "cutout", "saliencymix", "sage_mix"]


# ----------------------------------------------------------------------------------------------
# Run time: per-sample torch tensors in, fastmix operator with injected parameters, outputs out.


def _images(images, layout, output_layout, operator) -> ImageBatch:
    batch = ImageBatch.from_samples(images, layout, operator)
    check_output_layout(batch.layout, output_layout, operator)
    return batch


def _lam(lam, per_sample: bool):
    """Injected Beta draws: per sample, or the first one for the whole batch (None: alpha <= 0)."""
    if lam is None:
        return None
    values = host_vector(lam, torch.float32)
    return values if per_sample else values[0]


def _generator(seed) -> torch.Generator:
    return torch.Generator().manual_seed(int(host_vector(seed, torch.int64)[0]))


def _outputs(result: MixResult, to_layout, labels, num_classes, label_smoothing, operator) -> dict:
    out = {"images": to_layout(result.images), "lam": result.lam.float(), "perm": result.perm.long()}
    if result.boxes is not None:
        out["boxes"] = result.boxes.long()
    if result.shifts is not None:
        out["shifts"] = result.shifts.long()
    if "mass" in result.extras:
        out["mass"] = result.extras["mass"].float()
    if labels is not None:
        out["targets"] = result.targets(stack_labels(labels, operator), num_classes, label_smoothing)
    return out


def _mixup_batch(images, layout, perm, lam=None, labels=None, *, alpha, per_sample, num_classes,
                 label_smoothing, output_layout):
    operator = "fastmix.dali.mixup"
    batch = _images(images, layout, output_layout, operator)
    result = mixup_ops.mixup(batch.nchw, alpha=alpha, lam=_lam(lam, per_sample), perm=host_vector(perm, torch.int64),
                             per_sample=per_sample)
    return _outputs(result, batch.to_layout, labels, num_classes, label_smoothing, operator)


def _cutmix_batch(images, layout, perm, seed, lam=None, labels=None, *, alpha, per_sample, num_classes,
                  label_smoothing, output_layout):
    operator = "fastmix.dali.cutmix"
    batch = _images(images, layout, output_layout, operator)
    result = box_ops.cutmix(batch.nchw, alpha=alpha, lam=_lam(lam, per_sample), perm=host_vector(perm, torch.int64),
                            per_sample=per_sample, generator=_generator(seed))
    return _outputs(result, batch.to_layout, labels, num_classes, label_smoothing, operator)


def _cutout_one_by_one(images, layout: str, generator, length, value, labels, num_classes, label_smoothing,
                       operator) -> dict:
    """CutOut of a batch whose images differ in size: one call per image, sharing one generator."""
    results = [box_ops.cutout(sample_to_chw(image, layout)[None], length=length, value=value, per_sample=True,
                              generator=generator) for image in images]
    device = images[0].device
    out = {"images": [chw_to_layout(r.images[0], layout) for r in results],
           "lam": torch.ones(len(images), device=device), "perm": torch.arange(len(images), device=device),
           "boxes": torch.cat([r.boxes for r in results]).long()}
    if labels is not None:
        out["targets"] = mix_targets(stack_labels(labels, operator), out["perm"], out["lam"], num_classes,
                                     label_smoothing)
    return out


def _cutout_batch(images, layout, seed, labels=None, *, length, value, per_sample, num_classes, label_smoothing,
                  output_layout):
    operator = "fastmix.dali.cutout"
    layout_name = decode_layout(layout, operator)
    check_output_layout(layout_name, output_layout, operator)
    generator = _generator(seed)
    shapes = sorted({tuple(image.shape) for image in images})
    if len(shapes) == 1:
        batch = _images(images, layout, output_layout, operator)
        result = box_ops.cutout(batch.nchw, length=length, value=value, per_sample=per_sample, generator=generator)
        return _outputs(result, batch.to_layout, labels, num_classes, label_smoothing, operator)
    if not per_sample:
        raise ValueError(f"{operator}: the images differ in shape ({shapes}), so one box cannot be shared by the "
                         "batch; use per_sample=True or resize to one size first")
    return _cutout_one_by_one(images, layout_name, generator, length, value, labels, num_classes, label_smoothing,
                              operator)


def _saliency_or_none(saliency, batch: ImageBatch, operator: str):
    return None if saliency is None else stack_saliency(saliency, batch, operator)


def _saliencymix_batch(images, layout, perm, lam=None, saliency=None, labels=None, *, alpha, per_sample,
                       value_range, num_classes, label_smoothing, output_layout):
    operator = "fastmix.dali.saliencymix"
    batch = _images(images, layout, output_layout, operator)
    result = box_ops.saliencymix(batch.nchw, alpha=alpha, lam=_lam(lam, per_sample),
                                 perm=host_vector(perm, torch.int64),
                                 saliency=_saliency_or_none(saliency, batch, operator), per_sample=per_sample,
                                 value_range=value_range)
    return _outputs(result, batch.to_layout, labels, num_classes, label_smoothing, operator)


def _sage_batch(images, layout, perm, seed, mass=None, saliency=None, labels=None, *, alpha, upper_lambda,
                per_sample_mass, value_range, sage_options, num_classes, label_smoothing, output_layout):
    operator = "fastmix.dali.sage_mix"
    batch = _images(images, layout, output_layout, operator)
    if not batch.nchw.dtype.is_floating_point:
        raise TypeError(f"{operator} needs float images (SAGE shifts the partner in and fills with 0, the mean "
                        f"colour of normalised images), got {batch.nchw.dtype}; normalise first, e.g. with "
                        "fn.crop_mirror_normalize")
    maps = _saliency_or_none(saliency, batch, operator)
    if maps is None:
        maps = box_ops.image_saliency(batch.nchw, value_range)
    mass_t = None if mass is None else _lam(mass, per_sample_mass) * upper_lambda
    result = sage_ops.sage_mix(batch.nchw, saliency=maps, alpha=alpha, upper_lambda=upper_lambda, mass=mass_t,
                               perm=host_vector(perm, torch.int64), per_sample_mass=per_sample_mass,
                               generator=_generator(seed), **sage_options)
    return _outputs(result, batch.to_layout, labels, num_classes, label_smoothing, operator)


# ----------------------------------------------------------------------------------------------
# Graph construction: called inside @pipeline_def.


def _build(compute, images, inputs: dict, output_names: tuple, labels, output_layout) -> MixNodes:
    device = pipeline_device(images)
    validate_output_layout(output_layout)
    all_inputs = {"images": images, "layout": images.property("layout", device=device), **inputs, "labels": labels}
    names = output_names + (("targets",) if labels is not None else ())
    return MixNodes(**call_torch(compute, all_inputs, names, device=device, images_layout=output_layout))


def mixup(images, labels=None, *, alpha: float = 1.0, per_sample: bool = False, no_fixed_points: bool = False,
          num_classes: int | None = None, label_smoothing: float = 0.0, output_layout: str | None = None) -> MixNodes:
    """Mixup inside a DALI pipeline: x' = lam * x + (1 - lam) * x[perm] (see ``fastmix.mixup``).

    perm: ``fn.batch_permutation`` (``no_fixed_points=True``: a derangement); lam:
    ``fn.random.beta(alpha, alpha)``, one per batch or per sample (``per_sample=True``); alpha
    <= 0 disables mixing. ``labels`` (integer class ids or float soft labels per sample) add a
    ``targets`` output (``num_classes``, ``label_smoothing`` as in ``MixResult.targets``).
    Outputs: images, lam, perm[, targets].
    """
    compute = partial(_mixup_batch, alpha=alpha, per_sample=per_sample, num_classes=num_classes,
                      label_smoothing=label_smoothing, output_layout=output_layout)
    inputs = {"perm": draws.partner_permutation(no_fixed_points), "lam": draws.beta_weights(alpha)}
    return _build(compute, images, inputs, ("images", "lam", "perm"), labels, output_layout)


def cutmix(images, labels=None, *, alpha: float = 1.0, per_sample: bool = False, no_fixed_points: bool = False,
           num_classes: int | None = None, label_smoothing: float = 0.0, output_layout: str | None = None) -> MixNodes:
    """CutMix inside a DALI pipeline: paste a box of the partner (see ``fastmix.cutmix``).

    perm: ``fn.batch_permutation``; lam: ``fn.random.beta(alpha, alpha)``; the box centre comes
    from a generator seeded by ``fn.random.uniform``; the official box geometry and the
    area-corrected lam are fastmix's. Outputs: images, lam (area-corrected), perm, boxes[, targets].
    """
    compute = partial(_cutmix_batch, alpha=alpha, per_sample=per_sample, num_classes=num_classes,
                      label_smoothing=label_smoothing, output_layout=output_layout)
    inputs = {"perm": draws.partner_permutation(no_fixed_points), "seed": draws.batch_seed(),
              "lam": draws.beta_weights(alpha)}
    return _build(compute, images, inputs, ("images", "lam", "perm", "boxes"), labels, output_layout)


def cutout(images, labels=None, *, length: int | None = None, value: float = 0.0, per_sample: bool = True,
           num_classes: int | None = None, label_smoothing: float = 0.0, output_layout: str | None = None) -> MixNodes:
    """CutOut inside a DALI pipeline: erase a length x length square per sample (see ``fastmix.cutout``).

    The centres come from a generator seeded by ``fn.random.uniform``. ``length`` defaults to half
    the shorter image side. CutOut does not mix samples, so a batch of different image sizes is
    accepted (with ``per_sample=True``: each image gets its own box). lam is 1 and perm the identity.
    Outputs: images, lam, perm, boxes[, targets].
    """
    compute = partial(_cutout_batch, length=length, value=value, per_sample=per_sample, num_classes=num_classes,
                      label_smoothing=label_smoothing, output_layout=output_layout)
    inputs = {"seed": draws.batch_seed()}
    return _build(compute, images, inputs, ("images", "lam", "perm", "boxes"), labels, output_layout)


def saliencymix(images, labels=None, *, saliency=None, alpha: float = 1.0, per_sample: bool = False,
                no_fixed_points: bool = False, value_range=None, num_classes: int | None = None,
                label_smoothing: float = 0.0, output_layout: str | None = None) -> MixNodes:
    """SaliencyMix inside a DALI pipeline: paste the partner's most salient box (see ``fastmix.saliencymix``).

    The saliency is fastmix's fine-grained saliency of the images themselves (model-free, computed
    in the operator), or a ``saliency`` DataNode with one [H, W] ([1, H, W], [H, W, 1]) map per
    sample. Float images are mapped to uint8 for the saliency through ``value_range``; the default
    None stretches each image's min..max (DALI float images are usually mean/std normalised).
    perm: ``fn.batch_permutation``; lam: ``fn.random.beta``. Outputs: images, lam, perm, boxes[, targets].
    """
    compute = partial(_saliencymix_batch, alpha=alpha, per_sample=per_sample, value_range=value_range,
                      num_classes=num_classes, label_smoothing=label_smoothing, output_layout=output_layout)
    inputs = {"perm": draws.partner_permutation(no_fixed_points), "lam": draws.beta_weights(alpha),
              "saliency": saliency}
    return _build(compute, images, inputs, ("images", "lam", "perm", "boxes"), labels, output_layout)


def sage_mix(images, labels=None, *, saliency=None, alpha: float = 1.0, upper_lambda: float = 1.0,
             rand_pos: float = 0.01, kernel_size: int = 5, sigma: float = 1.0, search: str = "random",
             per_sample_shifts: bool = False, per_sample_mass: bool = False, no_fixed_points: bool = False,
             value_range=None, num_classes: int | None = None, label_smoothing: float = 0.0,
             output_layout: str | None = None) -> MixNodes:
    """SAGE inside a DALI pipeline: mix with the partner shifted to keep the most saliency (see ``fastmix.sage_mix``).

    ``saliency`` is a DataNode with one non-negative float map [H, W] ([1, H, W], [H, W, 1]) per
    sample, e.g. from ``fn.external_source`` fed by the training loop; without it, the operator
    uses the model-free fine-grained saliency of the images (``fastmix.image_saliency``, with
    ``value_range`` as in :func:`saliencymix`). Images must be float (normalised, e.g. CHW from
    ``fn.crop_mirror_normalize``). perm: ``fn.batch_permutation``; the saliency mass
    a = Beta(alpha, alpha) * upper_lambda: ``fn.random.beta``; the candidate shifts
    (``search="random"``) come from a generator seeded by ``fn.random.uniform``.
    Outputs: images, lam (mean of SAGE's mask), perm, shifts, mass[, targets].
    """
    if not 0 <= upper_lambda <= 1:
        raise ValueError(f"upper_lambda must be in [0, 1], got {upper_lambda}")
    sage_options = {"rand_pos": rand_pos, "kernel_size": kernel_size, "sigma": sigma, "search": search,
                    "per_sample_shifts": per_sample_shifts}
    compute = partial(_sage_batch, alpha=alpha, upper_lambda=upper_lambda, per_sample_mass=per_sample_mass,
                      value_range=value_range, sage_options=sage_options, num_classes=num_classes,
                      label_smoothing=label_smoothing, output_layout=output_layout)
    inputs = {"perm": draws.partner_permutation(no_fixed_points), "seed": draws.batch_seed(),
              "mass": draws.beta_weights(alpha), "saliency": saliency}
    return _build(compute, images, inputs, ("images", "lam", "perm", "shifts", "mass"), labels, output_layout)
