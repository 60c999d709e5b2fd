"""Batched Simple Copy-Paste (Ghiasi et al., CVPR 2021) for instance segmentation."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import torch

from ..backends.pytorch import copy_paste as torch_kernels
from .instances import InstanceBatch
from .params import (CopyPasteParams, check_copy_paste_params, check_draw_options, draw_copy_paste_params,
                     lsj_scaled_size)

__all__ = ["copy_paste", "CopyPasteResult"]

BACKENDS = ("auto", "pytorch", "cupy", "numba")
BLENDS = ("hard", "gaussian")


@dataclass
class CopyPasteResult:
    """What ``copy_paste`` produced, and every parameter it used.

    images:  [B, C, H, W] output images (the input dtype and memory format).
    masks:   per image [N_i, H, W] masks (the input mask dtype): the receiving image's surviving
             objects first, in their original order, then the pasted objects in index order.
    boxes:   per image float32 [N_i, 4] in the order (x1, y1, x2, y2) (``BOX_ORDER``; COCO/
             torchvision/mmdetection's order, unlike the classification operators' rows-first
             (y1, y2, x1, x2)), pixels, x2/y2 exclusive, from the masks.
    labels:  per image int64 [N_i].
    perm:    int64 [B], image i received objects from image perm[i] (= params.perm).
    params:  the :class:`CopyPasteParams` (scales, offsets, flips, selected objects); pass it as
             ``copy_paste(batch, params=result.params)`` to replay the call.
    alpha:   float32 [B, H, W], the weight of the pasted image in the blend.
    kept:    bool [B, Nmax], receiving object j of image i survived the occlusion rule.
    pasted:  bool [B, Nmax], object n of image perm[i] was appended to image i (selected and
             not cropped away).
    """

    BOX_ORDER: ClassVar[str] = "x1, y1, x2, y2"

    images: torch.Tensor
    masks: list[torch.Tensor]
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    perm: torch.Tensor
    params: CopyPasteParams
    alpha: torch.Tensor
    kept: torch.Tensor
    pasted: torch.Tensor

    @property
    def counts(self) -> torch.Tensor:
        """int64 [B] (CPU) objects per output image."""
        return torch.tensor([m.shape[0] for m in self.masks], dtype=torch.int64)

    def padded(self) -> InstanceBatch:
        """The output in padded form (masks [B, Nmax, H, W], boxes, labels, counts)."""
        return InstanceBatch.from_lists(self.images, list(self.masks), list(self.boxes), list(self.labels))


def _kernels(backend: str, device: torch.device):
    """The deterministic steps: the oracle itself, or the torch ops (CuPy kernels on CUDA)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "pytorch":
        return torch_kernels
    if backend == "numba" or (backend == "auto" and device.type == "cpu"):
        from ..backends import numba as numba_backend

        if numba_backend.available() and device.type == "cpu":
            from ..backends.numba import copy_paste as numba_copy_paste

            return numba_copy_paste.kernels()
        if backend == "numba":
            raise ValueError(f"backend='numba' needs the numba package and CPU tensors (the batch is on {device})")
    if backend == "cupy" and device.type != "cuda":
        raise ValueError(f"backend='cupy' needs CUDA tensors, the batch is on {device}")
    from ..ops import copy_paste as ops

    names = ("lsj_resample_images", "lsj_resample_masks", "occlusion_update", "copy_paste_blend",
             "instance_boxes_areas")
    return SimpleNamespace(**{name: functools.partial(getattr(ops, name), backend=backend) for name in names})


def _resolve_output_size(output_size, batch: InstanceBatch) -> tuple[int, int]:
    if output_size is None:
        sizes = batch.image_sizes
        if bool((sizes != sizes[0]).any()):
            raise ValueError("images differ in size: pass output_size=(rows, cols)")
        return int(sizes[0, 0]), int(sizes[0, 1])
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if len(output_size) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in output_size):
        raise ValueError(f"output_size must be a positive int or (rows, cols), got {output_size}")
    return int(output_size[0]), int(output_size[1])


def _to_dtype(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """float32 -> the input dtype (integers: round half to even, clamp) and memory format."""
    if like.dtype.is_floating_point:
        out = values.to(like.dtype)
    else:
        info = torch.iinfo(like.dtype)
        out = values.round().clamp_(info.min, info.max).to(like.dtype)
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy small host parameters without waiting for the GPU (pinned, non-blocking)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _gather_outputs(kept: torch.Tensor, pasted: torch.Tensor, receiving: tuple, appended: tuple) -> list[list]:
    """Per image, the kept receiving rows followed by the appended pasted rows, for each pair of
    [B, N, ...] tensors in ``receiving`` / ``appended``. One device-to-host read for the batch."""
    kept_host, pasted_host = torch.stack([kept, pasted]).cpu().unbind(0)
    out = [[] for _ in receiving]
    for i in range(kept_host.shape[0]):
        first = kept_host[i].nonzero().flatten().to(kept.device, non_blocking=True)
        second = pasted_host[i].nonzero().flatten().to(kept.device, non_blocking=True)
        for column, a, b in zip(out, receiving, appended):
            # Both selections written straight into the output: one copy of the masks, not two.
            joined = a.new_empty((first.numel() + second.numel(),) + tuple(a.shape[2:]))
            torch.index_select(a[i], 0, first, out=joined[:first.numel()])
            torch.index_select(b[i], 0, second, out=joined[first.numel():])
            column.append(joined)
    return out


def copy_paste(batch: InstanceBatch, *, output_size=None, scale_range=(0.1, 2.0), flip_prob: float = 0.5,
               max_num_pasted: int = 100, paste_fraction: float | None = None, bbox_occluded_thr: float = 10,
               mask_occluded_thr: float = 300, blend: str = "hard", blend_sigma: float = 2.0,
               blend_kernel_size: int = 5, perm=None, params: CopyPasteParams | None = None,
               generator: torch.Generator | None = None, backend: str = "auto") -> CopyPasteResult:
    """Simple Copy-Paste on a whole batch: image i receives a random subset of the objects of
    image perm[i].

    The drawn pairing has no fixed points (image i never pastes into itself); a batch of one
    image, or a self-pair perm[i] == i of an injected pairing, pastes nothing (see
    ``fastmix.copy_paste.params``).

    Steps (``shared/spec/algorithms.md`` section 7.5):

    1. Large-scale jittering, independently for the receiving image i and for the pasted copy
       of image perm[i]: horizontal flip with probability ``flip_prob``, resize by
       s ~ U(``scale_range``) of ``output_size`` keeping the aspect ratio (bilinear for images,
       nearest for masks), then a random crop, or zero padding at the bottom/right, to
       ``output_size``. Use ``scale_range=(1, 1), flip_prob=0`` to paste without jittering.
    2. A uniform random subset of image perm[i]'s objects (count uniform in
       0..min(n, ``max_num_pasted``), or ``int(n * paste_fraction)`` capped the same way).
    3. alpha = union of the selected masks; ``blend="hard"`` pastes those pixels,
       ``"gaussian"`` blends with alpha smoothed by a ``blend_kernel_size`` Gaussian of
       ``blend_sigma`` (the paper's option; masks always use the hard alpha).
    4. Receiving masks lose the pasted pixels and their boxes are recomputed from the masks. An
       object is dropped, per object as in mmdetection's ``CopyPaste``, when some box
       coordinate moved by more than ``bbox_occluded_thr`` px and at most
       ``mask_occluded_thr`` px of it remain, or when nothing of it remains. (TensorFlow's
       reference reduces the moved test over the whole image instead; not reproduced.) The
       "before" box is derived from the jittered mask, like mmdetection's pipeline where
       ``RandomCrop(recompute_bbox=True)`` precedes ``CopyPaste``, so an object the paste does
       not touch is never dropped; the input boxes are not used for the output.
    5. The pasted objects are appended (boxes from their masks; objects the crop removed are
       skipped).

    Args:
        batch: an :class:`InstanceBatch` (see ``InstanceBatch.from_lists`` for per-image lists).
        output_size: (rows, cols) or int; default: the images' size (they must all agree).
        perm: injected pairing (int64 [B]); params: injected :class:`CopyPasteParams` (replaces
            every draw, including perm); generator: source of every random draw.
        backend: "auto" (CuPy kernels on CUDA; on the CPU the numba kernels when numba is
            installed, else PyTorch), "pytorch" (the oracle on any device), "cupy" (CUDA only)
            or "numba" (CPU only).

    Returns:
        a :class:`CopyPasteResult`. The input is never modified.
    """
    if not isinstance(batch, InstanceBatch):
        raise TypeError(f"batch must be an InstanceBatch (see InstanceBatch.from_lists), got {type(batch).__name__}")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if blend == "gaussian" and (blend_kernel_size < 1 or blend_kernel_size % 2 == 0 or not blend_sigma > 0):
        raise ValueError(f"blend_kernel_size must be a positive odd int and blend_sigma > 0, "
                         f"got {blend_kernel_size} and {blend_sigma}")
    for name, value in (("bbox_occluded_thr", bbox_occluded_thr), ("mask_occluded_thr", mask_occluded_thr)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    check_draw_options(scale_range, flip_prob, max_num_pasted, paste_fraction)
    kernels = _kernels(backend, batch.device)
    height, width = _resolve_output_size(output_size, batch)
    count, slots, device = batch.batch_size, batch.max_instances, batch.device

    if params is None:
        params = draw_copy_paste_params(batch.counts, batch.image_sizes, (height, width), max_instances=slots,
                                        scale_range=scale_range, flip_prob=flip_prob, max_num_pasted=max_num_pasted,
                                        paste_fraction=paste_fraction, perm=perm, generator=generator)
    else:
        if perm is not None:
            raise ValueError("pass the pairing either as perm= or inside params=, not both")
        params = check_copy_paste_params(params, batch.counts, batch.image_sizes, (height, width), slots)
    perm_t = params.perm

    # Views 0..B-1: image i as receiver; views B..2B-1: image perm[i] as the source of pair i.
    source = torch.cat([torch.arange(count), perm_t])
    jitters = (params.receiving, params.pasted)
    scale = torch.cat([j.scale for j in jitters])
    scaled = lsj_scaled_size(scale, batch.image_sizes[source], (height, width))
    views = _host_to_device(torch_kernels.pack_views(source, batch.image_sizes, scaled,
                                                     torch.cat([j.offset for j in jitters]),
                                                     torch.cat([j.flip for j in jitters])), device)
    slots_used = torch.arange(slots)[None, :] < batch.counts[:, None]
    active = _host_to_device(torch.cat([slots_used, params.selected]), device)

    masks_in = batch.masks if batch.masks.dtype == torch.bool else batch.masks != 0
    # A backend with a fused mask step (numba) returns the output masks without the jittered
    # and occluded mask batches below.
    fused_masks = getattr(kernels, "paste_instance_masks", None)
    fused = (fused_masks(masks_in, views, active, height, width, bbox_occluded_thr, mask_occluded_thr,
                         batch.masks.dtype) if fused_masks is not None else None)
    if fused is not None:
        alpha_hard, kept, pasted, masks_list, boxes_after, pasted_boxes = fused
    else:
        masks_f = kernels.lsj_resample_masks(masks_in, views, active, height, width)
        receiving_masks, pasted_masks = masks_f[:count], masks_f[count:]

        # One pass gives the receiving boxes before the paste and the pasted objects' boxes.
        boxes_jittered, areas_jittered = kernels.instance_boxes_areas(masks_f)
        alpha_hard, updated = kernels.occlusion_update(receiving_masks, pasted_masks)
        boxes_after, areas_after = kernels.instance_boxes_areas(updated)
        kept = torch_kernels.receiving_keep(boxes_jittered[:count], boxes_after, areas_after, active[:count],
                                            bbox_occluded_thr, mask_occluded_thr)
        pasted = active[count:] & (areas_jittered[count:] > 0)
        pasted_boxes = boxes_jittered[count:]

    if blend == "hard":
        alpha = alpha_hard.to(torch.float32)
    else:
        alpha = torch_kernels.smooth_alpha(alpha_hard, blend_kernel_size, blend_sigma)
    # A backend with a fused step (numba) resamples, blends and casts in one pass: no float32
    # copy of the 2B views, no float blend of the batch.
    paste_images = getattr(kernels, "lsj_paste_images", None)
    images = paste_images(batch.images, views, alpha, height, width) if paste_images is not None else None
    if images is None:
        images_f = kernels.lsj_resample_images(batch.images, views, height, width)
        images = _to_dtype(kernels.copy_paste_blend(images_f[:count], images_f[count:], alpha), batch.images)

    source_labels = batch.labels.index_select(0, _host_to_device(perm_t, device))
    if fused is None:
        masks_list, boxes_list, labels_list = _gather_outputs(kept, pasted, (updated, boxes_after, batch.labels),
                                                              (pasted_masks, pasted_boxes, source_labels))
        if batch.masks.dtype != torch.bool:
            masks_list = [m.to(batch.masks.dtype) for m in masks_list]
    else:
        boxes_list, labels_list = _gather_outputs(kept, pasted, (boxes_after, batch.labels),
                                                  (pasted_boxes, source_labels))
    return CopyPasteResult(images=images, masks=masks_list, boxes=boxes_list, labels=labels_list,
                           perm=_host_to_device(perm_t, device), params=params, alpha=alpha, kept=kept, pasted=pasted)
