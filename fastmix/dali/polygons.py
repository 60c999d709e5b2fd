"""Instance masks from the polygons of ``fn.readers.coco(polygon_masks=True)``.

DALI's COCO reader gives per image ``polygons`` [P, 3] rows of (object index, first vertex,
end vertex) and ``vertices`` [V, 2] (x, y); its ``pixelwise_masks`` are semantic (one class id
per pixel), so instance-level Copy-Paste needs these polygons rasterised, which DALI has no
operator for.
"""
from __future__ import annotations

import torch

from ._bridge import call_torch, node_device


def rasterize_polygons(polygons: torch.Tensor, vertices: torch.Tensor, count: int, height: int,
                       width: int) -> torch.Tensor:
    """uint8 [count, height, width] masks: pixel (r, c) is inside when its centre (c + 0.5, r + 0.5)
    is inside a polygon of the object by the even-odd rule; an object's polygons are united.

    polygons: int [P, 3] (object index, first vertex, end vertex); vertices: float [V, 2] (x, y)
    in pixels. Each polygon row is scanned once: crossings of its edges with the row centres
    are histogrammed by the first pixel right of them, and a suffix sum gives every pixel's
    crossing count.
    """
    masks = torch.zeros((count, height, width), dtype=torch.bool)
    centres = torch.arange(height, dtype=torch.float64) + 0.5
    for index, start, end in polygons.reshape(-1, 3).tolist():
        if not 0 <= index < count:
            raise ValueError(f"a polygon belongs to object {index} but the image has {count} objects")
        if not 0 <= start <= end <= vertices.shape[0]:
            raise ValueError(f"polygon vertex range [{start}, {end}) is outside the {vertices.shape[0]} vertices")
        if end - start < 3:
            continue
        x1, y1 = vertices[start:end].double().unbind(1)
        x2, y2 = x1.roll(-1), y1.roll(-1)
        crosses = (y1[:, None] > centres) != (y2[:, None] > centres)              # [E, H]
        slope = torch.where(y2 != y1, (x2 - x1) / (y2 - y1), torch.zeros_like(x1))
        x_at = x1[:, None] + (centres - y1[:, None]) * slope[:, None]
        first_right = torch.ceil(x_at - 0.5).clamp(0, width).long()              # pixels c < it cross
        first_right = torch.where(crosses, first_right, torch.zeros_like(first_right))
        histogram = torch.zeros((height, width + 1), dtype=torch.int64)
        histogram.scatter_add_(1, first_right.T, crosses.T.long())
        right_of = histogram.flip(1).cumsum(1).flip(1)[:, 1:]                     # crossings right of c
        masks[index] |= right_of % 2 == 1
    return masks.to(torch.uint8)


def _polygon_masks_batch(polygons, vertices, labels, image_shape):
    masks = []
    for poly, vert, lab, shape in zip(polygons, vertices, labels, image_shape):
        height, width = (int(v) for v in shape.reshape(-1)[:2].tolist())
        masks.append(rasterize_polygons(poly, vert, int(lab.numel()), height, width))
    return {"masks": masks}


def polygon_masks(polygons, vertices, labels, image_shape):
    """A DataNode of uint8 [N, H, W] instance masks per image (CPU), for :func:`fastmix.dali.copy_paste`.

    polygons, vertices, labels: the outputs of ``fn.readers.coco(polygon_masks=True)`` with
    absolute pixel coordinates (the default ``ratio=False``); labels only give the number of
    objects N. image_shape: per image a 1-D shape whose first two entries are (H, W), e.g.
    ``fn.peek_image_shape(jpegs)`` or ``images.shape()`` of HWC images.
    """
    inputs = {"polygons": polygons, "vertices": vertices, "labels": labels, "image_shape": image_shape}
    for name, node in inputs.items():
        if node_device(node, name) != "cpu":
            raise ValueError(f"polygon_masks runs on the CPU; {name} is on the {node_device(node, name)}")
    return call_torch(_polygon_masks_batch, inputs, ("masks",), device="cpu")["masks"]
