"""Simple Copy-Paste as a DALI pipeline operator, around ``fastmix.copy_paste.copy_paste``.

The pairing comes from ``fn.batch_permutation``; the large-scale jitter and the pasted object
subsets from a ``torch.Generator`` seeded by ``fn.random.uniform`` (both follow the pipeline
seed). Images may differ in size (give ``output_size`` then); each image brings its own
instance masks [N_i, H_i, W_i] (e.g. from :func:`fastmix.dali.polygon_masks`), labels [N_i]
and optionally boxes [N_i, 4] (x1, y1, x2, y2), as ``fn.readers.coco(ltrb=True)`` gives them.
"""
from __future__ import annotations

from functools import partial

import torch

from ..copy_paste import InstanceBatch
from ..copy_paste import copy_paste as copy_paste_batch
from . import draws
from ._batch import check_declared_layout, chw_to_layout, host_vector, sample_to_chw
from ._bridge import call_torch, pipeline_device
from .layouts import declare, resolve_layout
from .nodes import CopyPasteNodes

__all__ = ["copy_paste"]

OPERATOR = "fastmix.dali.copy_paste"


def _instance_batch(images, layout: str, masks, labels, boxes) -> InstanceBatch:
    if any(image.dim() != 3 for image in images):
        raise ValueError(f"{OPERATOR} needs 3-D {layout} images, got shapes {[tuple(i.shape) for i in images]}")
    chw = [sample_to_chw(image, layout) for image in images]
    object_labels = [label.reshape(-1).long() for label in labels]
    object_boxes = None if boxes is None else [box.reshape(-1, 4).float() for box in boxes]
    return InstanceBatch.from_lists(chw, list(masks), object_boxes, object_labels)


def _copy_paste_batch(images, masks, labels, perm, seed, boxes=None, layout_samples=None, *, options, layout):
    if layout_samples is not None:  # CPU: the real layout against the one the graph gave
        check_declared_layout(layout_samples, layout, OPERATOR)
    layout_name = layout
    batch = _instance_batch(images, layout_name, masks, labels, boxes)
    seed_value = int(host_vector(seed, torch.int64)[0])
    result = copy_paste_batch(batch, perm=host_vector(perm, torch.int64),
                              generator=torch.Generator().manual_seed(seed_value), **options)
    device = result.images.device
    return {"images": chw_to_layout(result.images, layout_name), "masks": result.masks, "boxes": result.boxes,
            "labels": result.labels, "perm": result.perm,
            "seed": torch.full((len(images),), seed_value, dtype=torch.int64, device=device)}


def copy_paste(images, masks, labels, *, boxes=None, output_size=None, scale_range=(0.1, 2.0),
               flip_prob: float = 0.5, max_num_pasted: int = 100, paste_fraction: float | None = None,
               bbox_occluded_thr: float = 10, mask_occluded_thr: float = 300, blend: str = "hard",
               blend_sigma: float = 2.0, blend_kernel_size: int = 5, no_fixed_points: bool = True,
               layout: str | None = None) -> CopyPasteNodes:
    """Simple Copy-Paste inside a DALI pipeline: image i receives a random subset of the objects of
    image perm[i] (all options as in ``fastmix.copy_paste.copy_paste``).

    images: HWC or CHW images (layout read off the graph, or given with ``layout``), on the CPU or
    the GPU; masks: per image uint8/bool [N_i, H_i, W_i]; labels: per image [N_i] integer class ids; boxes (optional): per
    image [N_i, 4] (x1, y1, x2, y2) pixels. ``output_size`` (rows, cols) is required when the
    images differ in size. Returns :class:`CopyPasteNodes` (images, masks, boxes, labels, perm,
    seed); the images output carries the input's layout.
    ``no_fixed_points=True`` (default) draws a pairing without self-pairs, as every Copy-Paste
    reference; at batch size 1 DALI returns [0] and nothing is pasted (an image never pastes
    into itself, see ``fastmix.copy_paste.params``).
    """
    device = pipeline_device(images)
    image_layout = resolve_layout(images, layout, OPERATOR)
    options = {"output_size": output_size, "scale_range": scale_range, "flip_prob": flip_prob,
               "max_num_pasted": max_num_pasted, "paste_fraction": paste_fraction,
               "bbox_occluded_thr": bbox_occluded_thr, "mask_occluded_thr": mask_occluded_thr, "blend": blend,
               "blend_sigma": blend_sigma, "blend_kernel_size": blend_kernel_size}
    compute = partial(_copy_paste_batch, options=options, layout=image_layout)
    inputs = {"images": images, "masks": masks, "labels": labels,
              "perm": draws.partner_permutation(no_fixed_points), "seed": draws.batch_seed(), "boxes": boxes}
    if device == "cpu":
        inputs["layout_samples"] = images.property("layout", device="cpu")
    outputs = ("images", "masks", "boxes", "labels", "perm", "seed")
    nodes = call_torch(compute, inputs, outputs, device=device, images_layout=image_layout)
    declare(nodes["images"], image_layout)
    return CopyPasteNodes(**nodes)
