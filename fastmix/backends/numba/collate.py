"""Fused collate-and-mix for timm-style `FastCollateMixup`: a list of uint8 samples in, the mixed
uint8 batch out, in one pass.

A stack-then-mix collate copies every sample into a batch and then reads that batch again to
mix it, and in 'half' mode blends all B rows to keep B/2. Here each output row is written
once, straight from the samples, and only the rows that are returned: a copy (unmixed), a
blend with the partner, or a copy with the partner's box pasted in. Sample i and its partner
B-1-i are handled by the same work item, so each sample is read from memory once even though
both members of the pair use it.

The samples stay separate arrays (no stack): the kernel gets their addresses as an int64
array, so one compiled function serves every batch size (a tuple of arrays would compile once
per B, a reflected or typed list costs more to build than the copy it saves at small sizes).
The caller keeps the arrays alive and C-contiguous for the call (`collate_mix` does).

Blend arithmetic is timm's NumPy path bit for bit: `x.astype(float32) * w + y.astype(float32) *
w1` with w, w1 float32 (the caller computes w1 = 1 - w in float32), each product and the sum
rounded separately (no FMA without fastmath), then np.rint (half to even); the result is
saturated to [0, 255] (a no-op: the weights sum to 1 within float32 rounding).

The kernel needs only numpy and numba (DALI's CPU `numba_function` could call it); `collate_mix`
launches it under `_runtime.kernel_call()` like every kernel of this package.
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from ._runtime import kernel_call

_OPTS = dict(parallel=True, cache=True, nogil=True)
_CHUNK = 1 << 14  # elements per work item, as in _kernels

COPY, BLEND, PASTE = 0, 1, 2  # per-row kinds


@intrinsic
def _u8_pointer(typingctx, address):
    """An integer address as a uint8 pointer (for numba.carray)."""
    if not isinstance(address, types.Integer):
        return None
    signature = types.CPointer(types.uint8)(address)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


@njit(cache=True, nogil=True, inline="always")
def _round_u8(value):
    """np.rint, saturated to [0, 255], as uint8 (value float32). The saturation is done on the
    int32 (exact: rint's result is an integer), which vectorises better than float compares
    (about 15% faster per blend here); the weights in [0, 1] keep value far inside int32."""
    rounded = np.int32(np.rint(value))
    return np.uint8(min(max(rounded, 0), 255))


@njit(cache=True, nogil=True)
def _copy(dst, src, start, stop):
    """dst[start:stop] = src[start:stop] as an explicit loop on 0-based slices: LLVM turns it
    into a memcpy-speed loop, where numba's slice assignment (overlap checks, a generic strided
    loop) runs about 4x slower."""
    d = dst[start:stop]
    s = src[start:stop]
    for k in range(stop - start):
        d[k] = s[k]


@njit(cache=True, nogil=True)
def _write(dst, own, other, kind, a, c, box, first, last, height, width):
    """Lines [first, last) (a line is one image row of one channel, `width` long) of one output
    row: own copied, blended with other, or own with other's box pasted in."""
    start = first * width
    stop = last * width
    if kind == BLEND:
        # slices indexed from 0: LLVM then knows the indices are non-negative and vectorises
        src = own[start:stop]
        mate = other[start:stop]
        out = dst[start:stop]
        for k in range(stop - start):
            out[k] = _round_u8(a * src[k] + c * mate[k])
        return
    y1, y2, x1, x2 = box[0], box[1], box[2], box[3]
    if kind == COPY or y1 >= y2 or x1 >= x2:
        _copy(dst, own, start, stop)
        return
    # Lines outside the box are copied in runs (one long copy from the end of one box to the
    # start of the next, across channels), box lines in three pieces.
    run = start  # start of the pending run of own's elements
    for line in range(first, last):
        y = line % height
        if y1 <= y < y2:
            base = line * width
            _copy(dst, own, run, base + x1)
            _copy(dst, other, base + x1, base + x2)
            run = base + x2
    _copy(dst, own, run, stop)


@njit(**_OPTS)
def collate_mix_kernel(addresses, size, height, width, kind, w, w1, boxes, out):
    """out[i] (uint8 [rows, C*H*W]) for i < rows from sample i and its partner B-1-i.

    addresses: int64 [B], the data of B C-contiguous uint8 samples of C*H*W elements each.
    kind int8 [rows] (COPY, BLEND, PASTE); w, w1 float32 [rows]; boxes int64 [rows, 4]
    (y1, y2, x1, x2), half-open, inside the image. rows is B ('half' mode: B/2, where the
    partners are never output rows) or B (every sample an output row)."""
    rows, n = out.shape
    lines = n // width
    per_chunk = max(1, _CHUNK // width)
    chunks = (lines + per_chunk - 1) // per_chunk
    pairs = rows if 2 * rows <= size else (size + 1) // 2
    for t in prange(pairs * chunks):
        i = t // chunks
        first = (t % chunks) * per_chunk
        last = min(first + per_chunk, lines)
        j = size - 1 - i
        own = carray(_u8_pointer(addresses[i]), n)
        other = carray(_u8_pointer(addresses[j]), n)
        _write(out[i], own, other, kind[i], w[i], w1[i], boxes[i], first, last, height, width)
        if j != i and j < rows:  # the partner's own row, while both samples are in cache
            _write(out[j], other, own, kind[j], w[j], w1[j], boxes[j], first, last, height, width)


def collate_mix(images: list, rows: int, kind: np.ndarray, w: np.ndarray, w1: np.ndarray,
                boxes: np.ndarray) -> np.ndarray:
    """uint8 [rows, C, H, W]: row i of the B uint8 [C, H, W] `images` mixed with image B-1-i.

    rows is B or B // 2; kind int8, w and w1 float32, boxes int64 [rows, 4] as in the kernel.
    Checks every argument the kernel relies on (it indexes without bounds checks)."""
    size = len(images)
    if size == 0 or rows not in (size, size // 2) or rows == 0:
        raise ValueError(f"rows must be B or B // 2 (B = {size} samples), got {rows}")
    shape = images[0].shape
    if len(shape) != 3:
        raise ValueError(f"images must be [C, H, W], got shape {shape}")
    arrays = []
    addresses = np.empty(size, dtype=np.int64)
    for index, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != shape:
            raise ValueError(f"image {index} must be a uint8 NumPy array of shape {shape}")
        if not image.flags.c_contiguous:
            image = np.ascontiguousarray(image)  # a copy only for a strided sample
        arrays.append(image)  # keeps the copies alive until the kernel has run
        addresses[index] = image.__array_interface__["data"][0]
    _, height, width = shape
    kind = np.ascontiguousarray(kind, dtype=np.int8)
    w = np.ascontiguousarray(w, dtype=np.float32)
    w1 = np.ascontiguousarray(w1, dtype=np.float32)
    boxes = np.ascontiguousarray(boxes, dtype=np.int64).reshape(-1, 4)
    for name, value in (("kind", kind), ("w", w), ("w1", w1), ("boxes", boxes)):
        if value.shape[0] != rows:
            raise ValueError(f"{name} must have {rows} rows, got {value.shape[0]}")
    if kind.size and (kind.min() < COPY or kind.max() > PASTE):
        raise ValueError("kind must hold COPY (0), BLEND (1) or PASTE (2)")
    blended = kind == BLEND
    if blended.any() and not ((w[blended] >= 0) & (w[blended] <= 1) & (w1[blended] >= 0) & (w1[blended] <= 1)).all():
        raise ValueError("blend weights w and w1 must lie in [0, 1]")
    pasted = boxes[kind == PASTE]
    if pasted.size:
        y1, y2, x1, x2 = pasted.T
        if not ((0 <= y1) & (y1 <= y2) & (y2 <= height) & (0 <= x1) & (x1 <= x2) & (x2 <= width)).all():
            raise ValueError(f"boxes must satisfy 0 <= y1 <= y2 <= {height} and 0 <= x1 <= x2 <= {width}")
    out = np.empty((rows, *shape), dtype=np.uint8)
    if out.size:
        with kernel_call():
            collate_mix_kernel(addresses, size, height, width, kind, w, w1, boxes, out.reshape(rows, -1))
    return out
