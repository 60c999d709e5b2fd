"""Simple Copy-Paste written the way the reference libraries do it: NumPy, one image at a time.

Mirrors the per-sample structure of mmdetection's ``CopyPaste`` transform
(``mmdet/datasets/transforms/transforms.py``, 3.x; ``shared/spec/algorithms.md`` section 7.2),
which runs inside one data-loader worker per image: a per-mask loop to jitter the masks (like
``BitmapMasks.rescale/crop/pad``, one call per mask), ``alpha = any(selected masks)``, receiving
masks ``where(alpha, 0, mask)``, boxes from the masks with a per-mask loop
(``BitmapMasks.get_bboxes``), the per-object ``valid = all(|box - old| <= thr) | area > thr``
rule, and ``img = dst * (1 - alpha) + src * alpha`` in NumPy. The large-scale jittering in
front of it follows the TensorFlow reference (``resize_and_crop_image`` / ``_masks``).

Clean-room, no code copied. It implements exactly fastmix's documented rules (the
pixel-centre bilinear/nearest taps in float32, the "nothing left" drop, the mmdetection
per-object thresholds), so fastmix's output can be checked against it; randomness is injected
from a ``fastmix.copy_paste.CopyPasteParams``.

It is a semantics checker, not a speed peer (issue 13 found it about 4x slower than
mmdetection 3.3.0's real CopyPaste): speed claims compare with the real mmdetection, run side by
side on the same batch and pairing in ``benchmarks/bench_copy_paste_mmdet.py``.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32


def lsj_scaled_size(scale: float, image_size: tuple[int, int], output_size: tuple[int, int]) -> tuple[int, int]:
    """TensorFlow's ``resize_and_crop_image`` size: target round(s * out), aspect kept."""
    target = [round(scale * o) for o in output_size]  # Python round: half to even, like tf.round
    ratio = min(target[0] / image_size[0], target[1] / image_size[1])
    return max(1, round(image_size[0] * ratio)), max(1, round(image_size[1] * ratio))


def _bilinear_axis(out_len: int, offset: int, scaled: int, in_len: int):
    pos = (np.arange(out_len) + offset).astype(F32)
    ratio = F32(in_len) / F32(scaled)
    src = np.maximum((pos + F32(0.5)) * ratio - F32(0.5), F32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    return i0, i1, (src - i0.astype(F32)).astype(F32), pos < scaled


def _nearest_axis(out_len: int, offset: int, scaled: int, in_len: int):
    pos = (np.arange(out_len) + offset).astype(F32)
    ratio = F32(in_len) / F32(scaled)
    return np.minimum(np.floor((pos + F32(0.5)) * ratio).astype(np.int64), in_len - 1), pos < scaled


def jitter_image(image: np.ndarray, scaled, offset, flip: bool, output_size) -> np.ndarray:
    """HWC image -> float32 HWC: flip, bilinear resize to ``scaled``, window/zero pad at ``offset``."""
    if flip:
        image = image[:, ::-1]
    r0, r1, wy, in_y = _bilinear_axis(output_size[0], offset[0], scaled[0], image.shape[0])
    c0, c1, wx, in_x = _bilinear_axis(output_size[1], offset[1], scaled[1], image.shape[1])
    img = image.astype(F32)
    wx_, wy_ = wx[None, :, None], wy[:, None, None]
    top = (F32(1) - wx_) * img[r0][:, c0] + wx_ * img[r0][:, c1]
    bottom = (F32(1) - wx_) * img[r1][:, c0] + wx_ * img[r1][:, c1]
    out = (F32(1) - wy_) * top + wy_ * bottom
    out[~(in_y[:, None] & in_x[None, :])] = 0
    return out


def jitter_mask(mask: np.ndarray, scaled, offset, flip: bool, output_size) -> np.ndarray:
    """One [h, w] bool mask -> [H, W] bool, pixel-centre nearest neighbour."""
    if flip:
        mask = mask[:, ::-1]
    rows, in_y = _nearest_axis(output_size[0], offset[0], scaled[0], mask.shape[0])
    cols, in_x = _nearest_axis(output_size[1], offset[1], scaled[1], mask.shape[1])
    return mask[rows][:, cols] & in_y[:, None] & in_x[None, :]


def mask_box(mask: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) float32 with exclusive x2/y2; zeros for an empty mask."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return np.zeros(4, dtype=F32)
    y = np.where(rows)[0]
    x = np.where(cols)[0]
    return np.array([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=F32)


def gaussian_alpha(alpha: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """Reflect-padded kernel_size x kernel_size Gaussian of a [H, W] alpha, clipped to [0, 1]."""
    half = (kernel_size - 1) * 0.5
    x = np.linspace(-half, half, kernel_size, dtype=F32)
    k1 = np.exp(F32(-0.5) * (x / F32(sigma)) ** 2)
    k1 = k1 / k1.sum()
    pad = kernel_size // 2
    padded = np.pad(alpha.astype(F32), pad, mode="reflect")
    out = np.zeros(alpha.shape, dtype=F32)
    for dy in range(kernel_size):
        for dx in range(kernel_size):
            out += k1[dy] * k1[dx] * padded[dy:dy + alpha.shape[0], dx:dx + alpha.shape[1]]
    return np.clip(out, 0, 1)


def copy_paste_one(receiving: dict, source: dict, receiving_jitter: dict, source_jitter: dict,
                   selected: np.ndarray, output_size, *, bbox_occluded_thr=10, mask_occluded_thr=300,
                   blend="hard", blend_sigma=2.0, blend_kernel_size=5) -> dict:
    """Paste ``source``'s objects ``selected`` into ``receiving`` (dicts of image HWC, masks
    [N, h, w] bool, labels [N]); jitters are dicts of scaled, offset, flip."""
    def jittered(sample, jitter, keep):
        image = jitter_image(sample["image"], jitter["scaled"], jitter["offset"], jitter["flip"], output_size)
        masks = [jitter_mask(sample["masks"][n], jitter["scaled"], jitter["offset"], jitter["flip"], output_size)
                 for n in keep]
        return image, masks

    dst_image, dst_masks = jittered(receiving, receiving_jitter, range(len(receiving["masks"])))
    src_image, src_masks = jittered(source, source_jitter, selected)
    alpha = np.zeros(output_size, dtype=bool)
    for m in src_masks:
        alpha |= m
    masks, boxes, labels = [], [], []
    for n, mask in enumerate(dst_masks):
        updated = np.where(alpha, False, mask)
        old_box, new_box = mask_box(mask), mask_box(updated)
        area = int(updated.sum())
        bbox_ok = np.all(np.abs(new_box - old_box) <= bbox_occluded_thr)
        if area > 0 and (bbox_ok or area > mask_occluded_thr):
            masks.append(updated)
            boxes.append(new_box)
            labels.append(receiving["labels"][n])
    for n, mask in zip(selected, src_masks):
        if mask.any():
            masks.append(mask)
            boxes.append(mask_box(mask))
            labels.append(source["labels"][n])
    weight = alpha.astype(F32) if blend == "hard" else gaussian_alpha(alpha, blend_kernel_size, blend_sigma)
    weight = weight[:, :, None]
    image = dst_image * (F32(1) - weight) + src_image * weight
    if np.issubdtype(receiving["image"].dtype, np.integer):
        info = np.iinfo(receiving["image"].dtype)
        image = np.clip(np.rint(image), info.min, info.max).astype(receiving["image"].dtype)
    height, width = output_size
    return {
        "image": image,
        "masks": np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool),
        "boxes": np.stack(boxes) if boxes else np.zeros((0, 4), dtype=F32),
        "labels": np.array(labels, dtype=np.int64),
    }


def reference_copy_paste(samples: list[dict], params, output_size, **options) -> list[dict]:
    """Per-image loop over the batch; ``params`` is a fastmix ``CopyPasteParams``."""
    def jitter_of(jitter, i, image_shape):
        scaled = lsj_scaled_size(float(jitter.scale[i]), image_shape, output_size)
        return {"scaled": scaled, "offset": tuple(int(v) for v in jitter.offset[i]), "flip": bool(jitter.flip[i])}

    out = []
    for i, receiving in enumerate(samples):
        j = int(params.perm[i])
        source = samples[j]
        selected = np.flatnonzero(params.selected[i].numpy())
        out.append(copy_paste_one(receiving, source, jitter_of(params.receiving, i, receiving["image"].shape[:2]),
                                  jitter_of(params.pasted, i, source["image"].shape[:2]), selected, output_size,
                                  **options))
    return out
