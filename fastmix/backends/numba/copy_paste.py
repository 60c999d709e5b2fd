"""Copy-Paste steps on CPU torch tensors with the numba kernels (same results as the PyTorch
oracle in fastmix/backends/pytorch/copy_paste.py, which defines them).

The oracle's box step converts every mask pixel of every slot to int32 to sum it; here each
mask is one pass of byte compares (masks stay bool), and the occlusion step is one fused pass.

The operator prefers two fused steps where they apply: `lsj_paste_images` (resample, blend and
cast of the output images in one pass: uint8 stays uint8, no float32 view batch) and
`paste_instance_masks` (alpha, boxes, keep rule and output masks without the jittered and
occluded mask batches, whose fresh pages cost more than the work). The single steps remain for
the ops layer and as the tested building blocks.
"""
from __future__ import annotations

import weakref

import numpy as np
import torch

from . import _kernels
from ._runtime import kernel_call

# Boxes and areas that a kernel computed in the same pass as a mask tensor it returned, keyed by
# the tensor's id and valid while that very tensor lives unmodified (weakref + version counter):
# the operator asks for the boxes of the jittered and of the occluded masks right after making
# them, and this saves it a second pass over every mask pixel.
_BOXES: dict[int, tuple] = {}


def _remember(masks: torch.Tensor, boxes: torch.Tensor, areas: torch.Tensor) -> None:
    key = id(masks)
    _BOXES[key] = (weakref.ref(masks, lambda _: _BOXES.pop(key, None)), masks._version, boxes, areas)


def _recall(masks: torch.Tensor):
    entry = _BOXES.get(id(masks))
    if entry is None or entry[0]() is not masks or entry[1] != masks._version:
        return None
    return entry[2], entry[3]


def _zero_bool(*shape) -> torch.Tensor:
    """A zero bool tensor from calloc'd memory (NumPy's zeros): large ones are fresh pages the
    OS supplies zeroed, so the kernels write only the nonzero rows of a mostly empty mask batch
    instead of every byte (torch.zeros would write every byte first)."""
    return torch.from_numpy(np.zeros(shape, dtype=np.bool_))


def _as_bytes(masks: torch.Tensor) -> torch.Tensor:
    """bool (or uint8, nonzero = object) -> a contiguous uint8 tensor of 0/1 sharing memory
    when the input is a contiguous bool tensor."""
    if masks.dtype == torch.bool:
        return masks.contiguous().view(torch.uint8)
    return (masks != 0).view(torch.uint8)


def instance_boxes_areas(masks: torch.Tensor):
    """Boxes float32 [..., 4] (x1, y1, x2, y2; x2/y2 exclusive) and areas int64 [...] of masks
    [..., H, W] (bool or uint8); empty masks give (0, 0, 0, 0) and 0."""
    known = _recall(masks)
    if known is not None:
        return known[0].clone(), known[1].clone()
    lead, (height, width) = masks.shape[:-2], masks.shape[-2:]
    boxes = torch.empty(lead + (4,), dtype=torch.float32)
    areas = torch.empty(lead, dtype=torch.int64)
    if masks.numel() == 0:
        return boxes.zero_(), areas.zero_()
    flat = _as_bytes(masks).view(-1, height, width)
    with kernel_call():
        _kernels.mask_boxes_areas(flat.numpy(), boxes.view(-1, 4).numpy(), areas.view(-1).numpy())
    return boxes, areas


def _row_ranges(masks: torch.Tensor) -> torch.Tensor:
    """int64 [B, N, 2]: rows [y1, y2) that may hold pixels of each mask [B, N, H, W]. When the
    masks are a slice of a mask batch whose boxes a kernel kept (the jittered masks: receiving
    and pasted halves), those boxes bound them; otherwise every row."""
    batch, slots, height, _ = masks.shape
    base = masks._base
    known = _recall(base) if base is not None and base.dim() == 4 and base.shape[1:] == masks.shape[1:] else None
    if known is not None and masks.is_contiguous() and base.is_contiguous():
        per_view = slots * masks.shape[2] * masks.shape[3]
        first, remainder = divmod(masks.storage_offset() - base.storage_offset(), per_view)
        if remainder == 0 and 0 <= first and first + batch <= base.shape[0]:
            boxes, areas = known[0][first:first + batch], known[1][first:first + batch]
            rows = boxes[..., 1::2].long()  # (y1, y2)
            return torch.where((areas > 0)[..., None], rows, 0).contiguous()
    rows = torch.zeros(batch, slots, 2, dtype=torch.int64)
    rows[..., 1] = height
    return rows


def occlusion_update(receiving_masks: torch.Tensor, pasted_masks: torch.Tensor):
    """(alpha bool [B, H, W] = union of the pasted masks, receiving masks minus alpha [B, N, H, W]).
    The boxes and areas of the second come out of the same pass (see `instance_boxes_areas`);
    only the rows of each mask's known box are read."""
    batch, slots, height, width = receiving_masks.shape
    alpha = torch.empty(batch, height, width, dtype=torch.bool)
    updated = _zero_bool(batch, slots, height, width)
    boxes = torch.empty(batch, slots, 4, dtype=torch.float32)
    areas = torch.empty(batch, slots, dtype=torch.int64)
    if alpha.numel():
        with kernel_call():
            _kernels.occlusion_boxes(_as_bytes(receiving_masks).numpy(), _as_bytes(pasted_masks).numpy(),
                                     _row_ranges(receiving_masks).numpy(), _row_ranges(pasted_masks).numpy(),
                                     alpha.view(torch.uint8).numpy(), updated.view(torch.uint8).numpy(),
                                     boxes.view(-1, 4).numpy(), areas.view(-1).numpy())
    else:
        boxes.zero_()
        areas.zero_()
    _remember(updated, boxes, areas)
    return alpha, updated


def copy_paste_blend(receiving: torch.Tensor, pasted: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """receiving * (1 - alpha) + pasted * alpha in float32, alpha [B, H, W] broadcast over C."""
    from ..pytorch import copy_paste as oracle

    if receiving.dtype != torch.float32 or pasted.dtype != torch.float32 or receiving.shape != pasted.shape:
        return oracle.copy_paste_blend(receiving, pasted, alpha)
    batch, channels, height, width = receiving.shape
    out = torch.empty(batch, channels, height, width, dtype=torch.float32)
    if out.numel():
        with kernel_call():
            _kernels.alpha_blend(receiving.contiguous().view(batch, channels, -1).numpy(),
                                 pasted.contiguous().view(batch, channels, -1).numpy(),
                                 alpha.to(torch.float32).contiguous().view(batch, -1).numpy(),
                                 out.view(batch, channels, -1).numpy())
    return out


IMAGE_DTYPES = (torch.uint8, torch.float32)


def lsj_resample_images(images: torch.Tensor, views: torch.Tensor, out_height: int, out_width: int) -> torch.Tensor:
    """Bilinear LSJ of every view: float32 [V, C, out_height, out_width], as the oracle computes it
    (uint8 / float32 images; other dtypes go to the oracle)."""
    from ..pytorch import copy_paste as oracle

    if images.dtype not in IMAGE_DTYPES:
        return oracle.lsj_resample_images(images, views, out_height, out_width)
    rows0, rows1, wy, inside_y = oracle._bilinear_taps(views, out_height, "y")
    cols0, cols1, wx, inside_x = oracle._bilinear_taps(views, out_width, "x")
    out = torch.empty((views.shape[0], images.shape[1], out_height, out_width), dtype=torch.float32)
    start = cols0[:, :1]
    plain = ((cols0 == start + torch.arange(out_width)).all(dim=1) & (wx == 0).all(dim=1) & inside_x.all(dim=1)
             & (start[:, 0] + out_width <= images.shape[-1]) & (images.dtype == torch.uint8))
    copy_cols = torch.where(plain, start[:, 0], -1).long().contiguous()
    if out.numel():
        with kernel_call():
            _kernels.lsj_bilinear(images.contiguous().numpy(), views[:, oracle.VIEW_SOURCE].long().numpy(),
                                  rows0.numpy(), rows1.numpy(), wy.contiguous().numpy(),
                                  inside_y.view(torch.uint8).numpy(), cols0.numpy(), cols1.numpy(),
                                  wx.contiguous().numpy(), inside_x.view(torch.uint8).numpy(), copy_cols.numpy(),
                                  out.numpy())
    return out


def lsj_resample_masks(masks: torch.Tensor, views: torch.Tensor, active: torch.Tensor,
                       out_height: int, out_width: int) -> torch.Tensor:
    """Nearest-neighbour LSJ of instance masks: bool [V, N, out_height, out_width]; rows whose
    `active` [V, N] is False come out empty (padding slots, unselected objects are never read)."""
    from ..pytorch import copy_paste as oracle

    rows, inside_y = oracle._nearest_taps(views, out_height, "y")
    cols, inside_x = oracle._nearest_taps(views, out_width, "x")
    out = _zero_bool(views.shape[0], masks.shape[1], out_height, out_width)
    start = cols[:, :1]
    plain = ((cols == start + torch.arange(out_width)).all(dim=1) & inside_x.all(dim=1)
             & (start[:, 0] + out_width <= masks.shape[-1]))
    shifted = torch.where(plain, start[:, 0], -1).long().contiguous()
    boxes = torch.zeros(out.shape[:2] + (4,), dtype=torch.float32)
    areas = torch.zeros(out.shape[:2], dtype=torch.int64)
    if out.numel():
        with kernel_call():
            _kernels.lsj_nearest_masks(_as_bytes(masks).numpy(), views[:, oracle.VIEW_SOURCE].long().numpy(),
                                       active.bool().contiguous().view(torch.uint8).numpy(), rows.contiguous().numpy(),
                                       inside_y.contiguous().view(torch.uint8).numpy(), cols.contiguous().numpy(),
                                       inside_x.contiguous().view(torch.uint8).numpy(), shifted.numpy(),
                                       out.view(torch.uint8).numpy(),
                                       boxes.view(-1, 4).numpy(), areas.view(-1).numpy())
    _remember(out, boxes, areas)
    return out


def lsj_paste_images(images: torch.Tensor, views: torch.Tensor, alpha: torch.Tensor, out_height: int,
                     out_width: int):
    """The output images of the paste in one pass, or None for dtypes other than uint8 / float32:
    the oracle's ``to_dtype(copy_paste_blend(V[:B], V[B:], alpha))`` with V the float32
    ``lsj_resample_images(images, views, ...)`` of the 2B views (receiving views first), bit for
    bit, without V or the float blend (uint8 images stay uint8 end to end). The input's memory
    format is kept."""
    from ..pytorch import copy_paste as oracle

    if images.dtype not in IMAGE_DTYPES:
        return None
    batch = views.shape[0] // 2
    rows0, rows1, wy, inside_y = oracle._bilinear_taps(views, out_height, "y")
    cols0, cols1, wx, inside_x = oracle._bilinear_taps(views, out_width, "x")
    start = cols0[:, :1]
    plain = ((cols0 == start + torch.arange(out_width)).all(dim=1) & (wx == 0).all(dim=1) & inside_x.all(dim=1)
             & (start[:, 0] + out_width <= images.shape[-1]) & (images.dtype == torch.uint8))
    copy_cols = torch.where(plain, start[:, 0], -1).long().contiguous()
    out = torch.empty((batch, images.shape[1], out_height, out_width), dtype=images.dtype)
    if out.numel():
        with kernel_call():
            _kernels.lsj_paste_blend(images.contiguous().numpy(), views[:, oracle.VIEW_SOURCE].long().numpy(),
                                     rows0.numpy(), rows1.numpy(), wy.contiguous().numpy(),
                                     inside_y.view(torch.uint8).numpy(), cols0.numpy(), cols1.numpy(),
                                     wx.contiguous().numpy(), inside_x.view(torch.uint8).numpy(), copy_cols.numpy(),
                                     alpha.to(torch.float32).contiguous().numpy(),
                                     images.dtype == torch.uint8, out.numpy())
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def paste_instance_masks(masks: torch.Tensor, views: torch.Tensor, active: torch.Tensor, out_height: int,
                         out_width: int, bbox_occluded_thr: float, mask_occluded_thr: float, dtype):
    """The mask side of the paste without the oracle's intermediate mask batches, or None for an
    output mask dtype other than bool / uint8. Views 0..B-1 are the receiving views, B..2B-1 the
    pasted ones (see the operator). Returns (alpha bool [B, OH, OW], kept, pasted (bool [B, N]),
    per image the output masks (kept receiving masks minus alpha, then the pasted masks, in
    `dtype`), after-paste receiving boxes [B, N, 4], pasted boxes [B, N, 4]), equal to the
    oracle's lsj_resample_masks / occlusion_update / instance_boxes_areas / receiving_keep and
    the gather.

    The jittered masks of the oracle ([2B, N, OH, OW]) and the occluded receiving masks
    ([B, N, OH, OW]) are never stored: fresh pages of those batches cost more than the work. A
    first pass makes alpha and every box (a mask row at a time), the keep rule runs on the boxes,
    and a second pass writes only the output masks, only the rows of their boxes. The per-image
    masks are consecutive views of one buffer (like ``torch.split``)."""
    from ..pytorch import copy_paste as oracle

    if dtype not in (torch.bool, torch.uint8):
        return None
    batch, slots = views.shape[0] // 2, masks.shape[1]
    rows, inside_y = oracle._nearest_taps(views, out_height, "y")
    cols, inside_x = oracle._nearest_taps(views, out_width, "x")
    start = cols[:, :1]
    plain = ((cols == start + torch.arange(out_width)).all(dim=1) & inside_x.all(dim=1)
             & (start[:, 0] + out_width <= masks.shape[-1]))
    shifted = torch.where(plain, start[:, 0], -1).long().contiguous().numpy()
    taps = (rows.contiguous().numpy(), inside_y.contiguous().view(torch.uint8).numpy(), cols.contiguous().numpy(),
            inside_x.contiguous().view(torch.uint8).numpy(), shifted)
    source = views[:, oracle.VIEW_SOURCE].long().numpy()
    active_bytes = active.bool().contiguous().view(torch.uint8).numpy()
    mask_bytes = _as_bytes(masks).numpy()
    alpha = torch.empty(batch, out_height, out_width, dtype=torch.bool)
    pasted_boxes = torch.zeros(batch, slots, 4, dtype=torch.float32)
    pasted_areas = torch.zeros(batch, slots, dtype=torch.int64)
    before_boxes, after_boxes = torch.zeros_like(pasted_boxes), torch.zeros_like(pasted_boxes)
    before_areas, after_areas = torch.zeros_like(pasted_areas), torch.zeros_like(pasted_areas)
    if alpha.numel() and slots:
        with kernel_call():
            _kernels.lsj_mask_union(mask_bytes, source, active_bytes, *taps, batch, alpha.view(torch.uint8).numpy(),
                                    pasted_boxes.view(-1, 4).numpy(), pasted_areas.view(-1).numpy())
            _kernels.lsj_occluded_boxes(mask_bytes, source, active_bytes, *taps, alpha.view(torch.uint8).numpy(),
                                        before_boxes.view(-1, 4).numpy(), before_areas.view(-1).numpy(),
                                        after_boxes.view(-1, 4).numpy(), after_areas.view(-1).numpy())
    else:
        alpha.zero_()
    kept = oracle.receiving_keep(before_boxes, after_boxes, after_areas, active[:batch], bbox_occluded_thr,
                                 mask_occluded_thr)
    pasted = active[batch:].bool() & (pasted_areas > 0)
    # Output k: per image its kept receiving masks, then its pasted ones.
    image = torch.arange(batch)[:, None].expand(batch, slots)
    slot = torch.arange(slots)[None, :].expand(batch, slots)
    order = torch.cat([kept, pasted], dim=1)
    out_views = torch.cat([image, image + batch], dim=1)[order]
    out_slots = torch.cat([slot, slot], dim=1)[order]
    bounds = torch.cat([after_boxes, pasted_boxes], dim=1)[order].contiguous()
    occluded = torch.cat([torch.ones_like(kept), torch.zeros_like(pasted)], dim=1)[order]
    out = _zero_bool(int(order.sum()), out_height, out_width)
    if out.numel():
        with kernel_call():
            _kernels.lsj_masks_write(mask_bytes, source, *taps, alpha.view(torch.uint8).numpy(),
                                     out_views.contiguous().numpy(), out_slots.contiguous().numpy(), bounds.numpy(),
                                     occluded.contiguous().view(torch.uint8).numpy(), out.view(torch.uint8).numpy())
    masks_list = list(out.view(dtype).split(order.sum(dim=1).tolist()))
    return alpha, kept, pasted, masks_list, after_boxes, pasted_boxes


def kernels():
    """The Copy-Paste steps for CPU tensors: numba where it has a kernel, else the oracle."""
    from types import SimpleNamespace

    return SimpleNamespace(lsj_resample_images=lsj_resample_images, lsj_resample_masks=lsj_resample_masks,
                           occlusion_update=occlusion_update, copy_paste_blend=copy_paste_blend,
                           instance_boxes_areas=instance_boxes_areas, lsj_paste_images=lsj_paste_images,
                           paste_instance_masks=paste_instance_masks)
