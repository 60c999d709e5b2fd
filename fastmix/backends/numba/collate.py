"""Fused collate-and-mix for timm-style `FastCollateMixup`: a list of uint8 samples in, the mixed
uint8 batch out, in one pass (`collate_mix`); beside it the compiled soft targets
(`collate_targets`) and the deterministic part of timm's parameter draw (`timm_params_kernel`).

A stack-then-mix collate copies every sample into a batch and then reads that batch again to
mix it, and in 'half' mode blends all B rows to keep B/2. Here each output row is written
once, straight from the samples, and only the rows that are returned: a copy (unmixed), a
blend with the partner, or a copy with the partner's box pasted in. Sample i and its partner
B-1-i are handled by the same work item, so each sample is read from memory once even though
both members of the pair use it.

The kernel takes the call's parameters as timm draws them, one row per *unit* (1 in 'batch'
mode, B in 'elem', B/2 in 'pair' and 'half'), and maps output rows to units itself: in a
DataLoader worker every NumPy or torch op on the small parameter arrays costs 5-10 us, and a
dozen of them (expanding units to rows, deriving kinds and weights) cost as much as a third of
the image pass. For the same reason the targets are built by one compiled loop
(`collate_targets`) instead of timm's one_hot / flip / two products / sum.

The samples stay separate arrays (no stack): the kernel gets their addresses as an int64
array, so one compiled function serves every batch size (a tuple of arrays would compile once
per B, a reflected or typed list costs more to build than the copy it saves at small sizes).
`collate_mix` reads the addresses from the array objects themselves (see `_data_offset`; 64
`__array_interface__` lookups cost more than all the rest of its checks) and keeps the arrays
alive and C-contiguous for the call. Unmixed rows and the parts of pasted rows outside the box
are copied with memcpy (LLVM's memcpy intrinsic, i.e. libc's: the speed of np.stack's copy).
A pair of blended rows is computed from one read and one float conversion of both samples
(`_blend_pair`): a uint8 blend is bound by its arithmetic, not by memory, here.

Blend arithmetic is timm's NumPy path bit for bit: `x.astype(float32) * w + y.astype(float32) *
w1` with w float32 and w1 = 1 - w computed in float32, each product and the sum rounded
separately (no FMA without fastmath), then np.rint (half to even); the result is saturated to
[0, 255] (a no-op: the weights sum to 1 within float32 rounding). Target arithmetic is timm's
`mixup_target` in float32 bit for bit (see `collate_targets`).

One thread (a DataLoader worker: torch.get_num_threads() == 1) runs the serial driver on the
calling thread, whose caches hold the samples it has just decoded; more threads run the
parallel driver under `_runtime.kernel_call()` like every kernel of this package. Both share
the work-item body. The kernels need only numpy and numba (DALI's CPU `numba_function` could
call them).
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from ._kernels import memcpy
from ._kernels import round_u8_nonneg
from ._runtime import kernel_call

_OPTS = dict(cache=True, nogil=True)
_CHUNK = 1 << 14  # elements per work item, as in _kernels

COPY, BLEND, PASTE = 0, 1, 2  # what an output row is
# How output row i maps to its parameter unit: BATCH every row unit 0; ELEM row i unit i; PAIR rows
# i and B-1-i unit min(i, B-1-i); HALF row i (< B/2) unit i.
BATCH, ELEM, PAIR, HALF = 0, 1, 2, 3
MODES = {"batch": BATCH, "elem": ELEM, "pair": PAIR, "half": HALF}


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
def _unit(row, mode, size):
    if mode == BATCH:
        return 0
    if mode == PAIR:
        return min(row, size - 1 - row)
    return row


@njit(cache=True, nogil=True)
def _blend(dst, own, other, a, c, count):
    """dst[:count] = rint(a * own + c * other) on uint8 pointers (0-based arrays: LLVM then
    knows the indices are non-negative and vectorises)."""
    out = carray(_u8_pointer(dst), count)
    src = carray(_u8_pointer(own), count)
    mate = carray(_u8_pointer(other), count)
    for k in range(count):
        out[k] = round_u8_nonneg(a * src[k] + c * mate[k])


@njit(cache=True, nogil=True)
def _blend_pair(dst, dst2, own, other, a, c, a2, c2, count):
    """dst[:count] = rint(a * own + c * other) and dst2[:count] = rint(a2 * other + c2 * own):
    both rows of a pair from one conversion of each sample's values to float32 (measured here,
    B=64 3x224x224 all blended, one thread, samples in cache: 0.77 ms instead of 1.06 ms with
    two `_blend` calls, about np.stack's 0.72 ms)."""
    out = carray(_u8_pointer(dst), count)
    out2 = carray(_u8_pointer(dst2), count)
    src = carray(_u8_pointer(own), count)
    mate = carray(_u8_pointer(other), count)
    for k in range(count):
        x = np.float32(src[k])
        y = np.float32(mate[k])
        out[k] = round_u8_nonneg(a * x + c * y)
        out2[k] = round_u8_nonneg(a2 * y + c2 * x)


@njit(cache=True, nogil=True)
def _write(dst, own, other, kind, a, c, boxes, unit, first, last, height, width):
    """Lines [first, last) (a line is one image row of one channel, `width` long) of one output
    row at address dst: own copied, blended with other, or own with other's box pasted in
    (own, other: the samples' addresses)."""
    start = first * width
    stop = last * width
    if kind == BLEND:
        _blend(dst + start, own + start, other + start, a, c, stop - start)
        return
    y1, y2, x1, x2 = boxes[unit, 0], boxes[unit, 1], boxes[unit, 2], boxes[unit, 3]
    if kind == COPY or y1 >= y2 or x1 >= x2:
        memcpy(dst + start, own + start, stop - start)
        return
    # Lines outside the box are copied in runs (one long copy from the end of one box to the
    # start of the next, across channels), box lines in three pieces.
    run = start  # start of the pending run of own's elements
    for line in range(first, last):
        y = line % height
        if y1 <= y < y2:
            base = line * width
            memcpy(dst + run, own + run, base + x1 - run)
            memcpy(dst + base + x1, other + base + x1, x2 - x1)
            run = base + x2
    memcpy(dst + run, own + run, stop - run)


@njit(cache=True, nogil=True, inline="always")
def _row_kind(lam, cut, unit):
    if cut[unit]:
        return PASTE
    return BLEND if lam[unit] < 1.0 else COPY


@njit(cache=True, nogil=True)
def _work_item(t, chunks, per_chunk, lines, addresses, size, rows, mode, lam, cut, boxes, out, n, height, width):
    """Lines [first, last) of sample i's output row and of its partner B-1-i's (when that is an
    output row too), while both samples' lines are in cache."""
    i = t // chunks
    first = (t % chunks) * per_chunk
    last = min(first + per_chunk, lines)
    j = size - 1 - i
    own = addresses[i]
    other = addresses[j]
    u = _unit(i, mode, size)
    kind = _row_kind(lam, cut, u)
    a = lam[u]
    paired = j != i and j < rows
    if paired:
        u2 = _unit(j, mode, size)
        kind2 = _row_kind(lam, cut, u2)
        a2 = lam[u2]
        if kind == BLEND and kind2 == BLEND:
            start = first * width
            _blend_pair(out + i * n + start, out + j * n + start, own + start, other + start, a,
                        np.float32(1.0) - a, a2, np.float32(1.0) - a2, (last - first) * width)
            return
        _write(out + j * n, other, own, kind2, a2, np.float32(1.0) - a2, boxes, u2, first, last, height, width)
    _write(out + i * n, own, other, kind, a, np.float32(1.0) - a, boxes, u, first, last, height, width)


@njit(cache=True, nogil=True, inline="always")
def _layout(size, rows, n, width):
    lines = n // width
    per_chunk = max(1, _CHUNK // width)
    chunks = (lines + per_chunk - 1) // per_chunk
    pairs = rows if 2 * rows <= size else (size + 1) // 2
    return lines, per_chunk, chunks, pairs


@njit(parallel=True, **_OPTS)
def collate_mix_kernel(addresses, size, height, width, mode, lam, cut, boxes, out):
    """out[i] (uint8 [rows, C*H*W]) for i < rows from sample i and its partner B-1-i.

    addresses: int64 [B], the data of B C-contiguous uint8 samples of C*H*W elements each.
    mode (BATCH, ELEM, PAIR, HALF) maps rows to units (see `_unit`); per unit: lam float32 in
    [0, 1], cut bool (paste instead of blend), boxes int64 [units, 4] (y1, y2, x1, x2),
    half-open, inside the image where cut. A row is pasted where cut, blended where lam < 1,
    copied otherwise. rows is B or B/2 ('half' mode, where the partners are never output rows).
    Unchecked: `collate_mix` checks every argument first."""
    rows, n = out.shape
    lines, per_chunk, chunks, pairs = _layout(size, rows, n, width)
    base = out.ctypes.data
    for t in prange(pairs * chunks):
        _work_item(t, chunks, per_chunk, lines, addresses, size, rows, mode, lam, cut, boxes, base, n, height, width)


@njit(**_OPTS)
def collate_mix_serial(addresses, size, height, width, mode, lam, cut, boxes, out):
    """collate_mix_kernel on the calling thread alone (one thread: a DataLoader worker)."""
    rows, n = out.shape
    lines, per_chunk, chunks, pairs = _layout(size, rows, n, width)
    base = out.ctypes.data
    for t in range(pairs * chunks):
        _work_item(t, chunks, per_chunk, lines, addresses, size, rows, mode, lam, cut, boxes, base, n, height, width)


@njit(**_OPTS)
def _bad_units(lam, cut, boxes, height, width):
    """The first unit whose lam is outside [0, 1] (NaN included) or whose pasted box is not inside
    the image, as (unit, 1 for lam / 2 for the box); (-1, 0) when all are valid."""
    for u in range(lam.shape[0]):
        if not (lam[u] >= 0.0 and lam[u] <= 1.0):
            return u, 1
        if cut[u]:
            y1, y2, x1, x2 = boxes[u, 0], boxes[u, 1], boxes[u, 2], boxes[u, 3]
            if not (0 <= y1 <= y2 <= height and 0 <= x1 <= x2 <= width):
                return u, 2
    return -1, 0


@intrinsic
def _load_word(typingctx, address):
    """The int64 stored at an integer address."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        pointer = builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.int64)))
        return builder.load(pointer)

    return types.int64(address), codegen


@njit(cache=True, nogil=True)
def _load_words(addresses):
    out = np.empty_like(addresses)
    for i in range(addresses.shape[0]):
        out[i] = _load_word(addresses[i])
    return out


def _data_offset() -> int | None:
    """Where an ndarray object keeps its data pointer, from the object's address: the `data`
    field of NumPy's PyArrayObject, right after the PyObject header (NumPy's PyArray_DATA
    macro, compiled into every extension, reads it there). Reading it for 64 samples costs
    ~5 us where `__array_interface__` costs ~1 us per sample. Checked here on probe arrays
    (a view with an offset included); None, and the slow read, if anything disagrees."""
    offset = object.__basicsize__
    try:
        base = np.arange(64, dtype=np.uint8)
        probes = [base, base[5:], np.zeros((3, 4, 5), np.uint8)]
        found = _load_words(np.array([id(probe) + offset for probe in probes], dtype=np.int64)).tolist()
        return offset if found == [probe.__array_interface__["data"][0] for probe in probes] else None
    except Exception:  # noqa: BLE001  (any failure: use the slow read)
        return None


_NDARRAY = {np.ndarray}
_DTYPE, _SHAPE, _C_CONTIGUOUS = (operator.attrgetter(name) for name in ("dtype", "shape", "flags.c_contiguous"))


def units_of(mode: int, size: int) -> int:
    """How many parameter units a batch of `size` samples has in `mode`."""
    return {BATCH: 1, ELEM: size, PAIR: size // 2, HALF: size // 2}[mode]


def collate_mix(images: list, mode: int, lam: np.ndarray, cut: np.ndarray, boxes: np.ndarray,
                out: np.ndarray | None = None) -> np.ndarray:
    """uint8 [rows, C, H, W] (rows = B/2 in HALF mode, else B): row i of the B uint8 [C, H, W]
    `images` mixed with image B-1-i by the parameters of its unit (see collate_mix_kernel).

    Checks every argument the kernel relies on (it indexes without bounds checks). `out`: a
    C-contiguous uint8 array of the output's shape to write into (a fresh one by default)."""
    size = len(images)
    if mode not in (BATCH, ELEM, PAIR, HALF):
        raise ValueError(f"mode must be BATCH, ELEM, PAIR or HALF (0-3), got {mode!r}")
    if size == 0 or (mode in (PAIR, HALF) and size % 2):
        raise ValueError(f"mode {mode} needs {'an even' if size else 'a non-empty'} list of samples, got {size}")
    first = images[0]
    shape = getattr(first, "shape", None)
    if not isinstance(first, np.ndarray) or first.ndim != 3:
        raise ValueError(f"images must be uint8 NumPy arrays [C, H, W], got {type(first).__name__} of shape {shape}")
    dtype = np.dtype(np.uint8)
    kept = []  # contiguous copies of strided samples, alive until the kernel has run
    # whole-list checks with C-level map loops (~0.1 us per sample; a generator expression costs 0.5)
    if (_DATA_OFFSET is not None and set(map(type, images)) == _NDARRAY and set(map(_DTYPE, images)) == {dtype}
            and set(map(_SHAPE, images)) == {shape} and all(map(_C_CONTIGUOUS, images))):
        addresses = _load_words(np.fromiter(map(id, images), np.int64, size) + _DATA_OFFSET)
    else:
        addresses = np.empty(size, dtype=np.int64)
        for index, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.dtype != dtype or image.shape != shape:
                raise ValueError(f"image {index} must be a uint8 NumPy array of shape {shape}")
            if not image.flags.c_contiguous:
                image = np.ascontiguousarray(image)
                kept.append(image)
            addresses[index] = image.__array_interface__["data"][0]
    _, height, width = shape
    units = units_of(mode, size)
    lam = np.ascontiguousarray(lam, dtype=np.float32)
    cut = np.ascontiguousarray(cut, dtype=np.bool_)
    boxes = np.ascontiguousarray(boxes, dtype=np.int64)
    if lam.shape != (units,) or cut.shape != (units,) or boxes.shape != (units, 4):
        raise ValueError(f"a batch of {size} in mode {mode} needs lam [{units}], cut [{units}] and boxes "
                         f"[{units}, 4], got {lam.shape}, {cut.shape} and {boxes.shape}")
    bad, why = _bad_units(lam, cut, boxes, height, width)
    if why == 1:
        raise ValueError(f"lam must lie in [0, 1], got {lam[bad]} (unit {bad})")
    if why == 2:
        raise ValueError(f"boxes must satisfy 0 <= y1 <= y2 <= {height} and 0 <= x1 <= x2 <= {width}, got "
                         f"{boxes[bad].tolist()} (unit {bad})")
    rows = size // 2 if mode == HALF else size
    if out is None:
        out = np.empty((rows, *shape), dtype=np.uint8)
    else:
        if (not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != (rows, *shape)
                or not out.flags.c_contiguous or not out.flags.writeable):
            raise ValueError(f"out must be a writable C-contiguous uint8 array of shape {(rows, *shape)}")
        low = out.__array_interface__["data"][0]
        if out.size and bool(((addresses < low + out.nbytes) & (low < addresses + first.nbytes)).any()):
            raise ValueError("out must not share memory with the samples (the kernel reads partners it would "
                             "already have overwritten)")
    if out.size:
        flat = out.reshape(rows, -1)
        args = (addresses, size, height, width, mode, lam, cut, boxes, flat)
        if torch.get_num_threads() == 1:
            collate_mix_serial(*args)
        else:
            with kernel_call():
                collate_mix_kernel(*args)
    return out


# ---- targets -------------------------------------------------------------------------------------

@njit(**_OPTS)
def _targets_kernel(labels, mode, lam, per_batch, off, on, out):
    """out[i] = lam_i * y[i] + (1 - lam_i) * y[B-1-i] for i < rows, with y the smoothed one-hot
    rows of `labels` (on at the label, off elsewhere), as timm's mixup_target computes it in
    float32: each product and the sum rounded separately. per_batch: timm's per-batch lam is a
    Python float, and 1 - lam is rounded to float32 from float64; per-unit lams are float32
    tensors, and 1 - lam is a float32 subtraction. Returns the first row whose label is outside
    [0, num_classes), or -1 (nothing is then guaranteed about out)."""
    rows, classes = out.shape
    size = labels.shape[0]
    for i in range(size):
        if labels[i] < 0 or labels[i] >= classes:
            return i
    for i in range(rows):
        a = lam[_unit(i, mode, size)]
        if per_batch:
            c = np.float32(1.0 - np.float64(a))
        else:
            c = np.float32(1.0) - a
        own, mate = labels[i], labels[size - 1 - i]
        background = off * a + off * c
        row = out[i]
        for k in range(classes):
            row[k] = background
        row[mate] = off * a + on * c
        row[own] = on * a + (on * c if own == mate else off * c)
    return -1


def collate_targets(labels: np.ndarray, mode: int, lam: np.ndarray, num_classes: int, smoothing: float,
                    rows: int) -> torch.Tensor | None:
    """float32 [rows, num_classes] soft targets of class indices `labels` (int64 [B]) mixed by the
    units' lam as timm's `mixup_target(default_collate(labels), num_classes, lam, smoothing)[:rows]`,
    bit for bit; None when a label is outside [0, num_classes) (the caller's general path then
    raises its error)."""
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    lam = np.ascontiguousarray(lam, dtype=np.float32)
    size = labels.shape[0] if labels.ndim == 1 else -1
    if size < 1 or lam.shape != (units_of(mode, size),) or rows not in (size, size // 2):
        raise ValueError(f"labels [B], lam [units] and rows B or B/2 expected, got {labels.shape}, {lam.shape}, {rows}")
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    out = torch.empty((rows, num_classes), dtype=torch.float32)
    bad = _targets_kernel(labels, mode, lam, mode == BATCH, np.float32(off), np.float32(on), out.numpy())
    return None if bad >= 0 else out


# ---- parameters ----------------------------------------------------------------------------------

SWITCH, MIXUP_ONLY, CUTMIX_ONLY = 0, 1, 2  # which operators a timm Mixup draws from


@njit(**_OPTS)
def timm_params_kernel(flips, cut_lam, mix_lam, operators, switch_prob, mix_prob, per_unit, correct_lam,
                       height, width, lam, cut, boxes):
    """The deterministic part of timm's parameter draw for n units, from the call's random draws;
    the same arithmetic as fastmix.compat.timm's NumPy path (`_finish_params`), bit for bit.

    flips float64 [4, n] uniform in [0, 1): the switch and mix coin flips and the box centres'
    (y, x) positions; cut_lam / mix_lam float64 [n] Beta draws of each operator (unused ones may
    be empty); operators SWITCH, MIXUP_ONLY or CUTMIX_ONLY. Writes lam float32 [n] (area-corrected
    where correct_lam), cut bool [n] (paste where lam < 1 and CutMix is chosen) and boxes int64
    [n, 4] (y1, y2, x1, x2; zero where not cut). per_unit: the box side is computed from the
    float32 lam (timm's per-element modes), otherwise from it as float64 (timm's per-batch float)."""
    sides = (height, width)
    for u in range(lam.shape[0]):
        if operators == SWITCH:
            pasted = flips[0, u] < switch_prob
            draw = cut_lam[u] if pasted else mix_lam[u]
        elif operators == MIXUP_ONLY:
            pasted = False
            draw = mix_lam[u]
        else:
            pasted = True
            draw = cut_lam[u]
        weight = np.float32(draw) if flips[1, u] < mix_prob else np.float32(1.0)
        pasted = pasted and weight < 1.0
        cut[u] = pasted
        for k in range(4):
            boxes[u, k] = 0
        if pasted:
            for axis in range(2):
                side = sides[axis]
                if per_unit:  # float32 arithmetic, as NumPy on a float32 lam
                    span = np.int64(np.float32(side) * np.sqrt(np.float32(1.0) - weight))
                else:
                    span = np.int64(np.float64(side) * np.sqrt(1.0 - np.float64(weight)))
                middle = min(np.int64(flips[2 + axis, u] * side), side - 1)
                boxes[u, 2 * axis] = max(middle - span // 2, 0)
                boxes[u, 2 * axis + 1] = min(middle + (span + 1) // 2, side)
            if correct_lam:
                area = (boxes[u, 1] - boxes[u, 0]) * (boxes[u, 3] - boxes[u, 2])
                weight = np.float32(1.0 - area / np.float64(height * width))
        lam[u] = weight


_DATA_OFFSET = _data_offset()
