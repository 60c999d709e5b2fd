"""Copy-Paste on the CPU as compiled kernels in DALI's ``numba_function`` (no GIL, no python lock).

Every random choice is a DALI draw: the pairing (``fn.batch_permutation``, given by the caller),
per pair 9 uniform float64 numbers (``fn.random.uniform``: the receiving view's flip, scale and
two offsets, the pasted view's four, the number of pasted objects) and one uniform number per
object of the partner image (``fn.random.uniform`` shaped by the partner's object count), of
which Floyd's algorithm takes the pasted subset. They become fastmix's
:class:`~fastmix.copy_paste.CopyPasteParams` by the formulas of
``fastmix.copy_paste.params.draw_copy_paste_params`` (flip = u < flip_prob, scale =
lo + (hi - lo) u, offset = floor(max_offset * u), count uniform in 0..min(n, max_num_pasted) or
min(int(n * paste_fraction), max_num_pasted)); the operator outputs them (``jitter``,
``selected``), and ``fastmix.copy_paste(batch, params=...)`` with them gives the same images,
masks, boxes and labels bit for bit (tested).

The kernel pads the batch as :class:`~fastmix.copy_paste.InstanceBatch` does, computes the LSJ
geometry and the tap tables in the float32 / float64 operations of the PyTorch path, and runs
fastmix's numba Copy-Paste kernels (compiled serial, :mod:`fastmix.dali.numba_copy_paste_kernels`).

The number of objects an image keeps is known only after the occlusion test, and
numba_function's setup sees only input shapes: the kernel writes upper-bound outputs
([N_i + N_perm[i], OH, OW] masks, [.., 4] boxes, [..] labels, the kept objects first) and the
count, and ``fn.slice`` cuts each sample to its count (its start/shape argument inputs are per
sample in DALI 2.4, 0 included).

What the compiled kernel cannot refuse (samples with different channel counts, masks whose size
is not their image's, label and mask counts that differ) fails a guard ``fn.reshape`` whose
traceback names the fastmix call.
"""
from __future__ import annotations

import functools

import numpy as np

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.data_node import DataNode
from nvidia.dali.pipeline import do_not_convert

DRAWS = 9  # receiving (flip, scale, offset y, offset x), pasted (the same), count (+ the guard's 0)
PARAMS = 9  # scale r, scale p, offset r (y, x), offset p (y, x), flip r, flip p, objects kept + pasted


@functools.lru_cache(maxsize=None)
@do_not_convert  # DALI's AutoGraph must not rewrite the functions numba compiles
def _functions(chw: bool, out_h: int, out_w: int, low: float, high: float, flip_prob: float, max_num_pasted: int,
               paste_fraction: float, bbox_thr: float, mask_thr: float, uint8: bool):
    from .numba_copy_paste_kernels import (bilinear_taps, jitter, mask_union, masks_write, nearest_taps,
                                           occluded_boxes, paste_blend, subset)

    fraction = -1.0 if paste_fraction is None else float(paste_fraction)
    bbox_limit = np.float32(bbox_thr)
    mask_limit = np.float32(mask_thr)

    def run(out_images, out_masks, out_boxes, out_labels, out_params, out_selected, images, masks, labels, perm,
            draws, subset_draws):
        batch = len(out_images)
        first = images[0]
        channels = first.shape[0] if chw else first.shape[2]
        heights = np.empty(batch, np.int64)
        widths = np.empty(batch, np.int64)
        slots = 0
        for b in range(batch):
            heights[b] = images[b].shape[1] if chw else images[b].shape[0]
            widths[b] = images[b].shape[2] if chw else images[b].shape[1]
            slots = max(slots, labels[b].shape[0])
        # InstanceBatch's padded batch: NCHW images, 0/1 masks [B, Nmax, Hmax, Wmax]
        padded = np.zeros((batch, channels, heights.max(), widths.max()), first.dtype)
        mask_bytes = np.zeros((batch, slots, heights.max(), widths.max()), np.uint8)
        for b in range(batch):
            for c in range(channels):
                for y in range(heights[b]):
                    for x in range(widths[b]):
                        padded[b, c, y, x] = images[b][c, y, x] if chw else images[b][y, x, c]
            for n in range(masks[b].shape[0]):
                for y in range(heights[b]):
                    for x in range(widths[b]):
                        mask_bytes[b, n, y, x] = 1 if masks[b][n, y, x] != 0 else 0
        views = 2 * batch
        sources = np.empty(views, np.int64)
        rows0 = np.empty((views, out_h), np.int64)
        rows1 = np.empty((views, out_h), np.int64)
        wy = np.empty((views, out_h), np.float32)
        inside_y = np.empty((views, out_h), np.uint8)
        cols0 = np.empty((views, out_w), np.int64)
        cols1 = np.empty((views, out_w), np.int64)
        wx = np.empty((views, out_w), np.float32)
        inside_x = np.empty((views, out_w), np.uint8)
        near_rows = np.empty((views, out_h), np.int64)
        near_cols = np.empty((views, out_w), np.int64)
        active = np.zeros((views, slots), np.uint8)
        for i in range(batch):
            partner = perm[i][0]
            for half in range(2):
                v = i + half * batch
                s = i if half == 0 else partner
                sources[v] = s
                flip, scale, scaled_h, scaled_w, offset_y, offset_x = jitter(
                    draws[i][4 * half:4 * half + 4], heights[s], widths[s], out_h, out_w, low, high, flip_prob)
                bilinear_taps(offset_y, scaled_h, heights[s], False, rows0[v], rows1[v], wy[v], inside_y[v])
                bilinear_taps(offset_x, scaled_w, widths[s], flip, cols0[v], cols1[v], wx[v], inside_x[v])
                nearest_taps(offset_y, scaled_h, heights[s], False, near_rows[v], inside_y[v])
                nearest_taps(offset_x, scaled_w, widths[s], flip, near_cols[v], inside_x[v])
                out_params[i][half] = scale
                out_params[i][2 + 2 * half] = offset_y
                out_params[i][3 + 2 * half] = offset_x
                out_params[i][6 + half] = 1.0 if flip else 0.0
            for n in range(labels[i].shape[0]):
                active[i, n] = 1
            selected = out_selected[i]
            selected[:] = 0
            available = labels[partner].shape[0]
            if partner != i:  # a self-pair pastes nothing
                cap = min(available, max_num_pasted)
                if fraction < 0:
                    count = min(np.int64(np.floor(draws[i][8] * np.float64(cap + 1))), cap)
                else:
                    count = min(np.int64(available * fraction), max_num_pasted)
                subset(subset_draws[i], available, count, selected)
            for n in range(available):
                active[batch + i, n] = selected[n]
        shifted = np.full(views, -1, np.int64)
        alpha = np.zeros((batch, out_h, out_w), np.uint8)
        pasted_boxes = np.zeros((batch * slots, 4), np.float32)
        pasted_areas = np.zeros(batch * slots, np.int64)
        before_boxes = np.zeros((batch * slots, 4), np.float32)
        before_areas = np.zeros(batch * slots, np.int64)
        after_boxes = np.zeros((batch * slots, 4), np.float32)
        after_areas = np.zeros(batch * slots, np.int64)
        if slots > 0:
            mask_union(mask_bytes, sources, active, near_rows, inside_y, near_cols, inside_x, shifted, batch, alpha,
                       pasted_boxes, pasted_areas)
            occluded_boxes(mask_bytes, sources, active, near_rows, inside_y, near_cols, inside_x, shifted, alpha,
                           before_boxes, before_areas, after_boxes, after_areas)
        for i in range(batch):
            partner = perm[i][0]
            capacity = out_labels[i].shape[0]
            out_view = np.zeros(capacity, np.int64)
            out_slot = np.zeros(capacity, np.int64)
            bounds = np.zeros((capacity, 4), np.float32)
            occluded = np.zeros(capacity, np.uint8)
            k = 0
            for n in range(labels[i].shape[0]):  # receiving objects: mmdetection's keep rule
                m = i * slots + n
                moved = False
                for c in range(4):
                    if abs(after_boxes[m, c] - before_boxes[m, c]) > bbox_limit:
                        moved = True
                if after_areas[m] > 0 and (not moved or np.float32(after_areas[m]) > mask_limit):
                    out_view[k] = i
                    out_slot[k] = n
                    occluded[k] = 1
                    bounds[k] = after_boxes[m]
                    out_labels[i][k] = labels[i][n]
                    k += 1
            for n in range(labels[partner].shape[0]):  # pasted objects the crop left
                m = i * slots + n
                if active[batch + i, n] and pasted_areas[m] > 0:
                    out_view[k] = batch + i
                    out_slot[k] = n
                    bounds[k] = pasted_boxes[m]
                    out_labels[i][k] = labels[partner][n]
                    k += 1
            out_params[i][8] = k
            out_boxes[i][:, :] = 0
            out_boxes[i][:k] = bounds[:k]
            out_labels[i][k:] = 0
            out_masks[i][:, :, :] = 0
            if k > 0:
                masks_write(mask_bytes, sources, near_rows, inside_y, near_cols, inside_x, shifted, alpha,
                            out_view[:k], out_slot[:k], bounds[:k], occluded[:k], out_masks[i][:k])
        mixed = np.empty((batch, channels, out_h, out_w), first.dtype)
        copy_cols = np.full(views, -1, np.int64)  # the general taps: the same values as the plain copy
        paste_blend(padded, sources, rows0, rows1, wy, inside_y, cols0, cols1, wx, inside_x, copy_cols,
                    alpha.astype(np.float32), uint8, mixed)
        for b in range(batch):
            for c in range(channels):
                for y in range(out_h):
                    for x in range(out_w):
                        if chw:
                            out_images[b][c, y, x] = mixed[b, c, y, x]
                        else:
                            out_images[b][y, x, c] = mixed[b, c, y, x]

    def setup(outs, ins):
        for b in range(len(outs[0])):
            channels = ins[0][b][0] if chw else ins[0][b][2]
            if chw:
                outs[0][b][0] = channels
                outs[0][b][1] = out_h
                outs[0][b][2] = out_w
            else:
                outs[0][b][0] = out_h
                outs[0][b][1] = out_w
                outs[0][b][2] = channels
            capacity = ins[2][b][0] + ins[5][b][0]  # own objects + the partner's
            outs[1][b][0] = capacity
            outs[1][b][1] = out_h
            outs[1][b][2] = out_w
            outs[2][b][0] = capacity
            outs[2][b][1] = 4
            outs[3][b][0] = capacity
            outs[4][b][0] = PARAMS
            outs[5][b][0] = ins[5][b][0]

    return run, setup


def _guard(images: DataNode, masks: DataNode, labels: DataNode, layout: str) -> DataNode:
    """A one-element tensor reshaped to [1 + n], n the broken preconditions (see the module)."""
    from .native import first_sample

    shape = images.shape(dtype=types.INT64, device="cpu")
    channels = shape[0] if layout == "CHW" else shape[2]
    height, width = (shape[1], shape[2]) if layout == "CHW" else (shape[0], shape[1])
    mask_shape = masks.shape(dtype=types.INT64, device="cpu")
    count = labels.shape(dtype=types.INT64, device="cpu")[0]
    bad = (fn.cast(channels != first_sample(channels), dtype=types.INT64)
           + fn.cast(mask_shape[1] != height, dtype=types.INT64) + fn.cast(mask_shape[2] != width, dtype=types.INT64)
           + fn.cast(mask_shape[0] != count, dtype=types.INT64))
    size = fn.cast(fn.stack(1 + bad), dtype=types.INT32)
    return fn.reshape(fn.zeros(shape=[1], dtype=types.UINT8), shape=size)


def _first(node: DataNode, count: DataNode) -> DataNode:
    """Each sample's first `count` rows."""
    return fn.slice(node, start=fn.cast(fn.stack(count * 0), dtype=types.INT32),
                    shape=fn.cast(fn.stack(count), dtype=types.INT32), axes=[0])


def copy_paste(images: DataNode, masks: DataNode, labels: DataNode, perm: DataNode, *, layout: str, dtype,
               output_size: tuple[int, int], scale_range, flip_prob: float, max_num_pasted: int,
               paste_fraction: float | None, bbox_occluded_thr: float, mask_occluded_thr: float) -> dict:
    """images (uint8 / float32, HWC or CHW), masks [N, H, W], labels [N] per image and the pairing
    -> dict of images, masks, boxes, labels, jitter (float64 [8]: scale receiving / pasted,
    offsets (y, x) receiving / pasted, flips receiving / pasted) and selected (uint8 [N_perm])."""
    from nvidia.dali.plugin.numba.fn import numba_function

    draws = fn.random.uniform(range=[0.0, 1.0], shape=[DRAWS], dtype=types.FLOAT64)
    flat_labels = fn.cast(fn.reshape(labels, shape=[-1]), dtype=types.INT64)
    partner_count = fn.permute_batch(flat_labels.shape(dtype=types.INT64, device="cpu"), indices=perm)
    subset_draws = fn.random.uniform(range=[0.0, 1.0], shape=fn.cast(partner_count, dtype=types.INT32),
                                     dtype=types.FLOAT64)
    run, setup = _functions(layout == "CHW", int(output_size[0]), int(output_size[1]), float(scale_range[0]),
                            float(scale_range[1]), float(flip_prob), int(max_num_pasted), paste_fraction,
                            float(bbox_occluded_thr), float(mask_occluded_thr), dtype == types.UINT8)
    index = fn.reshape(fn.cast(perm, dtype=types.INT64), shape=[1])
    mask_bytes = fn.cast(masks, dtype=types.UINT8)
    # numba_function takes at most six inputs: the guard's one zero rides at the end of the draws
    guard = fn.cast(_guard(images, mask_bytes, flat_labels, layout), dtype=types.FLOAT64)
    draws_in = fn.cat(draws, guard, axis=0)
    out = numba_function(images, mask_bytes, flat_labels, index, draws_in, subset_draws, run_fn=run,
                         setup_fn=setup, batch_processing=True,
                         in_types=[dtype, types.UINT8, types.INT64, types.INT64, types.FLOAT64, types.FLOAT64],
                         ins_ndim=[3, 3, 1, 1, 1, 1],
                         out_types=[dtype, types.UINT8, types.FLOAT, types.INT64, types.FLOAT64, types.UINT8],
                         outs_ndim=[3, 3, 2, 1, 1, 1])
    out_images, out_masks, out_boxes, out_labels, params, selected = out
    count = fn.cast(params[8], dtype=types.INT64)
    return {"images": out_images, "masks": _first(out_masks, count), "boxes": _first(out_boxes, count),
            "labels": _first(out_labels, count), "jitter": params[0:8], "selected": selected}
