"""numba kernels on NumPy arrays: Mixup blend, box paste / fill, SAGE mask + blend and shift
scores, the Copy-Paste steps (mask boxes, occlusion, LSJ resampling, alpha blend) and OpenCV's
fine-grained saliency.

This module imports only numpy and numba, so the same compiled functions serve the torch
wrappers (fastmix.backends.numba.blend) and DALI's CPU `numba_function`. Every kernel reads
each input element at most once and writes each output element once; work is split over the
batch and over blocks of rows (or of elements) with `prange`, so B=1 still uses every thread.

Arithmetic matches the PyTorch path bit for bit: the blend weights w and 1 - w are computed by
the caller in the compute dtype (float32, float64 for float64 output), each product and the sum
are rounded separately (numba does not contract them into an FMA without fastmath), and uint8
outputs are rounded half-to-even (np.rint) and saturated to [0, 255] as `round().clamp(0, 255)`
does. Outputs may not alias inputs (the callers check).

Layouts: images are C-contiguous arrays. The elementwise kernels see a batch as [B, N]. The box
kernels see it as [B, R, L] rows: NCHW is [B, C*H, W] (row r is image row r % H, box columns
[x1, x2)), channels_last is [B, H, W*C] (row r is image row r, box elements [x1*C, x2*C)).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# cache=True: compiled code is written beside this file (or, when that folder is not writable,
# to numba's per-user cache dir), so a DataLoader worker or a new process loads it instead of
# recompiling. nogil: DALI and other Python threads keep running during a call.
_OPTS = dict(parallel=True, cache=True, nogil=True)
_CHUNK = 1 << 14  # elements per work item: large enough to hide the scheduling cost
ZERO = np.float32(0.0)
ONE = np.float32(1.0)
TOP = np.float32(255.0)


@intrinsic
def memcpy(typingctx, dst, src, count):
    """memcpy(dst, src, count) on integer addresses (LLVM's memcpy intrinsic: libc's memcpy)."""
    if not all(isinstance(arg, types.Integer) for arg in (dst, src, count)):
        return None
    signature = types.void(types.int64, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        target, source = (builder.inttoptr(arg, cgutils.voidptr_t) for arg in args[:2])
        cgutils.raw_memcpy(builder, target, source, args[2], 1)
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, nogil=True, inline="always")
def _to_u8(value):
    """torch's `round().clamp(0, 255)` then a cast to uint8 (value float32)."""
    value = np.rint(value)
    if value < ZERO:
        value = ZERO
    if value > TOP:
        value = TOP
    return np.uint8(value)


@njit(cache=True, nogil=True, inline="always")
def round_u8_nonneg(value):
    """_to_u8 for a float32 value known to be >= 0 and finite (a blend of uint8 values with
    weights in [0, 1]): the saturation is done on the integer (exact, rint's result is an
    integer) as an unsigned minimum, which compiles to one saturating pack (vpmovusdb) instead of
    two float compares; measured 1.2-1.5x faster blends at B=32 3x224x224 and B=256 3x32x32."""
    rounded = np.uint32(np.int32(np.rint(value)))
    return np.uint8(min(rounded, np.uint32(255)))


@njit(cache=True, nogil=True, inline="always")
def blend_u8(own, other, a, c, dst):
    """1-D uint8: dst[i] = saturate(rint(a * own[i] + c * other[i])), a and c float32. The body
    of the mixup kernels for uint8 outputs, also called per sample by DALI's numba_function
    (fastmix.dali.numba_ops). Weights in [0, 1] (every lam of the operators) take the cheaper
    rounding, with the same result."""
    if ZERO <= a <= ONE and ZERO <= c <= ONE:
        for i in range(own.shape[0]):
            dst[i] = round_u8_nonneg(a * own[i] + c * other[i])
    else:
        for i in range(own.shape[0]):
            dst[i] = _to_u8(a * own[i] + c * other[i])


@njit(cache=True, nogil=True, inline="always")
def blend_float(own, other, a, c, dst):
    """1-D: dst[i] = a * own[i] + c * other[i] in a's dtype; the body of the mixup kernels for
    float outputs (see blend_u8)."""
    for i in range(own.shape[0]):
        dst[i] = a * own[i] + c * other[i]


@njit(cache=True, nogil=True)
def partner_walk(perm):
    """The samples in an order that follows perm (b, perm[b], perm[perm[b]], ... until a sample
    repeats, then the next unvisited one): the partner a blend reads is, most of the time, the
    next sample's own input, so the mixup kernels read it from cache and each input crosses the
    memory bus once rather than twice (measured: 20% faster at B=32 3x224x224 float32)."""
    batch = perm.shape[0]
    seen = np.zeros(batch, np.bool_)
    order = np.empty(batch, np.int64)
    k = 0
    for first in range(batch):
        b = first
        while not seen[b]:
            seen[b] = True
            order[k] = b
            k += 1
            b = perm[b]
    return order


@njit(cache=True, nogil=True, inline="always")
def _walk_groups(batch, chunks):
    """Runs of the walk each work item takes: enough items (about 16) for the threads, even
    when the samples are short (one chunk each)."""
    return max(1, min(batch, (16 + chunks - 1) // chunks))


def _blend(own, other, a, c, dst):
    """blend_u8 for a uint8 output, blend_float otherwise (chosen when numba compiles the caller)."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_blend, inline="always")
def _blend_impl(own, other, a, c, dst):
    if dst.dtype == types.uint8:
        return lambda own, other, a, c, dst: blend_u8(own, other, a, c, dst)
    return lambda own, other, a, c, dst: blend_float(own, other, a, c, dst)


@njit(**_OPTS)
def mixup(x, perm, order, w, w1, out):
    """[B, N] (uint8 or float) -> [B, N]: out[b] = w[b] * x[b] + w1[b] * x[perm[b]], computed in
    w's dtype (float32 or float64; w1 = 1 - w computed in that dtype by the caller) and stored in
    out's dtype (uint8: rint, half to even, saturated); order = partner_walk(perm). A work item is
    one chunk of the elements for a run of the walk."""
    batch, n = x.shape
    chunks = (n + _CHUNK - 1) // _CHUNK
    groups = _walk_groups(batch, chunks)
    for t in prange(chunks * groups):
        g = t // chunks
        start = (t % chunks) * _CHUNK
        stop = min(start + _CHUNK, n)
        for k in range(g * batch // groups, (g + 1) * batch // groups):
            b = order[k]
            # Slices indexed from 0: LLVM then knows the indices are non-negative and vectorises.
            _blend(x[b, start:stop], x[perm[b], start:stop], w[b], w1[b], out[b, start:stop])


@njit(cache=True, nogil=True)
def mixup_serial(x, perm, order, w, w1, out):
    """mixup on the calling thread alone, for batches too small to repay a parallel launch."""
    batch, n = x.shape
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        for k in range(batch):
            b = order[k]
            _blend(x[b, start:stop], x[perm[b], start:stop], w[b], w1[b], out[b, start:stop])


@njit(cache=True, nogil=True, inline="always")
def _span(lo, hi, width, scale):
    """Element range of columns [lo, hi) clipped to [0, width), times scale (empty if hi <= lo)."""
    lo = min(max(lo, 0), width)
    hi = min(max(hi, lo), width)
    return lo * scale, hi * scale


@njit(cache=True, nogil=True, inline="always")
def _copy(src, dst):
    """dst[:] = src (cast to dst's dtype) as a plain loop: numba's slice assignment takes a
    generic path about 4x slower than this vectorised loop (measured on 4.8 MB of uint8)."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(cache=True, nogil=True, inline="always")
def _fill(dst, value):
    for i in range(dst.shape[0]):
        dst[i] = value


_SHORT_ROW_BYTES = 512  # below this a row's three copies cost more in per-copy overhead than in bytes


def _same_dtype(a, b):
    """True when arrays a and b hold the same dtype (known when numba compiles the caller)."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_same_dtype, inline="always")
def _same_dtype_impl(a, b):
    same = a.dtype == b.dtype
    return lambda a, b: same


@njit(cache=True, nogil=True, inline="always")
def _box_rows(x, out, b, r0, r1, height, y1, y2, c1, c2, src, fill, paste):
    """Rows [r0, r1) of sample b; the box's segment of every row that crosses it comes from
    `src` (the partner's rows, flat) or is `fill`. Short rows (under 512 bytes: CIFAR, uint8 at
    224 px), where the per-copy cost rather than the bytes is what the batch pays, get one
    memcpy of all the rows and then the box segments written over them while in cache (pastes
    of the images' own dtype: one memcpy per segment; 1.2-2x faster than segment loops, whose
    vectorised body is wider than the segment, at B=256 3x32x32 and B=32 3x224x224 uint8).
    Long rows get three copies per crossing row and one copy per run of rows outside the box,
    so that no byte is written twice (a second write of the box cost 1.7x a plain copy at
    224 px float32)."""
    length = x.shape[2]
    flat = x.shape[1] * length
    own = x[b].reshape(flat)
    dst = out[b].reshape(flat)
    if c1 >= c2 or length * dst.itemsize < _SHORT_ROW_BYTES:
        if _same_dtype(own, dst):
            size = dst.itemsize
            memcpy(dst.ctypes.data + r0 * length * size, own.ctypes.data + r0 * length * size, (r1 - r0) * length * size)
        else:
            _copy(own[r0 * length:r1 * length], dst[r0 * length:r1 * length])
        if c1 >= c2:
            return
        # Unsigned offsets: numba then emits no negative-index wraparound and LLVM vectorises
        # the segment loops (a signed running index made them 3x slower).
        width = np.uintp(c2 - c1)
        for r in range(r0, r1):
            y = r % height
            if y1 <= y < y2:
                start = np.uintp(r * length + c1)
                if paste and _same_dtype(src, dst):
                    size = dst.itemsize
                    memcpy(dst.ctypes.data + start * size, src.ctypes.data + start * size, width * size)
                elif paste:
                    for i in range(width):
                        dst[start + i] = src[start + i]
                else:
                    for i in range(width):
                        dst[start + i] = fill
        return
    r = r0
    while r < r1:
        y = r % height
        if y1 <= y < y2:
            row = r * length
            _copy(own[row:row + c1], dst[row:row + c1])
            if paste:
                _copy(src[row + c1:row + c2], dst[row + c1:row + c2])
            else:
                _fill(dst[row + c1:row + c2], fill)
            _copy(own[row + c2:row + length], dst[row + c2:row + length])
            r += 1
        else:
            end = r + 1
            while end < r1 and not (y1 <= end % height < y2):
                end += 1
            _copy(own[r * length:end * length], dst[r * length:end * length])
            r = end


@njit(cache=True, nogil=True, inline="always")
def _paste_rows(x, out, perm, boxes, height, scale, b, r0, r1):
    """Rows [r0, r1) of sample b of box_paste."""
    c1, c2 = _span(boxes[b, 2], boxes[b, 3], x.shape[2] // scale, scale)
    _box_rows(x, out, b, r0, r1, height, boxes[b, 0], boxes[b, 1], c1, c2,
              x[perm[b]].reshape(x.shape[1] * x.shape[2]), 0, True)


@njit(cache=True, nogil=True, inline="always")
def _fill_rows(x, out, boxes, value, height, scale, b, r0, r1):
    """Rows [r0, r1) of sample b of box_fill."""
    c1, c2 = _span(boxes[b, 2], boxes[b, 3], x.shape[2] // scale, scale)
    _box_rows(x, out, b, r0, r1, height, boxes[b, 0], boxes[b, 1], c1, c2,
              x[b].reshape(x.shape[1] * x.shape[2]), value, False)


@njit(**_OPTS)
def box_paste(x, perm, order, boxes, height, scale, out):
    """Rows [B, R, L] (see the module docstring): inside sample b's half-open box
    (y1, y2, x1, x2) the elements of sample perm[b], elsewhere sample b's (cast to out's dtype).
    `scale` is 1 for NCHW and C for channels_last; `height` is H. Samples are taken in the order
    of partner_walk(perm) (order), so a partner's box rows, read for one sample, are in cache
    when the partner's own rows are copied next."""
    batch, rows, length = x.shape
    block = max(1, _CHUNK // max(length, 1))
    blocks = (rows + block - 1) // block
    for t in prange(batch * blocks):
        b = order[t // blocks]
        r0 = (t % blocks) * block
        _paste_rows(x, out, perm, boxes, height, scale, b, r0, min(r0 + block, rows))


@njit(cache=True, nogil=True)
def box_paste_serial(x, perm, order, boxes, height, scale, out):
    """box_paste on the calling thread alone, for batches too small to repay a parallel launch."""
    batch, rows, length = x.shape
    for k in range(batch):
        _paste_rows(x, out, perm, boxes, height, scale, order[k], 0, rows)


@njit(**_OPTS)
def box_fill(x, boxes, fill, height, scale, out):
    """Rows [B, R, L]: inside sample b's box fill[0] (already in out's dtype), elsewhere sample b."""
    batch, rows, length = x.shape
    block = max(1, _CHUNK // max(length, 1))
    blocks = (rows + block - 1) // block
    for t in prange(batch * blocks):
        b = t // blocks
        r0 = (t % blocks) * block
        _fill_rows(x, out, boxes, fill[0], height, scale, b, r0, min(r0 + block, rows))


@njit(cache=True, nogil=True)
def box_fill_serial(x, boxes, fill, height, scale, out):
    """box_fill on the calling thread alone (see box_paste_serial)."""
    batch, rows, length = x.shape
    for b in range(batch):
        _fill_rows(x, out, boxes, fill[0], height, scale, b, 0, rows)


@njit(cache=True, nogil=True)
def walk_cycles(perm):
    """(order, starts) for the in-place kernels: order = partner_walk(perm) and where each cycle
    of perm starts in it, plus the end (cycle i is order[starts[i]:starts[i + 1]], each sample
    followed by its partner); starts is empty when perm is not a permutation (a repeated
    partner would be read after it changed)."""
    batch = perm.shape[0]
    hits = np.zeros(batch, np.int64)
    for b in range(batch):
        hits[perm[b]] += 1
        if hits[perm[b]] > 1:
            return np.empty(0, np.int64), np.empty(0, np.int64)
    order = partner_walk(perm)
    starts = np.empty(batch + 1, np.int64)
    count = 0
    for k in range(batch):
        if k == 0 or order[k] != perm[order[k - 1]]:
            starts[count] = k
            count += 1
    starts[count] = batch
    return order, starts[:count + 1]


@njit(**_OPTS)
def mixup_inplace(x, perm, order, starts, w, w1):
    """mixup with out = x (perm a permutation, (order, starts) = walk_cycles(perm)): along each cycle b0 -> b1 -> ... -> b(k-1) -> b0 sample bj is
    blended with b(j+1) before b(j+1) is overwritten, and the last with a copy of b0's
    original chunk. A work item is one chunk of the elements of one cycle; no batch-sized
    buffer, and each sample is read and written once."""
    batch, n = x.shape
    chunks = (n + _CHUNK - 1) // _CHUNK
    cycles = starts.shape[0] - 1
    for t in prange(chunks * cycles):
        cycle = t // chunks
        start = (t % chunks) * _CHUNK
        stop = min(start + _CHUNK, n)
        first, last = starts[cycle], starts[cycle + 1]
        saved = x[order[first], start:stop].copy()  # a fixed point (a cycle of one) blends with it too
        for k in range(first, last):
            b = order[k]
            own = x[b, start:stop]  # blended in place: dst is own, the partner another array
            _blend(own, x[order[k + 1], start:stop] if k + 1 < last else saved, w[b], w1[b], own)


@njit(cache=True, nogil=True, inline="always")
def _box_region(x, b, boxes, height, scale):
    """(first row, last row, c1, c2, groups) of sample b's box in rows [B, R, L]: rows
    g * height + y for y in [y1, y2) of each of the R // height row groups (channels for NCHW,
    one group for channels_last), elements [c1, c2) of each."""
    y1 = min(max(boxes[b, 0], 0), height)
    y2 = min(max(boxes[b, 1], y1), height)
    c1, c2 = _span(boxes[b, 2], boxes[b, 3], x.shape[2] // scale, scale)
    return y1, y2, c1, c2, x.shape[1] // height


@njit(cache=True, nogil=True, inline="always")
def _copy_box(src, dst, row_bytes, height, y1, y2, c1, c2, groups, itemsize):
    """The box elements of one sample at address src to the same places of one at dst (rows of
    row_bytes; see _box_region), one memcpy per box row: numba's slices and the vectorised
    loop's scalar tail cost more than libc's small copies on rows of a few dozen bytes
    (measured 1.35x faster at B=256 3x32x32 uint8)."""
    count = (c2 - c1) * itemsize
    if count <= 0:
        return
    for g in range(groups):
        for y in range(y1, y2):
            offset = (g * height + y) * row_bytes + c1 * itemsize
            memcpy(dst + offset, src + offset, count)


@njit(cache=True, nogil=True, inline="always")
def _same_box(boxes, b, c):
    return (boxes[b, 0] == boxes[c, 0] and boxes[b, 1] == boxes[c, 1] and boxes[b, 2] == boxes[c, 2]
            and boxes[b, 3] == boxes[c, 3])


@njit(cache=True, nogil=True, inline="always")
def _swap_box(x, b, c, boxes, height, scale):
    """Two samples that are each other's partner and share a box exchange its elements: one
    read and one write of each (a cycle of k samples otherwise costs k + 1 box copies)."""
    y1, y2, c1, c2, groups = _box_region(x, b, boxes, height, scale)
    for g in range(groups):
        for y in range(y1, y2):
            mine = x[b, g * height + y, c1:c2]
            theirs = x[c, g * height + y, c1:c2]
            for i in range(mine.shape[0]):
                value = mine[i]
                mine[i] = theirs[i]
                theirs[i] = value


@njit(**_OPTS)
def box_paste_inplace(x, perm, order, starts, boxes, height, scale):
    """box_paste with out = x (perm a permutation; order, starts as for mixup_inplace): along
    each cycle sample bj takes b(j+1)'s box before b(j+1) is changed, the last takes b0's from a
    copy of that region saved first. Only box elements are read and written (timm's in-place
    CutMix also copies the flipped batch). A work item is one cycle."""
    rows, length = x.shape[1], x.shape[2]
    itemsize = x.itemsize
    row_bytes = length * itemsize
    sample = rows * row_bytes
    base = x.ctypes.data
    for cycle in prange(starts.shape[0] - 1):
        first, last = starts[cycle], starts[cycle + 1]
        if last - first == 1:
            continue  # a fixed point pastes its own box
        if last - first == 2 and _same_box(boxes, order[first], order[first + 1]):
            _swap_box(x, order[first], order[first + 1], boxes, height, scale)  # timm's flip pairs
            continue
        head = base + order[first] * sample
        tail = order[last - 1]
        saved = np.empty(rows * length, x.dtype)  # laid out as a sample; only the box rows are touched
        y1, y2, c1, c2, groups = _box_region(x, tail, boxes, height, scale)
        _copy_box(head, saved.ctypes.data, row_bytes, height, y1, y2, c1, c2, groups, itemsize)
        for k in range(first, last - 1):
            b = order[k]
            y1, y2, c1, c2, groups = _box_region(x, b, boxes, height, scale)
            _copy_box(base + order[k + 1] * sample, base + b * sample, row_bytes, height, y1, y2, c1, c2, groups,
                      itemsize)
        y1, y2, c1, c2, groups = _box_region(x, tail, boxes, height, scale)
        _copy_box(saved.ctypes.data, base + tail * sample, row_bytes, height, y1, y2, c1, c2, groups, itemsize)


@njit(**_OPTS)
def box_fill_inplace(x, boxes, fill, height, scale):
    """box_fill with out = x: only the box elements are written."""
    for b in prange(x.shape[0]):
        y1, y2, c1, c2, groups = _box_region(x, b, boxes, height, scale)
        for g in range(groups):
            for y in range(y1, y2):
                _fill(x[b, g * height + y, c1:c2], fill[0])


def _cast_like(value, like):
    """`value` converted to `like`'s float type (the mask cast to the images' compute dtype)."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_cast_like, inline="always")
def _cast_like_impl(value, like):
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


@njit(cache=True, nogil=True, inline="always")
def _mask_row(g1, g2, b, y, dy, dx, height, width, eps, mask):
    """Row y of M = G1 / max(G1 + shift(G2), eps) into mask[b, y]; returns the row's sum. Three
    column ranges (before, inside, after the shifted partner) keep the loops branch-free."""
    own = g1[b, y]
    dst = mask[b, y]
    sy = y - dy
    lo = min(max(dx, 0), width)
    hi = max(min(width + dx, width), lo)
    if not 0 <= sy < height:
        hi = lo
    total = 0.0
    for col in range(lo):
        g = own[col]
        m = g / max(g + (g - g), eps)
        dst[col] = m
        total += m
    if hi > lo:
        mine = own[lo:hi]
        other = g2[b, sy, lo - dx:hi - dx]
        out = dst[lo:hi]
        for i in range(hi - lo):
            g = mine[i]
            m = g / max(g + other[i], eps)
            out[i] = m
            total += m
    for col in range(hi, width):
        g = own[col]
        m = g / max(g + (g - g), eps)
        dst[col] = m
        total += m
    return total


@njit(cache=True, nogil=True, inline="always")
def _row_sum(row):
    """float64 sum of a row with eight partial sums: the strict one-accumulator order costs
    an add latency per element, more than the row's divisions once they are vectorised."""
    n = row.shape[0]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    i = 0
    while i + 8 <= n:
        a0 += row[i]
        a1 += row[i + 1]
        a2 += row[i + 2]
        a3 += row[i + 3]
        a4 += row[i + 4]
        a5 += row[i + 5]
        a6 += row[i + 6]
        a7 += row[i + 7]
        i += 8
    while i < n:
        a0 += row[i]
        i += 1
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _mask_span(own, other, eps, out):
    """out = own / max(own + other, eps) (clamp(min=eps) keeps NaN, as torch's)."""
    for i in range(out.shape[0]):
        g = own[i]
        d = g + other[i]
        out[i] = g / (eps if d < eps else d)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _mask_alone(own, eps, out):
    """The mask where the partner is shifted out (T = 0): own / max(own + 0, eps)."""
    zero = eps - eps
    for i in range(out.shape[0]):
        g = own[i]
        d = g + zero
        out[i] = g / (eps if d < eps else d)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _blend_span(weights, own, other, weight_one, reps, out):
    """out = m * own + (1 - m) * other, m = weights[i // reps] in the images' compute dtype
    (reps = 1 gets its own loop: a runtime-length inner loop keeps the outer one scalar)."""
    if reps == 1:
        for j in range(weights.shape[0]):
            m = _cast_like(weights[j], weight_one)
            out[j] = m * own[j] + (weight_one - m) * other[j]
        return
    if reps == 3:  # RGB channels_last, unrolled so that LLVM sees the interleaved groups
        for j in range(weights.shape[0]):
            m = _cast_like(weights[j], weight_one)
            v = weight_one - m
            out[3 * j] = m * own[3 * j] + v * other[3 * j]
            out[3 * j + 1] = m * own[3 * j + 1] + v * other[3 * j + 1]
            out[3 * j + 2] = m * own[3 * j + 2] + v * other[3 * j + 2]
        return
    for j in range(weights.shape[0]):
        m = _cast_like(weights[j], weight_one)
        v = weight_one - m
        for c in range(reps):
            out[j * reps + c] = m * own[j * reps + c] + v * other[j * reps + c]


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _blend_alone(weights, own, weight_one, reps, out):
    """The blend where the partner is shifted out: m * own + (1 - m) * 0."""
    zero = weight_one - weight_one
    if reps == 1:
        for j in range(weights.shape[0]):
            m = _cast_like(weights[j], weight_one)
            out[j] = m * own[j] + (weight_one - m) * zero
        return
    if reps == 3:
        for j in range(weights.shape[0]):
            m = _cast_like(weights[j], weight_one)
            v = weight_one - m
            out[3 * j] = m * own[3 * j] + v * zero
            out[3 * j + 1] = m * own[3 * j + 1] + v * zero
            out[3 * j + 2] = m * own[3 * j + 2] + v * zero
        return
    for j in range(weights.shape[0]):
        m = _cast_like(weights[j], weight_one)
        v = weight_one - m
        for c in range(reps):
            out[j * reps + c] = m * own[j * reps + c] + v * zero


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _fix_columns(own_map, eps, weights, own, weight_one, reps, dst, start, stop):
    """Pixels [start, stop) of a plane where the partner is shifted out (T = 0), by index: these
    runs are short (|dx| pixels a row) and a slice per run costs more than its work. reps == 0:
    the mask; reps >= 1: the blend (reps elements per pixel) from the mask already written."""
    if reps == 0:
        zero = eps - eps
        for i in range(start, stop):
            g = own_map[i]
            d = g + zero
            weights[i] = g / (eps if d < eps else d)
        return
    zero = weight_one - weight_one
    for i in range(start, stop):
        m = _cast_like(weights[i], weight_one)
        v = weight_one - m
        for c in range(reps):
            e = i * reps + c
            dst[e] = m * own[e] + v * zero


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _blend_block(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out, b, r0, r1, channels, last):
    """Rows [r0, r1) of sample b, mask and blend, for both layouts (last: channels_last).

    A shift (dy, dx) is one flat offset dy * W + dx of the partner in a sample's row-major
    pixels, so the partner-covered part of the block (rows ya..yb-1, from column lo of the
    first to column hi of the last) is ONE straight loop over contiguous pixels per map and
    image plane; the pixels it got wrong (columns outside [lo, hi) of those rows: the partner
    is shifted out there, T = 0) are rewritten after it, and the rows without any partner row
    are flat spans too. Per-row loops cost more than their work on small images (3-10x here)."""
    height = mask.shape[1]
    width = mask.shape[2]
    pixels = height * width
    reps = channels if last else 1  # elements per pixel in a plane
    dy = shifts[b, 0]
    dx = shifts[b, 1]
    p = perm[b]
    lo = min(max(dx, 0), width)
    hi = max(min(width + dx, width), lo)
    ya = min(max(r0, max(dy, 0)), r1)  # rows [ya, yb) of the block have a partner row
    yb = max(min(r1, min(height + dy, height)), ya)
    if hi == lo:
        yb = ya
    off = dy * width + dx
    s0 = ya * width + lo  # the partner-covered span [s0, s1) of pixels
    s1 = (yb - 1) * width + hi if yb > ya else s0
    own_map = g1[b].reshape(pixels)
    weights = mask[b].reshape(pixels)
    if s1 > s0:
        _mask_span(own_map[s0:s1], g2[b].reshape(pixels)[s0 - off:s1 - off], eps, weights[s0:s1])
    _mask_alone(own_map[r0 * width:ya * width], eps, weights[r0 * width:ya * width])
    _mask_alone(own_map[yb * width:r1 * width], eps, weights[yb * width:r1 * width])
    if lo > 0 or hi < width:
        for y in range(ya, yb):
            a = y * width
            _fix_columns(own_map, eps, weights, own_map, weight_one, 0, weights, a, a + lo)
            _fix_columns(own_map, eps, weights, own_map, weight_one, 0, weights, a + hi, a + width)
    row_sums[b, r0] = _row_sum(weights[r0 * width:r1 * width])  # the block's sum at its first row
    for y in range(r0 + 1, r1):
        row_sums[b, y] = 0.0
    for k in range(1 if last else channels):
        if last:
            own = x[b].reshape(pixels * reps)
            partner = x[p].reshape(pixels * reps)
            dst = out[b].reshape(pixels * reps)
        else:
            own = x[b, k].reshape(pixels)
            partner = x[p, k].reshape(pixels)
            dst = out[b, k].reshape(pixels)
        if s1 > s0:
            _blend_span(weights[s0:s1], own[s0 * reps:s1 * reps], partner[(s0 - off) * reps:(s1 - off) * reps],
                        weight_one, reps, dst[s0 * reps:s1 * reps])
        a, e = r0 * width, ya * width
        _blend_alone(weights[a:e], own[a * reps:e * reps], weight_one, reps, dst[a * reps:e * reps])
        a, e = yb * width, r1 * width
        _blend_alone(weights[a:e], own[a * reps:e * reps], weight_one, reps, dst[a * reps:e * reps])
        if lo > 0 or hi < width:
            for y in range(ya, yb):
                a = y * width
                _fix_columns(own_map, eps, weights, own, weight_one, reps, dst, a, a + lo)
                _fix_columns(own_map, eps, weights, own, weight_one, reps, dst, a + hi, a + width)


@njit(cache=True, nogil=True, inline="always")
def _blend_tasks(height, row_elements):
    """Row blocks per sample: about _CHUNK elements each, whole samples for small images."""
    rows = max(1, min(height, _CHUNK // max(row_elements, 1)))
    return rows, (height + rows - 1) // rows


# error_model="numpy": a float division by zero gives inf / NaN (IEEE) instead of raising
# ZeroDivisionError, whose per-element check kept every division scalar (4x slower here).
@njit(error_model="numpy", **_OPTS)
def sage_mask_blend_nchw(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out):
    """x, out float [B, C, H, W]; g1, g2, mask [B, H, W] (float32/float64); row_sums [B, H]
    float64 (each block of rows writes its mask sum at its first row, 0 at the others: summed
    over rows, the mask sum of the sample).
    mask = G1 / max(G1 + shift(G2), eps); out = m * x + (1 - m) * shift(x[perm]) with m the
    mask cast to the images' compute dtype (weight_one's dtype: 1 in that dtype), zero fill."""
    batch, channels, height, width = x.shape
    rows, blocks = _blend_tasks(height, channels * width)
    for t in prange(batch * blocks):
        b = t // blocks
        r0 = (t % blocks) * rows
        _blend_block(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out, b, r0, min(height, r0 + rows),
                     channels, False)


@njit(error_model="numpy", **_OPTS)
def sage_mask_blend_nhwc(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out):
    """As sage_mask_blend_nchw for channels_last images x, out [B, H, W, C]."""
    batch, height, width, channels = x.shape
    rows, blocks = _blend_tasks(height, channels * width)
    for t in prange(batch * blocks):
        b = t // blocks
        r0 = (t % blocks) * rows
        _blend_block(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out, b, r0, min(height, r0 + rows),
                     channels, True)


@njit(cache=True, nogil=True, error_model="numpy")
def sage_mask_blend_nchw_serial(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out):
    """sage_mask_blend_nchw on the calling thread (small batches: no parallel launch to pay)."""
    batch, channels, height, width = x.shape
    for b in range(batch):
        _blend_block(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out, b, 0, height, channels, False)


@njit(cache=True, nogil=True, error_model="numpy")
def sage_mask_blend_nhwc_serial(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out):
    """sage_mask_blend_nhwc on the calling thread."""
    batch, height, width, channels = x.shape
    for b in range(batch):
        _blend_block(x, perm, g1, g2, shifts, eps, weight_one, mask, row_sums, out, b, 0, height, channels, True)


@njit(**_OPTS)
def mask_boxes_areas(masks, boxes, areas):
    """masks uint8 [M, H, W] (nonzero = object) -> boxes float32 [M, 4] (x1, y1, x2, y2; x2/y2
    exclusive) and areas int64 [M]; an empty mask gives (0, 0, 0, 0) and 0. One pass per mask:
    a row is counted with a vectorised loop and searched for its ends only when it is not empty."""
    count, height, width = masks.shape
    for m in prange(count):
        y1 = -1
        y2 = 0
        x1 = width
        x2 = 0
        area = 0
        for y in range(height):
            row = masks[m, y]
            # Most rows of an object's mask are empty: a byte OR (64 bytes per vector op) finds
            # them; only the others are counted.
            seen = np.uint8(0)
            for x in range(width):
                seen |= row[x]
            if seen == 0:
                continue
            filled = 0
            for x in range(width):
                filled += row[x] != 0
            if filled:
                area += filled
                if y1 < 0:
                    y1 = y
                y2 = y + 1
                first = 0
                while row[first] == 0:
                    first += 1
                last = width - 1
                while row[last] == 0:
                    last -= 1
                x1 = min(x1, first)
                x2 = max(x2, last + 1)
        areas[m] = area
        if area:
            boxes[m, 0] = x1
            boxes[m, 1] = y1
            boxes[m, 2] = x2
            boxes[m, 3] = y2
        else:
            boxes[m, 0] = 0
            boxes[m, 1] = 0
            boxes[m, 2] = 0
            boxes[m, 3] = 0


ONE = np.float32(1.0)


@njit(**_OPTS)
def lsj_bilinear(images, sources, rows0, rows1, wy, inside_y, cols0, cols1, wx, inside_x, copy_cols, out):
    """Large-scale-jitter bilinear resample (the oracle's taps and operation order, float32):
    images uint8/float32 [B, C, H, W]; per view v: source image sources[v], row taps rows0/rows1
    [V, OH] with weight wy, column taps cols0/cols1 [V, OW] with weight wx (flip already in
    the taps), inside flags (uint8) for the zero padding; out float32 [V, C, OH, OW].
    copy_cols[v] >= 0 (uint8 images only) says view v's column taps are copy_cols[v] + x with
    weight 0, all inside: a row with row weight 0 is then exactly its source row (1 * v + 0 * w
    with w finite), copied without the arithmetic (a scale-1 view: paste without jitter)."""
    views, channels, out_h, out_w = out.shape
    for t in prange(views * out_h):
        v = t // out_h
        y = t % out_h
        s = sources[v]
        b = wy[v, y]
        a = ONE - b
        row_inside = inside_y[v, y] != 0
        r0 = rows0[v, y]
        r1 = rows1[v, y]
        for c in range(channels):
            dst = out[v, c, y]
            if not row_inside:
                _fill(dst, 0)
                continue
            top = images[s, c, r0]
            start = copy_cols[v]
            if start >= 0 and b == 0:
                _copy(top[start:start + out_w], dst)
                continue
            bottom = images[s, c, r1]
            for x in range(out_w):
                if inside_x[v, x]:
                    w = wx[v, x]
                    w0 = ONE - w
                    c0 = cols0[v, x]
                    c1 = cols1[v, x]
                    upper = w0 * np.float32(top[c0]) + w * np.float32(top[c1])
                    lower = w0 * np.float32(bottom[c0]) + w * np.float32(bottom[c1])
                    dst[x] = a * upper + b * lower
                else:
                    dst[x] = 0


_SCAN = 32  # bytes per block when a mask row is searched for its first / last pixel


@njit(cache=True, nogil=True, inline="always")
def _track_row(row, y, box):
    """Fold a mask row's pixels into box = [x1, y1, x2, y2, area] (int64, x1 starts at width,
    y1 at -1); returns nothing. The row is known to hold at least one pixel."""
    width = row.shape[0]
    filled = np.int32(0)  # int32 steps vectorise better than numba's default int64 ones
    for x in range(width):
        filled += np.int32(row[x] != 0)
    # The ends are searched a block of bytes at a time (the block test vectorises; a byte loop
    # over the empty part of the row does not).
    first = 0
    while first + _SCAN <= width and _row_empty(row[first:first + _SCAN]):
        first += _SCAN
    while row[first] == 0:
        first += 1
    last = width
    while last - _SCAN >= first and _row_empty(row[last - _SCAN:last]):
        last -= _SCAN
    last -= 1
    while row[last] == 0:
        last -= 1
    if box[1] < 0:
        box[1] = y
    box[3] = y + 1
    box[0] = min(box[0], first)
    box[2] = max(box[2], last + 1)
    box[4] += filled


@njit(cache=True, nogil=True, inline="always")
def _store_box(box, boxes, areas, m):
    areas[m] = box[4]
    if box[4]:
        for k in range(4):
            boxes[m, k] = box[k]
    else:
        for k in range(4):
            boxes[m, k] = 0


@njit(cache=True, nogil=True, inline="always")
def _row_empty(row):
    # max, not |=: numba widens `uint8 | uint8` to int64 and the loop no longer vectorises
    # (measured 5x slower on 200 MB of mask rows).
    seen = np.uint8(0)
    for x in range(row.shape[0]):
        seen = max(seen, row[x])
    return seen == 0


@njit(**_OPTS)
def lsj_nearest_masks(masks, sources, active, rows, inside_y, cols, inside_x, shifted, out, boxes, areas):
    """Nearest-neighbour jitter of instance masks: masks uint8 0/1 [B, N, H, W]; view v takes
    the masks of image sources[v] whose active[v, n] is set (others come out empty), row taps
    rows [V, OH], column taps cols [V, OW] (flip included), uint8 inside flags, shifted[v] >= 0
    when view v's column taps are shifted[v] + x and all inside (-1 otherwise); out uint8
    [V, N, OH, OW] MUST BE ZERO on entry: inactive masks and empty source rows are not written,
    so the work per object is about its box's rows. The boxes float32 [V*N, 4] and areas int64
    [V*N] of the output come out of the same pass."""
    views, slots, out_h, out_w = out.shape
    for t in prange(views * slots):
        v = t // slots
        n = t % slots
        box = np.array([out_w, -1, 0, 0, 0], dtype=np.int64)
        if active[v, n]:
            src = masks[sources[v], n]
            shift = shifted[v]
            for y in range(out_h):
                if not inside_y[v, y]:
                    continue
                row = src[rows[v, y]]
                if _row_empty(row):  # an empty source row (most of them): nothing to write
                    continue
                dst = out[v, n, y]
                if shift >= 0:  # the taps are cols[v, 0] + x, all inside: a plain copy
                    _copy(row[shift:shift + out_w], dst)
                else:
                    for x in range(out_w):
                        dst[x] = row[cols[v, x]] & inside_x[v, x]
                if not _row_empty(dst):
                    _track_row(dst, y, box)
        _store_box(box, boxes, areas, t)


@njit(**_OPTS)
def occlusion_boxes(receiving, pasted, rows_receiving, rows_pasted, alpha, updated, boxes, areas):
    """receiving uint8 [B, N, H, W], pasted uint8 [B, N', H, W] (0/1) -> alpha uint8 [B, H, W] =
    any over N' of pasted, updated [B, N, H, W] = receiving & ~alpha, and the boxes float32
    [B*N, 4] / areas int64 [B*N] of `updated`, in one pass per image. rows_receiving [B, N, 2] and
    rows_pasted [B, N', 2] (int64) bound the rows that can hold pixels of each mask (y1, y2; the
    whole frame when unknown): only those rows are read. `updated` MUST BE ZERO on entry."""
    batch, slots, height, width = receiving.shape
    for b in prange(batch):
        _fill(alpha[b].reshape(height * width), 0)
        for n in range(pasted.shape[1]):
            for y in range(rows_pasted[b, n, 0], rows_pasted[b, n, 1]):
                src = pasted[b, n, y]
                a = alpha[b, y]
                for x in range(width):
                    a[x] |= src[x]
        for n in range(slots):
            box = np.array([width, -1, 0, 0, 0], dtype=np.int64)
            for y in range(rows_receiving[b, n, 0], rows_receiving[b, n, 1]):
                src = receiving[b, n, y]
                if _row_empty(src):
                    continue
                dst = updated[b, n, y]
                a = alpha[b, y]
                for x in range(width):
                    dst[x] = src[x] & (a[x] ^ 1)
                if not _row_empty(dst):
                    _track_row(dst, y, box)
            _store_box(box, boxes, areas, b * slots + n)


@njit(**_OPTS)
def alpha_blend(receiving, pasted, alpha, out):
    """float32 [B, C, P] receiving * (1 - alpha) + pasted * alpha with alpha float32 [B, P],
    in the oracle's operation order (one rounding per operation)."""
    batch, channels, pixels = receiving.shape
    blocks = (pixels + _CHUNK - 1) // _CHUNK
    for t in prange(batch * channels * blocks):
        b = t // (channels * blocks)
        c = (t // blocks) % channels
        start = (t % blocks) * _CHUNK
        stop = min(start + _CHUNK, pixels)
        r = receiving[b, c, start:stop]
        p = pasted[b, c, start:stop]
        a = alpha[b, start:stop]
        dst = out[b, c, start:stop]
        for i in range(stop - start):
            dst[i] = r[i] * (ONE - a[i]) + p[i] * a[i]


def _store_like(value, like):
    """float32 `value` as an element of array `like`: uint8 rounded and saturated (`_to_u8`),
    float32 as is."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_store_like, inline="always")
def _store_like_impl(value, like):
    if isinstance(like.dtype, types.Integer):
        return lambda value, like: _to_u8(value)
    return lambda value, like: np.float32(value)


@njit(cache=True, nogil=True, inline="always")
def _view_value(image, row_inside, col_inside, plain, x, r0, r1, a, b, c0, c1, w):
    """One output pixel of an LSJ view, as `lsj_bilinear` computes it (float32)."""
    if not (row_inside and col_inside):
        return ZERO
    if plain >= 0:
        return np.float32(image[r0, plain + x])
    w0 = ONE - w
    upper = w0 * np.float32(image[r0, c0]) + w * np.float32(image[r0, c1])
    lower = w0 * np.float32(image[r1, c0]) + w * np.float32(image[r1, c1])
    return a * upper + b * lower


@njit(**_OPTS)
def lsj_paste_blend(images, sources, rows0, rows1, wy, inside_y, cols0, cols1, wx, inside_x, copy_cols,
                    alpha, skip, out):
    """`lsj_bilinear` of views i and batch + i, `alpha_blend` of the two and the cast to out's
    dtype in one pass: out[i] = cast(view_i * (1 - alpha[i]) + view_{B+i} * alpha[i]), without
    the float32 images of the 2B views. out uint8 (rounded half to even, saturated) or float32
    [B, C, OH, OW]; alpha float32 [B, OH, OW]. skip (uint8 images, whose views are finite and
    >= 0): where alpha is 0 or 1 the blend is exactly one view, so only that one is computed."""
    batch, channels, out_h, out_w = out.shape
    for t in prange(batch * out_h):
        i = t // out_h
        y = t % out_h
        p = batch + i
        al = alpha[i, y]
        b_r = wy[i, y]
        a_r = ONE - b_r
        b_p = wy[p, y]
        a_p = ONE - b_p
        in_r = inside_y[i, y] != 0
        in_p = inside_y[p, y] != 0
        r0_r = rows0[i, y]
        r1_r = rows1[i, y]
        r0_p = rows0[p, y]
        r1_p = rows1[p, y]
        plain_r = copy_cols[i] if b_r == ZERO else -1
        plain_p = copy_cols[p] if b_p == ZERO else -1
        # Both rows plain copies and a hard alpha row (no jitter, hard blend): each pixel is one
        # source byte, a select that vectorises.
        select = skip and in_r and in_p and plain_r >= 0 and plain_p >= 0
        if select:
            for x in range(out_w):
                if al[x] != ZERO and al[x] != ONE:
                    select = False
                    break
        for c in range(channels):
            dst = out[i, c, y]
            img_r = images[sources[i], c]
            img_p = images[sources[p], c]
            if select:
                row_r = img_r[r0_r, plain_r:plain_r + out_w]
                row_p = img_p[r0_p, plain_p:plain_p + out_w]
                for x in range(out_w):
                    dst[x] = row_p[x] if al[x] != ZERO else row_r[x]
                continue
            for x in range(out_w):
                a = al[x]
                if skip and a == ZERO:
                    value = _view_value(img_r, in_r, inside_x[i, x], plain_r, x, r0_r, r1_r, a_r, b_r,
                                        cols0[i, x], cols1[i, x], wx[i, x])
                elif skip and a == ONE:
                    value = _view_value(img_p, in_p, inside_x[p, x], plain_p, x, r0_p, r1_p, a_p, b_p,
                                        cols0[p, x], cols1[p, x], wx[p, x])
                else:
                    r = _view_value(img_r, in_r, inside_x[i, x], plain_r, x, r0_r, r1_r, a_r, b_r,
                                    cols0[i, x], cols1[i, x], wx[i, x])
                    q = _view_value(img_p, in_p, inside_x[p, x], plain_p, x, r0_p, r1_p, a_p, b_p,
                                    cols0[p, x], cols1[p, x], wx[p, x])
                    value = r * (ONE - a) + q * a
                dst[x] = _store_like(value, dst)


@njit(cache=True, nogil=True, inline="always")
def _jitter_row(src, v, y, rows, inside_y, cols, inside_x, shift, dst):
    """Row y of view v of one mask (src uint8 0/1 [H, W], taps as in `lsj_nearest_masks`) into
    dst [OW]; returns False, writing nothing, when the row is known empty (outside the image or
    an empty source row)."""
    if not inside_y[v, y]:
        return False
    row = src[rows[v, y]]
    if _row_empty(row):
        return False
    if shift >= 0:
        _copy(row[shift:shift + dst.shape[0]], dst)
    else:
        for x in range(dst.shape[0]):
            dst[x] = row[cols[v, x]] & inside_x[v, x]
    return True


@njit(cache=True, nogil=True, inline="always")
def _clear_where(dst, alpha_row):
    """dst &= ~alpha_row for 0/1 bytes, as a select (vectorises)."""
    for x in range(dst.shape[0]):
        dst[x] = 0 if alpha_row[x] else dst[x]


@njit(**_OPTS)
def lsj_mask_union(masks, sources, active, rows, inside_y, cols, inside_x, shifted, first_view, alpha, boxes, areas):
    """alpha uint8 [B, OH, OW] = union over n of the nearest-neighbour jitter of masks
    [sources[v], n] for the active[v, n] of views v = first_view + b, with the boxes float32
    [B*N, 4] / areas int64 [B*N] of each jittered mask, without storing the jittered masks (taps
    as in `lsj_nearest_masks`)."""
    batch, out_h, out_w = alpha.shape
    slots = active.shape[1]
    for b in prange(batch):
        v = first_view + b
        _fill(alpha[b].reshape(out_h * out_w), 0)
        row = np.empty(out_w, dtype=np.uint8)
        for n in range(slots):
            box = np.array([out_w, -1, 0, 0, 0], dtype=np.int64)
            if active[v, n]:
                src = masks[sources[v], n]
                for y in range(out_h):
                    if _jitter_row(src, v, y, rows, inside_y, cols, inside_x, shifted[v], row) and not _row_empty(row):
                        _track_row(row, y, box)
                        a = alpha[b, y]
                        for x in range(out_w):
                            a[x] = max(a[x], row[x])
            _store_box(box, boxes, areas, b * slots + n)


@njit(**_OPTS)
def lsj_occluded_boxes(masks, sources, active, rows, inside_y, cols, inside_x, shifted, alpha,
                       before_boxes, before_areas, after_boxes, after_areas):
    """For views v = b < B (the receiving views) and their active masks: the boxes / areas of the
    jittered mask (before) and of the jittered mask minus alpha[b] (after), [B*N, 4] / [B*N],
    without storing either mask."""
    batch, out_h, out_w = alpha.shape
    slots = active.shape[1]
    for t in prange(batch * slots):
        b = t // slots
        n = t % slots
        before = np.array([out_w, -1, 0, 0, 0], dtype=np.int64)
        after = np.array([out_w, -1, 0, 0, 0], dtype=np.int64)
        if active[b, n]:
            src = masks[sources[b], n]
            row = np.empty(out_w, dtype=np.uint8)
            for y in range(out_h):
                if _jitter_row(src, b, y, rows, inside_y, cols, inside_x, shifted[b], row) and not _row_empty(row):
                    _track_row(row, y, before)
                    _clear_where(row, alpha[b, y])
                    if not _row_empty(row):
                        _track_row(row, y, after)
        _store_box(before, before_boxes, before_areas, t)
        _store_box(after, after_boxes, after_areas, t)


@njit(**_OPTS)
def lsj_masks_write(masks, sources, rows, inside_y, cols, inside_x, shifted, alpha, views, slots, bounds,
                    occluded, out):
    """out[k] = the jitter of mask slots[k] of view views[k] (minus alpha[views[k]] where
    occluded[k]), for masks known to lie in the rows bounds[k] (float32 box x1, y1, x2, y2 of the
    result). out uint8 [K, OH, OW] MUST BE ZERO on entry: only those rows are written."""
    for k in prange(out.shape[0]):
        v = views[k]
        src = masks[sources[v], slots[k]]
        for y in range(np.int64(bounds[k, 1]), np.int64(bounds[k, 3])):
            dst = out[k, y]
            if _jitter_row(src, v, y, rows, inside_y, cols, inside_x, shifted[v], dst) and occluded[k]:
                _clear_where(dst, alpha[v, y])

# reassoc lets LLVM vectorise the sum of each row (scores agree with the PyTorch path to float
# rounding, never bit for bit; each term is still evaluated as written). A row (at most W terms,
# spread over the vector lanes) is summed in the maps' dtype, as torch sums the whole map, and
# the rows in float64: converting every term to float64 cost 25% of the kernel. error_model
# "numpy": the division needs no zero check (its denominator is at least eps).
@njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc"}, error_model="numpy")
def sage_shift_scores(g1, g2, shifts, solo, solo_totals, eps, scores):
    """SAGE score of every candidate shift: g1, g2 [B, H, W] (float32/float64), shifts int64
    [S, K, 2] (S = 1: shared by the batch, S = B: per sample) as (dy, dx); scores float64 [B, K].

    score = sum over the frame of T + (G1 - T) * G1 / max(G1 + T, eps), T = G2 shifted (zero
    outside the partner). Outside the overlap T = 0 and the term is G1 * G1 / max(G1, eps), the
    "solo" term, whose per-pixel values solo [B, H, W] and per-sample sums solo_totals [B]
    (float64) the caller computes once; each candidate then visits only its overlap rectangle
    and adds (term - solo) there. Rows are summed in the maps' dtype, the rows in float64."""
    batch, height, width = g1.shape
    shared = shifts.shape[0] == 1
    candidates = shifts.shape[1]
    for t in prange(batch * candidates):
        b = t // candidates
        k = t % candidates
        s = 0 if shared else b
        dy = shifts[s, k, 0]
        dx = shifts[s, k, 1]
        y0 = max(0, dy)
        y1 = min(height, height + dy)
        x0 = max(0, dx)
        x1 = min(width, width + dx)
        total = solo_totals[b]
        if x1 > x0:
            for y in range(y0, y1):
                own = g1[b, y, x0:x1]
                other = g2[b, y - dy, x0 - dx:x1 - dx]
                alone = solo[b, y, x0:x1]
                acc = eps - eps  # a row in the maps' dtype (no conversion per term), rows in float64
                for i in range(x1 - x0):
                    g = own[i]
                    p = other[i]
                    acc += (p + (g - p) * g / max(g + p, eps)) - alone[i]
                total += acc
        scores[b, k] = total


# OpenCV StaticSaliencyFineGrained (see fastmix/backends/pytorch/fine_grained_saliency.py for the
# derivation of each step); one image per work item, every step in OpenCV's arithmetic.
_NEIGHBOURHOODS = (12, 24, 48, 28, 56, 112)
_B2Y, _G2Y, _R2Y = 3735, 19235, 9798
_INV255 = np.float32(1.0 / 255.0)


@njit(cache=True, nogil=True, inline="always")
def _reflect101(i, n):
    if n == 1:
        return 0
    if i < 0:
        return 1
    if i >= n:
        return n - 2
    return i


@njit(cache=True, nogil=True)
def _blur3x3(src, rows, dst):
    """Bit-exact uint8 GaussianBlur(3x3, sigma 0), BORDER_REFLECT_101: int32 [H, W] -> dst."""
    height, width = src.shape
    for y in range(height):
        for x in range(width):
            rows[y, x] = src[y, _reflect101(x - 1, width)] + 2 * src[y, x] + src[y, _reflect101(x + 1, width)]
    for y in range(height):
        up = _reflect101(y - 1, height)
        down = _reflect101(y + 1, height)
        for x in range(width):
            dst[y, x] = (rows[up, x] + 2 * rows[y, x] + rows[down, x] + 8) >> 4


@njit(cache=True, nogil=True)
def grey_chw(image, grey):
    """uint8 [C, H, W] (C = 3: RGB, C = 1: grey) -> int32 [H, W]: OpenCV's fixed-point BGR2GRAY."""
    channels, height, width = image.shape
    for y in range(height):
        for x in range(width):
            if channels == 1:
                grey[y, x] = image[0, y, x]
            else:
                grey[y, x] = (np.int32(image[2, y, x]) * _B2Y + np.int32(image[1, y, x]) * _G2Y
                              + np.int32(image[0, y, x]) * _R2Y + (1 << 14)) >> 15


@njit(cache=True, nogil=True)
def grey_hwc(image, grey):
    """uint8 [H, W, C] (C = 3: RGB, C = 1: grey) -> int32 [H, W], as grey_chw (DALI's HWC images)."""
    height, width, channels = image.shape
    for y in range(height):
        for x in range(width):
            if channels == 1:
                grey[y, x] = image[y, x, 0]
            else:
                grey[y, x] = (np.int32(image[y, x, 2]) * _B2Y + np.int32(image[y, x, 1]) * _G2Y
                              + np.int32(image[y, x, 0]) * _R2Y + (1 << 14)) >> 15


@njit(cache=True, nogil=True)
def fine_grained_map(grey):
    """One image's saliency, in place: int32 [H, W] grey levels (grey_chw / grey_hwc) become
    OpenCV's uint8 map values 0..255 (saliency = value * float32(1/255); W <= 65793).

    The per-image core of fine_grained_saliency, also called by DALI's numba_function
    (fastmix.dali.numba_saliency), so both give the same maps."""
    height, width = grey.shape
    if height * width == 1:  # OpenCV's 0 / 0 surround mean: a 1x1 map is 0
        grey[0, 0] = 0
        return
    rows = np.empty((height, width), np.int32)
    once = np.empty((height, width), np.int32)
    _blur3x3(grey, rows, once)
    _blur3x3(once, rows, grey)
    integral = np.zeros((height + 1, width + 1), np.float32)
    for y in range(height):
        running = np.float32(0.0)  # exact: 255 * W <= 2^24 (the callers check)
        for x in range(width):
            running += np.float32(grey[y, x])
            integral[y + 1, x + 1] = integral[y, x + 1] + running
    sum_on = np.zeros((height, width), np.int32)
    sum_off = np.zeros((height, width), np.int32)
    for n in _NEIGHBOURHOODS:
        for y in range(height):
            y1 = max(y - n + 1, 0)
            y2 = min(y + n + 1, height)
            for x in range(width):
                x1 = max(x - n + 1, 0)
                x2 = min(x + n + 1, width)
                box = ((integral[y2, x2] + integral[y1, x1]) - integral[y2, x1]) - integral[y1, x2]
                g = np.float32(grey[y, x])
                box = (box - g) / np.float32((y2 - y1) * (x2 - x1) - 1)
                t = np.int32(g - box)
                # Both updated, by 0 on the other side: branch-free, so LLVM vectorises the row.
                sum_on[y, x] += (t if t > 0 else 0) & 255
                sum_off[y, x] += (-t if t < 0 else 0) & 255
    max_on = 0
    max_off = 0
    for y in range(height):
        for x in range(width):
            max_on = max(max_on, sum_on[y, x])
            max_off = max(max_off, sum_off[y, x])
    top = 0
    for y in range(height):
        for x in range(width):
            on = (255 * sum_on[y, x]) // max_on if max_on > 0 else 0
            off = (255 * sum_off[y, x]) // max_off if max_off > 0 else 0
            sum_on[y, x] = on
            sum_off[y, x] = off
            top = max(top, max(on, off))
    for y in range(height):  # grey is no longer read: it takes the map
        for x in range(width):
            grey[y, x] = ((255 * (sum_on[y, x] + sum_off[y, x])) // top) & 255 if top > 0 else 0


@njit(parallel=True, cache=True, nogil=True)
def fine_grained_saliency(images, out):
    """uint8 [B, C, H, W] (C = 3: RGB, C = 1: grey) -> float32 [B, H, W], bit-identical to
    cv2.saliency.StaticSaliencyFineGrained on the BGR image."""
    batch, _, height, width = images.shape
    for b in prange(batch):
        grey = np.empty((height, width), np.int32)
        grey_chw(images[b], grey)
        fine_grained_map(grey)
        for y in range(height):
            for x in range(width):
                out[b, y, x] = np.float32(grey[y, x]) * _INV255
