"""COCO instance annotations in and out (pycocotools decodes polygons and RLE; imported lazily)."""
from __future__ import annotations

import os
import warnings
from typing import Sequence

import numpy as np
import torch

from .instances import InstanceBatch, _check_mask_dtype

__all__ = ["load_coco_instances", "instances_to_coco"]


def _pycocotools():
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
    except ImportError as exc:  # pragma: no cover - exercised only without pycocotools
        raise ImportError("the COCO helpers of fastmix.copy_paste need pycocotools: pip install pycocotools") from exc
    return COCO, mask_utils


def _read_rgb(path: str) -> torch.Tensor:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover
        raise ImportError("reading COCO images needs Pillow: pip install pillow") from exc
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_coco_instances(annotation_file: str, image_dir: str, image_ids: Sequence[int] | None = None):
    """Load images and instance annotations from a COCO json file into an :class:`InstanceBatch`.

    Images are read as RGB uint8 [3, h, w] (and padded to the largest one). Crowd annotations
    (``iscrowd=1``) are skipped, as in the TensorFlow Copy-Paste reference. Masks are decoded
    from polygons or RLE with pycocotools; boxes come from the ``bbox`` field (x, y, w, h ->
    x1, y1, x2, y2); labels are the ``category_id`` values.

    Returns:
        (batch, images): the batch, and the COCO image records in batch order.
    """
    COCO, _ = _pycocotools()
    coco = COCO(annotation_file)
    ids = sorted(coco.getImgIds()) if image_ids is None else list(image_ids)
    if not ids:
        raise ValueError(f"{annotation_file} lists no images")
    images, masks, boxes, labels, records = [], [], [], [], []
    for image_id in ids:
        record = coco.loadImgs([image_id])[0]
        image = _read_rgb(os.path.join(image_dir, record["file_name"]))
        if tuple(image.shape[1:]) != (record["height"], record["width"]):
            raise ValueError(f"{record['file_name']} is {tuple(image.shape[1:])} pixels but the annotation file "
                             f"says {(record['height'], record['width'])}")
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])) if not a.get("iscrowd", 0)]
        height, width = record["height"], record["width"]
        if anns:
            with warnings.catch_warnings():
                # pycocotools' decoder trips a NumPy 2 DeprecationWarning (__array__ copy keyword) per mask.
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"pycocotools\.")
                decoded = [coco.annToMask(a) for a in anns]
            masks.append(torch.from_numpy(np.stack(decoded).astype(bool)))
            x, y, w, h = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).unbind(1)
            boxes.append(torch.stack([x, y, x + w, y + h], dim=1))
        else:
            masks.append(torch.zeros((0, height, width), dtype=torch.bool))
            boxes.append(torch.zeros((0, 4), dtype=torch.float32))
        labels.append(torch.tensor([a["category_id"] for a in anns], dtype=torch.int64))
        images.append(image)
        records.append(record)
    return InstanceBatch.from_lists(images, masks, boxes, labels), records


def instances_to_coco(masks: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], file_names: Sequence[str],
                      categories: Sequence[dict], boxes: Sequence[torch.Tensor] | None = None) -> dict:
    """A COCO instances dict (``images``, ``annotations``, ``categories``) for per-image masks.

    Segmentations are written as compressed RLE, ``area`` is the mask area and ``bbox`` is
    (x, y, w, h) from ``boxes`` (x1, y1, x2, y2) or, when None, from the masks. Image ids are
    1..B in list order, annotation ids 1..N. Objects with empty masks are written too.
    """
    _, mask_utils = _pycocotools()
    if not (len(masks) == len(labels) == len(file_names)) or (boxes is not None and len(boxes) != len(masks)):
        raise ValueError("masks, labels, file_names (and boxes) need one entry per image")
    out = {"images": [], "annotations": [], "categories": [dict(c) for c in categories]}
    next_ann_id = 1
    for i, (mask, label, name) in enumerate(zip(masks, labels, file_names)):
        _check_mask_dtype(mask, f"masks[{i}]")
        if mask.dim() != 3 or label.shape != (mask.shape[0],):
            raise ValueError(f"image {i}: masks {list(mask.shape)} and labels {list(label.shape)} disagree")
        height, width = mask.shape[1:]
        out["images"].append({"id": i + 1, "file_name": str(name), "height": int(height), "width": int(width)})
        array = np.asfortranarray((mask != 0).cpu().numpy().astype(np.uint8).transpose(1, 2, 0))
        rles = mask_utils.encode(array) if mask.shape[0] else []
        if boxes is None:
            from .instances import masks_to_boxes

            image_boxes = masks_to_boxes(mask.cpu())
        else:
            image_boxes = boxes[i].cpu().to(torch.float32)
        for rle, lab, box in zip(rles, label.tolist(), image_boxes.tolist()):
            x1, y1, x2, y2 = box
            out["annotations"].append({
                "id": next_ann_id, "image_id": i + 1, "category_id": int(lab), "iscrowd": 0,
                "segmentation": {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)), "bbox": [x1, y1, x2 - x1, y2 - y1],
            })
            next_ann_id += 1
    return out
