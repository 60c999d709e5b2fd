"""Deterministic PyTorch kernels of Simple Copy-Paste (Ghiasi et al., CVPR 2021).

These functions define the semantics: they are the CPU backend and the oracle that the CUDA
kernels in ``kernels/copy_paste.cu`` must reproduce (masks and boxes bit for bit, images to
float rounding). Nothing here draws random numbers; every choice arrives as an argument (see
``fastmix.copy_paste.params``).

Geometry of large-scale jittering (LSJ). A *view* is one image seen through one jitter: a
horizontal flip of the original image, a resize of the (h, w) original to (scaled_h, scaled_w),
and a window of the output size taken at (offset_y, offset_x) of the resized image; output
pixels outside the resized image are zero (zero padding at the bottom/right, as in the
TensorFlow reference). Coordinates use pixel centres (``align_corners=False``):

* images, bilinear: ``s = max((p + 0.5) * (in / scaled) - 0.5, 0)``; taps ``floor(s)`` and
  ``min(floor(s) + 1, in - 1)``, weight ``s - floor(s)``;
* masks, nearest: ``min(floor((p + 0.5) * (in / scaled)), in - 1)`` (pixel-centre nearest, so a
  mask stays aligned with its bilinearly resampled image);

where ``p`` is the position in the resized image (output position + offset). All of it is
float32 arithmetic with one rounding per operation; the CUDA kernels use the same operation
order with ``__f*_rn`` intrinsics (no fused multiply-add), so the taps are identical.

Boxes are float32 ``(x1, y1, x2, y2)`` in pixels, derived from masks: x1/y1 is the first
column/row that holds the object and x2/y2 is one past the last (exclusive, as mmdetection's
``BitmapMasks.get_bboxes`` and torchvision's ``masks_to_boxes`` + 1). An empty mask has the box
(0, 0, 0, 0) and area 0.
"""
from __future__ import annotations

import torch

from .gaussian import gaussian_smooth

__all__ = [
    "VIEW_FIELDS", "pack_views", "lsj_resample_images", "lsj_resample_masks", "occlusion_update",
    "copy_paste_blend", "instance_boxes_areas", "receiving_keep", "smooth_alpha",
]

# Columns of the packed per-view geometry, an int32 [V, VIEW_FIELDS] tensor. The same layout is
# hard-coded in kernels/copy_paste.cu (enum ViewField); keep the two in sync.
(VIEW_SOURCE, VIEW_IN_H, VIEW_IN_W, VIEW_SCALED_H, VIEW_SCALED_W,
 VIEW_OFFSET_Y, VIEW_OFFSET_X, VIEW_FLIP) = range(8)
VIEW_FIELDS = 8


def pack_views(source_index: torch.Tensor, image_sizes: torch.Tensor, scaled_size: torch.Tensor,
               offset: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """int32 [V, 8] geometry: view v shows batch image ``source_index[v]`` (whose valid size is
    ``image_sizes[source_index[v]]``) flipped if ``flip[v]``, resized to ``scaled_size[v]``
    (rows, cols) and windowed at ``offset[v]`` (rows, cols)."""
    source_index = source_index.long()
    sizes = image_sizes.long()[source_index]
    columns = [source_index[:, None], sizes, scaled_size.long(), offset.long(), flip.long()[:, None]]
    return torch.cat(columns, dim=1).to(torch.int32)


def _axis_positions(views: torch.Tensor, out_len: int, offset_col: int, scaled_col: int, in_col: int):
    """Per view and output position: float32 position in the resized image, inside flag, the
    float32 input/scaled ratio and the input length. Shapes [V, L], [V, L], [V, 1], [V, 1]."""
    v = views.long()
    pos = torch.arange(out_len, device=views.device)[None, :] + v[:, offset_col : offset_col + 1]
    inside = pos < v[:, scaled_col : scaled_col + 1]
    in_len = v[:, in_col : in_col + 1]
    ratio = in_len.to(torch.float32) / v[:, scaled_col : scaled_col + 1].to(torch.float32)
    return pos.to(torch.float32), inside, ratio, in_len


def _bilinear_taps(views: torch.Tensor, out_len: int, axis: str):
    """(tap0, tap1, weight of tap1, inside), each [V, L]; axis 'y' (rows) or 'x' (cols, flipped)."""
    cols = (VIEW_OFFSET_Y, VIEW_SCALED_H, VIEW_IN_H) if axis == "y" else (VIEW_OFFSET_X, VIEW_SCALED_W, VIEW_IN_W)
    pos, inside, ratio, in_len = _axis_positions(views, out_len, *cols)
    src = ((pos + 0.5) * ratio - 0.5).clamp_min(0.0)
    tap0 = torch.minimum(src.floor().long(), in_len - 1)
    tap1 = torch.minimum(tap0 + 1, in_len - 1)
    weight = src - tap0.to(torch.float32)
    if axis == "x":
        tap0, tap1 = _flip_columns(views, tap0, in_len), _flip_columns(views, tap1, in_len)
    return tap0, tap1, weight, inside


def _nearest_taps(views: torch.Tensor, out_len: int, axis: str):
    """(tap, inside), each [V, L]: pixel-centre nearest neighbour; columns honour the flip."""
    cols = (VIEW_OFFSET_Y, VIEW_SCALED_H, VIEW_IN_H) if axis == "y" else (VIEW_OFFSET_X, VIEW_SCALED_W, VIEW_IN_W)
    pos, inside, ratio, in_len = _axis_positions(views, out_len, *cols)
    tap = torch.minimum(((pos + 0.5) * ratio).floor().long(), in_len - 1)
    if axis == "x":
        tap = _flip_columns(views, tap, in_len)
    return tap, inside


def _flip_columns(views: torch.Tensor, tap: torch.Tensor, in_len: torch.Tensor) -> torch.Tensor:
    # Column j of the flipped original is column (w - 1 - j) of the original.
    flip = views[:, VIEW_FLIP : VIEW_FLIP + 1].bool()
    return torch.where(flip, in_len - 1 - tap, tap)


def _select_columns(x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``x[..., columns]``; torch.gather with an expanded index is several times faster on the
    CPU than index_select or advanced indexing along the last dimension."""
    return torch.gather(x, -1, columns.expand(*x.shape[:-1], columns.shape[0]))


def lsj_resample_images(images: torch.Tensor, views: torch.Tensor, out_height: int, out_width: int) -> torch.Tensor:
    """Bilinear LSJ of every view: float32 [V, C, out_height, out_width] (not rounded).

    images: [B, C, H, W] of any float dtype or uint8 (valid region top-left, see ``pack_views``).
    """
    rows0, rows1, wy, inside_y = _bilinear_taps(views, out_height, "y")
    cols0, cols1, wx, inside_x = _bilinear_taps(views, out_width, "x")
    out = images.new_empty((views.shape[0], images.shape[1], out_height, out_width), dtype=torch.float32)
    # The taps are separable, so each view is a few row/column gathers; the loop runs over the
    # 2B views, not over pixels or instances.
    for v, source in enumerate(views[:, VIEW_SOURCE].tolist()):
        image = images[source].to(torch.float32)
        top, bottom = image.index_select(1, rows0[v]), image.index_select(1, rows1[v])
        wx_v, wy_v = wx[v], wy[v][:, None]
        top = (1 - wx_v) * _select_columns(top, cols0[v]) + wx_v * _select_columns(top, cols1[v])
        bottom = (1 - wx_v) * _select_columns(bottom, cols0[v]) + wx_v * _select_columns(bottom, cols1[v])
        value = (1 - wy_v) * top + wy_v * bottom
        inside = inside_y[v][:, None] & inside_x[v][None, :]
        out[v] = torch.where(inside, value, torch.zeros((), dtype=torch.float32, device=value.device))
    return out


def lsj_resample_masks(masks: torch.Tensor, views: torch.Tensor, active: torch.Tensor,
                       out_height: int, out_width: int) -> torch.Tensor:
    """Nearest-neighbour LSJ of instance masks: bool [V, N, out_height, out_width].

    masks: bool [B, N, H, W]; active: bool [V, N], False rows come out empty (padding slots,
    unselected source instances), so the caller never has to compact before this step.
    """
    rows, inside_y = _nearest_taps(views, out_height, "y")
    cols, inside_x = _nearest_taps(views, out_width, "x")
    out = masks.new_zeros((views.shape[0], masks.shape[1], out_height, out_width), dtype=torch.bool)
    active = active.bool()
    for v, source in enumerate(views[:, VIEW_SOURCE].tolist()):
        chosen = active[v].nonzero().flatten()
        if chosen.numel() == 0:
            continue
        picked = _select_columns(masks[source].index_select(0, chosen).index_select(1, rows[v]), cols[v])
        inside = inside_y[v][:, None] & inside_x[v][None, :]
        out[v].index_copy_(0, chosen, picked.bool() & inside)
    return out


def occlusion_update(receiving_masks: torch.Tensor, pasted_masks: torch.Tensor):
    """alpha = union of the pasted masks, bool [B, H, W]; receiving masks lose those pixels.

    Returns (alpha, updated receiving masks bool [B, N, H, W]).
    """
    alpha = pasted_masks.any(dim=1)
    updated = receiving_masks & ~alpha[:, None]
    return alpha, updated


def copy_paste_blend(receiving: torch.Tensor, pasted: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``receiving * (1 - alpha) + pasted * alpha`` in float32, alpha [B, H, W] broadcast over C."""
    a = alpha.to(torch.float32)[:, None]
    return receiving.to(torch.float32) * (1 - a) + pasted.to(torch.float32) * a


def instance_boxes_areas(masks: torch.Tensor):
    """Boxes float32 [..., 4] (x1, y1, x2, y2; x2/y2 exclusive) and areas int64 [...] of
    masks [..., H, W]. Empty masks give (0, 0, 0, 0) and 0."""
    height, width = masks.shape[-2:]
    if masks.numel() == 0:
        lead = masks.shape[:-2]
        return (torch.zeros(lead + (4,), dtype=torch.float32, device=masks.device),
                torch.zeros(lead, dtype=torch.int64, device=masks.device))
    # uint8 reductions: much faster than bool ones on the CPU, same results.
    pixels = masks.bool().view(torch.uint8) if masks.dtype == torch.bool else (masks != 0).view(torch.uint8)
    per_row = pixels.sum(dim=-1, dtype=torch.int32)
    areas = per_row.sum(dim=-1, dtype=torch.int64)
    rows = (per_row > 0).to(torch.uint8)
    cols = pixels.amax(dim=-2)
    # argmax returns the first maximal index: the first row/column that holds the object.
    y1 = rows.argmax(dim=-1)
    y2 = height - rows.flip(-1).argmax(dim=-1)
    x1 = cols.argmax(dim=-1)
    x2 = width - cols.flip(-1).argmax(dim=-1)
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    boxes = torch.where((areas > 0)[..., None], boxes, 0)
    return boxes.to(torch.float32), areas


def receiving_keep(before_boxes: torch.Tensor, after_boxes: torch.Tensor, after_areas: torch.Tensor,
                   active: torch.Tensor, bbox_occluded_thr: float, mask_occluded_thr: float) -> torch.Tensor:
    """mmdetection's per-object rule, plus "something must be left": bool [B, N].

    An active receiving object is kept iff its mask is not empty and either no box coordinate
    moved by more than ``bbox_occluded_thr`` pixels or more than ``mask_occluded_thr`` pixels
    of it remain. (TensorFlow's reference instead reduces the moved test over all objects of the
    image, dropping every small object as soon as any object is occluded; not reproduced.)
    """
    moved = (after_boxes - before_boxes).abs().amax(dim=-1) > bbox_occluded_thr
    large = after_areas > mask_occluded_thr
    return active.bool() & (after_areas > 0) & (~moved | large)


def smooth_alpha(alpha: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Gaussian-smoothed float32 alpha [B, H, W] (reflect padding, normalised kernel), in [0, 1]."""
    return gaussian_smooth(alpha.to(torch.float32), kernel_size, sigma).clamp_(0.0, 1.0)
