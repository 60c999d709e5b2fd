"""Simple Copy-Paste (Ghiasi et al., CVPR 2021) for instance segmentation, batched.

Public API: :func:`copy_paste`, :class:`CopyPasteResult`, the data model :class:`InstanceBatch`
(padded form, with list conversions), :func:`draw_copy_paste_params` and the parameter records,
and COCO helpers (:func:`load_coco_instances`, :func:`instances_to_coco`; need pycocotools).
"""
from .coco import instances_to_coco, load_coco_instances
from .instances import InstanceBatch, masks_to_boxes
from .operator import CopyPasteResult, copy_paste
from .params import CopyPasteParams, JitterParams, draw_copy_paste_params, lsj_scaled_size

__all__ = [
    "copy_paste", "CopyPasteResult", "InstanceBatch", "masks_to_boxes", "CopyPasteParams", "JitterParams",
    "draw_copy_paste_params", "lsj_scaled_size", "load_coco_instances", "instances_to_coco",
]
