"""Mixup, CutMix, CutOut, SaliencyMix and SAGE as DALI pipeline operators.

Each function is called inside ``@pipeline_def`` like an ``nvidia.dali.fn`` operator: it takes
DataNodes (images, optional labels, optional saliency) and returns a :class:`MixNodes`.

* Mixup, CutMix and CutOut are composed from DALI's own operators (:mod:`fastmix.dali.native`):
  the pipeline serializes, checkpoints and runs them on DALI's threads, on the CPU or the GPU.
* SaliencyMix and SAGE run as compiled ``numba_function`` kernels on the CPU where they apply
  (uint8 / float32 images, model-free saliency; ``impl=``), otherwise fastmix's kernels in one
  ``fn.dl_tensor_python_function`` per batch (PyTorch on the CPU; fastmix's GPU kernels on
  DALI's CUDA stream for GPU images).

Images are HWC (e.g. uint8 from ``fn.decoders.image``) or CHW (e.g. float from
``fn.crop_mirror_normalize``). The layout is read off the pipeline graph when it is built
(:mod:`fastmix.dali.layouts`), or given with ``layout=``; every images output carries it, so
fastmix operators chain with each other and with DALI's. The random parameters are drawn by
DALI's seeded random operators, so the pipeline seed fixes every draw.

Every operator except CutOut mixes samples with each other and needs a batch of one image
shape.
"""
from __future__ import annotations

from functools import partial

import nvidia.dali.fn as fn
import nvidia.dali.types as types
import torch

from .._checks import require
from ..backends.pytorch.blend import box_area_lam
from ..operators import boxes as box_ops
from ..operators import sage as sage_ops
from ..params import box_from_lam
from ..result import MixResult
from . import draws, native, numba_ops, numba_sage, numba_saliency
from ._batch import ImageBatch, check_declared_layout, stack_saliency
from ._bridge import call_torch, node_device, pipeline_device
from .layouts import declare, declare_dtype, infer_dtype, infer_layout, resolve_layout
from .nodes import MixNodes

__all__ = ["mixup", "cutmix", "cutout", "saliencymix", "sage_mix"]


# ----------------------------------------------------------------------------------------------
# Operators composed from DALI's own operators.


def _check_labels_node(labels, operator: str) -> None:
    if labels is not None:
        node_device(labels, "labels")


def _mix_targets(labels, perm, lam, num_classes, label_smoothing, operator):
    if labels is None:
        return None
    native.check_label_smoothing(label_smoothing, operator)
    try:
        return native.soft_targets(labels, perm, lam, num_classes, label_smoothing)
    except ValueError as error:
        raise ValueError(f"{operator}: {error}") from None


IMPLS = ("auto", "dali", "numba")


def mixup(images, labels=None, *, alpha: float = 1.0, per_sample: bool = False, no_fixed_points: bool = False,
          num_classes: int | None = None, label_smoothing: float = 0.0, layout: str | None = None,
          impl: str = "auto") -> MixNodes:
    """Mixup inside a DALI pipeline: x' = lam * x + (1 - lam) * x[perm] (see ``fastmix.mixup``).

    perm: ``fn.batch_permutation`` (``no_fixed_points=True``: a derangement); lam:
    ``fn.random.beta(alpha, alpha)``, one per batch or per sample (``per_sample=True``); alpha
    <= 0 disables mixing. The images equal ``fastmix.mixup(x, perm=perm, lam=lam)`` for uint8 and
    float32 images, in any layout (kept on the output; ``layout`` labels images the graph does
    not). ``impl``: ``"dali"`` composes DALI operators (``fn.permute_batch``, arithmetic,
    ``fn.cast_like``; serializable, CPU and GPU); ``"numba"`` runs one compiled pass in DALI's
    ``numba_function`` (CPU, uint8/float32 images; several times cheaper, not serializable);
    ``"auto"`` takes numba for CPU images whose dtype the graph tells when numba is installed,
    DALI operators otherwise. ``labels`` add a ``targets`` output: integer class ids with
    ``num_classes``, or float soft labels [C] without it (``label_smoothing`` as in
    ``fastmix.one_hot``). Outputs: images, lam, perm[, targets].
    """
    operator = "fastmix.dali.mixup"
    native.check_alpha(alpha, operator)
    if impl not in IMPLS:
        raise ValueError(f"{operator}: impl must be one of {IMPLS}, got {impl!r}")
    device = pipeline_device(images)
    _check_labels_node(labels, operator)
    known = _optional_layout(images, layout, operator)
    perm = draws.partner_permutation(no_fixed_points)
    lam = native.lam_draw(alpha, per_sample)
    mixed = None
    if impl != "dali":
        dtype = infer_dtype(images)
        usable = device == "cpu" and dtype in (types.UINT8, types.FLOAT) and numba_ops.available()
        if impl == "numba" and not usable:
            raise ValueError(f"{operator}: impl='numba' needs CPU images of a dtype the graph tells (uint8 or "
                             f"float32, got {dtype}) and numba installed, FASTMIX_DISABLE_NUMBA unset (available: "
                             f"{numba_ops.available()}); use impl='dali'")
        if usable:
            mixed = declare_dtype(numba_ops.mixup(images, perm, lam, dtype), dtype)
            if known:
                mixed = fn.reshape(mixed, layout=known)  # numba_function outputs carry no layout
    if mixed is None:
        mixed = native.blend(images, fn_permute(images, perm), lam)
    if known:
        declare(mixed, known)
    return MixNodes(images=mixed, lam=lam, perm=_int64(perm),
                    targets=_mix_targets(labels, perm, lam, num_classes, label_smoothing, operator))


def cutmix(images, labels=None, *, alpha: float = 1.0, per_sample: bool = False, no_fixed_points: bool = False,
           num_classes: int | None = None, label_smoothing: float = 0.0, layout: str | None = None) -> MixNodes:
    """CutMix inside a DALI pipeline: paste a box of the partner (see ``fastmix.cutmix``).

    perm: ``fn.batch_permutation``; lam: ``fn.random.beta(alpha, alpha)``; the box centre:
    ``fn.random.uniform``; the official box geometry and the area-corrected lam repeat
    fastmix's float64 arithmetic. HWC images are pasted with ``fn.multi_paste``, CHW images with
    ``fn.erase`` and an addition; the images equal ``fastmix.cutmix(x, perm=perm, boxes=boxes)``.
    Outputs: images, lam (area-corrected), perm, boxes (int64 [4] y1, y2, x1, x2)[, targets].
    """
    operator = "fastmix.dali.cutmix"
    native.check_alpha(alpha, operator)
    pipeline_device(images)
    _check_labels_node(labels, operator)
    image_layout = resolve_layout(images, layout, operator)
    perm = draws.partner_permutation(no_fixed_points)
    height, width = native.image_height_width(images, image_layout)
    box = native.cutmix_box(native.lam_draw(alpha, per_sample), height, width, per_sample)
    mixed = native.paste_box(images, lambda: fn_permute(images, perm), box, height, width, image_layout)
    lam = native.area_lam(box, height, width)
    return MixNodes(images=declare(mixed, image_layout), lam=lam, perm=_int64(perm), boxes=native.stack_box(box),
                    targets=_mix_targets(labels, perm, lam, num_classes, label_smoothing, operator))


def cutout(images, labels=None, *, length: int | None = None, value: float = 0.0, per_sample: bool = True,
           num_classes: int | None = None, label_smoothing: float = 0.0, layout: str | None = None) -> MixNodes:
    """CutOut inside a DALI pipeline: erase a length x length square per sample (see ``fastmix.cutout``).

    The centres come from ``fn.random.uniform`` and the erasing is ``fn.erase``. ``length``
    defaults to half the shorter image side. CutOut does not mix samples, so a batch of
    different image sizes is accepted (each image gets its own box; ``per_sample=False`` shares
    the first sample's box). lam is 1; perm is None (DALI has no operator giving a sample its
    own index, and CutOut has no partner). ``value`` is written in the images' dtype.
    Outputs: images, lam, boxes[, targets].
    """
    operator = "fastmix.dali.cutout"
    pipeline_device(images)
    _check_labels_node(labels, operator)
    if length is not None and int(length) < 0:
        raise ValueError(f"{operator}: length must be >= 0, got {length}")
    image_layout = resolve_layout(images, layout, operator)
    height, width = native.image_height_width(images, image_layout)
    box = native.cutout_box(length, height, width, per_sample)
    erased = native.erase_box(images, box, value)
    lam = native.ones_per_sample()
    return MixNodes(images=declare(erased, image_layout), lam=lam, perm=None, boxes=native.stack_box(box),
                    targets=_mix_targets(labels, None, lam, num_classes, label_smoothing, operator))


def _int64(perm):
    return fn.cast(perm, dtype=types.INT64)


def fn_permute(images, perm):
    return fn.permute_batch(images, indices=perm)


def _optional_layout(images, layout, operator):
    """Mixup works in any layout: the inferred or given one (checked), or None when unknown."""
    if layout is None:
        return infer_layout(images)
    return resolve_layout(images, layout, operator)


# ----------------------------------------------------------------------------------------------
# Python-function operators: run time (per-sample torch tensors in, fastmix kernels, outputs out).


def _images(images, layout_samples, layout: str, operator) -> ImageBatch:
    if layout_samples is not None:  # CPU: the real layout is checked against the declared one
        check_declared_layout(layout_samples, layout, operator)
    return ImageBatch.from_samples(images, layout, operator)


def _outputs(result: MixResult, to_layout) -> dict:
    out = {"images": to_layout(result.images), "lam": result.lam.float(), "perm": result.perm.long()}
    if result.boxes is not None:
        out["boxes"] = result.boxes.long()
    if result.shifts is not None:
        out["shifts"] = result.shifts.long()
    if "mass" in result.extras:
        out["mass"] = result.extras["mass"].float()
    return out


def _device_vector(samples, dtype) -> torch.Tensor:
    """Per-sample scalars as a [B] tensor where they are (a GPU read would wait for the device)."""
    return torch.stack([s.reshape(()) for s in samples]).to(dtype)


def saliencymix_batch(images: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor, saliency: torch.Tensor | None,
                      per_sample: bool, value_range) -> MixResult:
    """SaliencyMix on injected per-sample perm and lam tensors on the images' device, without a
    host synchronisation: peaks, boxes and lam are computed where the images are."""
    batch, _, height, width = images.shape
    sources = perm if per_sample else perm[:1]
    if saliency is None:
        maps = box_ops.image_saliency(images[sources], value_range)
    else:
        require(torch.isfinite(saliency), "fastmix.dali.saliencymix: the saliency holds NaN or infinite values")
        maps = saliency[sources]
    peak_r, peak_c = box_ops.saliency_peaks(maps)
    rows = batch if per_sample else 1
    boxes = box_from_lam(lam[:rows], height, width, peak_r, peak_c)
    boxes = boxes if per_sample else boxes.expand(batch, 4).contiguous()
    from .. import dispatch

    mixed = dispatch.box_paste(images, perm, boxes)
    return MixResult(images=mixed, lam=box_area_lam(boxes, height, width), perm=perm, boxes=boxes)


def _saliencymix_batch(images, perm, lam, saliency=None, layout_samples=None, *, layout, per_sample, value_range):
    operator = "fastmix.dali.saliencymix"
    batch = _images(images, layout_samples, layout, operator)
    maps = None if saliency is None else stack_saliency(saliency, batch, operator)
    result = saliencymix_batch(batch.nchw, _device_vector(perm, torch.int64), _device_vector(lam, torch.float32),
                               maps, per_sample, value_range)
    return _outputs(result, batch.to_layout)


def _sage_batch(images, perm, mass=None, candidates=None, saliency=None, layout_samples=None, *, layout, alpha,
                upper_lambda, per_sample_mass, value_range, sage_options):
    operator = "fastmix.dali.sage_mix"
    batch = _images(images, layout_samples, layout, operator)
    if not batch.nchw.dtype.is_floating_point:
        raise TypeError(f"{operator} needs float images (SAGE shifts the partner in and fills with 0, the mean "
                        f"colour of normalised images), got {batch.nchw.dtype}; normalise first, e.g. with "
                        "fn.crop_mirror_normalize")
    maps = None if saliency is None else stack_saliency(saliency, batch, operator)
    if maps is None:
        maps = box_ops.image_saliency(batch.nchw, value_range)
    mass_t = None
    if mass is not None:  # used where the images are: no host read on the GPU
        values = _device_vector(mass, torch.float32)
        mass_t = (values if per_sample_mass else values[0]) * upper_lambda
    options = dict(sage_options)
    shifts = None
    height, width = batch.nchw.shape[2:]
    if sage_ops.resolve_search(options["search"], height, width) == "random":
        # drawn by DALI (fn.random.uniform, then Floyd's draw in numba_sage.candidate_shifts) and
        # already where the images are: nothing is read on the host
        stacked = torch.stack([c.reshape(-1, 2) for c in candidates]).to(torch.int64)
        if stacked.shape[1] == 0:
            population = (2 * height - 1) * (2 * width - 1)
            raise ValueError(f"{operator}: rand_pos={options['rand_pos']} gives K = int({population} * rand_pos) = 0 "
                             f"candidate shifts for {height}x{width} images; it must give K >= 1")
        shifts = stacked if options["per_sample_shifts"] else stacked[0]
    # perm stays where it is: fastmix.sage_mix checks a device perm with a device-side assert
    result = sage_ops.sage_mix(batch.nchw, saliency=maps, alpha=alpha, upper_lambda=upper_lambda, mass=mass_t,
                               perm=_device_vector(perm, torch.int64), per_sample_mass=per_sample_mass,
                               shifts=shifts, **options)
    return _outputs(result, batch.to_layout)


# ----------------------------------------------------------------------------------------------
# Python-function operators: graph construction.


def _build(compute, images, layout, inputs: dict, output_names: tuple, labels, targets_options, operator) -> MixNodes:
    """One python-function operator for the pixels; the soft targets are DALI arithmetic on its lam
    and the drawn perm (labels stay where they are, no python code touches them)."""
    device = pipeline_device(images)
    _check_labels_node(labels, operator)
    image_layout = resolve_layout(images, layout, operator)
    all_inputs = {"images": images, **inputs}
    if device == "cpu":  # the real layout, checked at run time; on the GPU reading it would sync
        all_inputs["layout_samples"] = images.property("layout", device="cpu")
    outputs = call_torch(partial(compute, layout=image_layout), all_inputs, output_names, device=device,
                         images_layout=image_layout)
    declare(outputs["images"], image_layout)
    targets = _mix_targets(labels, inputs["perm"], outputs["lam"], *targets_options, operator)
    return MixNodes(**outputs, targets=targets)


SALIENCYMIX_IMPLS = ("auto", "numba", "python")


def saliencymix(images, labels=None, *, saliency=None, alpha: float = 1.0, per_sample: bool = False,
                no_fixed_points: bool = False, value_range=None, num_classes: int | None = None,
                label_smoothing: float = 0.0, layout: str | None = None, impl: str = "auto") -> MixNodes:
    """SaliencyMix inside a DALI pipeline: paste the partner's most salient box (see ``fastmix.saliencymix``).

    The saliency is fastmix's fine-grained saliency of the images themselves (model-free, computed
    in the operator), or a ``saliency`` DataNode with one [H, W] ([1, H, W], [H, W, 1]) map per
    sample. Float images are mapped to uint8 for the saliency through ``value_range``; the default
    None stretches each image's min..max (DALI float images are usually mean/std normalised).
    perm: ``fn.batch_permutation``; lam: ``fn.random.beta`` (the first sample's for the batch
    unless ``per_sample``). ``impl``: ``"numba"`` finds the saliency peaks with a compiled kernel
    in DALI's ``numba_function`` (CPU, uint8 images, model-free saliency) and pastes with DALI
    operators, all without the GIL; ``"python"`` runs fastmix's kernels in one python function
    (any dtype, a saliency input, the GPU: there perm and lam are consumed on the device and the
    operator never waits for the GPU); ``"auto"`` takes numba where it applies. Both give the
    same batches for the same seed. Outputs: images, lam, perm, boxes[, targets].
    """
    operator = "fastmix.dali.saliencymix"
    native.check_alpha(alpha, operator)
    if impl not in SALIENCYMIX_IMPLS:
        raise ValueError(f"{operator}: impl must be one of {SALIENCYMIX_IMPLS}, got {impl!r}")
    if impl != "python":
        device = pipeline_device(images)
        dtype = infer_dtype(images)
        usable = (device == "cpu" and saliency is None and dtype == types.UINT8 and numba_ops.available())
        if impl == "numba" and not usable:
            raise ValueError(f"{operator}: impl='numba' needs model-free saliency (no saliency input) of CPU uint8 "
                             f"images whose dtype the graph tells (got {dtype}) and numba installed, "
                             f"FASTMIX_DISABLE_NUMBA unset (available: {numba_ops.available()}); use impl='python'")
        if usable:
            return _saliencymix_numba(images, labels, alpha, per_sample, no_fixed_points, num_classes,
                                      label_smoothing, layout, operator)
    compute = partial(_saliencymix_batch, per_sample=per_sample, value_range=value_range)
    inputs = {"perm": draws.partner_permutation(no_fixed_points), "lam": native.lam_draw(alpha, per_sample),
              "saliency": saliency}
    return _build(compute, images, layout, inputs, ("images", "lam", "perm", "boxes"), labels,
                  (num_classes, label_smoothing), operator)


def _saliencymix_numba(images, labels, alpha, per_sample, no_fixed_points, num_classes, label_smoothing, layout,
                       operator) -> MixNodes:
    _check_labels_node(labels, operator)
    image_layout = resolve_layout(images, layout, operator)
    perm = draws.partner_permutation(no_fixed_points)  # drawn in the python path's order: same batches
    lam = native.lam_draw(alpha, per_sample)
    peaks = numba_saliency.partner_peaks(images, perm, image_layout, per_sample)
    height, width = native.image_height_width(images, image_layout)
    box = native.box_from_lam(lam, height, width, peaks[0], peaks[1])
    ids = fn.stack(fn.cast(peaks[2], dtype=types.INT32), fn.cast(perm, dtype=types.INT32))
    mixed = native.paste_box(images, lambda: fn_permute(images, perm), box, height, width, image_layout, ids=ids)
    area_lam = native.area_lam(box, height, width)
    return MixNodes(images=declare(mixed, image_layout), lam=area_lam, perm=_int64(perm), boxes=native.stack_box(box),
                    targets=_mix_targets(labels, perm, area_lam, num_classes, label_smoothing, operator))


SAGE_IMPLS = ("auto", "numba", "python")


def sage_mix(images, labels=None, *, saliency=None, alpha: float = 1.0, upper_lambda: float = 1.0,
             rand_pos: float = 0.01, kernel_size: int = 5, sigma: float = 1.0, search: str = "auto",
             per_sample_shifts: bool = False, per_sample_mass: bool = False, no_fixed_points: bool = False,
             value_range=None, num_classes: int | None = None, label_smoothing: float = 0.0,
             layout: str | None = None, impl: str = "auto") -> MixNodes:
    """SAGE inside a DALI pipeline: mix with the partner shifted to keep the most saliency (see ``fastmix.sage_mix``).

    ``saliency`` is a DataNode with one non-negative float map [H, W] ([1, H, W], [H, W, 1]) per
    sample, e.g. from ``fn.external_source`` fed by the training loop; without it, the operator
    uses the model-free fine-grained saliency of the images (``fastmix.image_saliency``, with
    ``value_range`` as in :func:`saliencymix`). Images must be float (normalised, e.g. CHW from
    ``fn.crop_mirror_normalize``). perm: ``fn.batch_permutation``; the saliency mass
    a = Beta(alpha, alpha) * upper_lambda: ``fn.random.beta``; ``search`` as in fastmix.sage_mix
    ("auto": random candidates up to 64 px a side, coarse-to-fine above). The random candidate
    shifts are K = int((2H-1)(2W-1) * rand_pos) distinct shifts drawn from ``fn.random.uniform``
    numbers (Floyd's algorithm, :mod:`fastmix.dali.numba_sage`): CPU data that reaches a GPU
    operator as an input, so nothing is read on the host.
    ``impl``: ``"numba"`` runs the whole step as one compiled kernel in DALI's ``numba_function``
    (CPU float32 images whose dtype the graph tells, model-free saliency with ``value_range=None``),
    without the GIL or DALI's python-function lock; ``"python"`` runs fastmix's operator in one
    python function (any float dtype, a saliency input, a value_range, the GPU); ``"auto"`` takes
    numba where it applies. Both draw the same perm, mass and candidates for the same seed; the
    images agree to float rounding (see numba_sage).
    Outputs: images, lam (mean of SAGE's mask), perm, shifts, mass[, targets].
    """
    operator = "fastmix.dali.sage_mix"
    if not 0 <= upper_lambda <= 1:
        raise ValueError(f"{operator}: upper_lambda must be in [0, 1], got {upper_lambda}")
    native.check_alpha(alpha, operator)
    if impl not in SAGE_IMPLS:
        raise ValueError(f"{operator}: impl must be one of {SAGE_IMPLS}, got {impl!r}")
    if search not in sage_ops.SEARCHES:
        raise ValueError(f"{operator}: search must be one of {sage_ops.SEARCHES}, got {search!r}")
    if search in ("auto", "random") and not 0 < rand_pos <= 1:
        raise ValueError(f"{operator}: rand_pos must be in (0, 1], got {rand_pos}")
    if kernel_size < 1 or kernel_size % 2 == 0 or not sigma > 0:
        raise ValueError(f"{operator}: kernel_size must be a positive odd integer and sigma > 0, got "
                         f"kernel_size={kernel_size}, sigma={sigma}")
    device = pipeline_device(images)
    numba_ready = numba_ops.available()
    if impl != "python":
        dtype = infer_dtype(images)
        usable = (device == "cpu" and saliency is None and value_range is None and dtype == types.FLOAT
                  and numba_ready)
        if impl == "numba" and not usable:
            raise ValueError(f"{operator}: impl='numba' needs CPU float32 images whose dtype the graph tells (got "
                             f"{dtype}), the model-free saliency (no saliency input) with value_range=None, and "
                             f"numba installed, FASTMIX_DISABLE_NUMBA unset (available: {numba_ready}); use "
                             "impl='python'")
        if usable:
            return _sage_numba(images, labels, alpha, upper_lambda, rand_pos, kernel_size, sigma, search,
                               per_sample_shifts, per_sample_mass, no_fixed_points, num_classes, label_smoothing,
                               layout, operator)
    image_layout = resolve_layout(images, layout, operator)
    sage_options = {"rand_pos": rand_pos, "kernel_size": kernel_size, "sigma": sigma, "search": search,
                    "per_sample_shifts": per_sample_shifts}
    compute = partial(_sage_batch, alpha=alpha, upper_lambda=upper_lambda, per_sample_mass=per_sample_mass,
                      value_range=value_range, sage_options=sage_options)
    perm, mass, candidates = _sage_draws(images, image_layout, alpha, search, rand_pos, no_fixed_points, numba_ready)
    inputs = {"perm": perm, "mass": mass, "candidates": candidates, "saliency": saliency}
    return _build(compute, images, image_layout, inputs, ("images", "lam", "perm", "shifts", "mass"), labels,
                  (num_classes, label_smoothing), operator)


def _sage_draws(images, layout, alpha, search, rand_pos, no_fixed_points, use_numba):
    """perm, the Beta draw of the mass (None for alpha = 0) and the random candidate shifts (None
    for a deterministic search), drawn in this order by both implementations: same batches."""
    perm = draws.partner_permutation(no_fixed_points)
    mass = draws.beta_weights(alpha)
    candidates = None
    if search in ("auto", "random"):
        candidates = numba_sage.candidate_shifts(images, layout, search, rand_pos, use_numba)
    return perm, mass, candidates


def _sage_numba(images, labels, alpha, upper_lambda, rand_pos, kernel_size, sigma, search, per_sample_shifts,
                per_sample_mass, no_fixed_points, num_classes, label_smoothing, layout, operator) -> MixNodes:
    _check_labels_node(labels, operator)
    image_layout = resolve_layout(images, layout, operator)
    perm, mass_draw, candidates = _sage_draws(images, image_layout, alpha, search, rand_pos, no_fixed_points, True)
    if mass_draw is None:  # alpha = 0: the reference's a = 0.5 (times upper_lambda)
        mass_draw = native.ones_per_sample() * 0.5
    mixed, lam, shifts, mass = numba_sage.sage_mix(
        images, perm, mass_draw, candidates, layout=image_layout, search=search, per_sample_shifts=per_sample_shifts,
        per_sample_mass=per_sample_mass, upper_lambda=upper_lambda, kernel_size=kernel_size, sigma=sigma)
    mixed = declare_dtype(fn.reshape(mixed, layout=image_layout), types.FLOAT)  # numba_function sets no layout
    return MixNodes(images=declare(mixed, image_layout), lam=lam, perm=_int64(perm), shifts=shifts, mass=mass,
                    targets=_mix_targets(labels, perm, lam, num_classes, label_smoothing, operator))
