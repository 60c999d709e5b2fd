"""SAGE shift-score search: scores [B, K] of candidate shifts without materialising shifted maps.

Score of shift (dy, dx) for sample b (algorithms.md 1.4b), with T = G2[b] shifted, zero fill:
    score = sum over the H x W frame of f(G1, T),  f(g, t) = t + (g - t) * g / max(g + t, 1e-16).
Outside the overlap of the frame and the shifted partner T = 0, so the score splits into a
per-sample constant and an overlap-only sum:
    score = base[b] + sum over the overlap of (f(g, t) - f(g, 0)),
    base[b] = sum over the frame of f(g, 0) = g * g / max(g, 1e-16),
    f(g, t) - f(g, 0) = t * (t - g) / max(g + t, 1e-16)   (exact for g > 1e-16; otherwise the two
    differ by less than t <= 1e-16 per pixel).
`_frame_base_kernel` computes base (partial sums per pixel tile, summed afterwards). `_scores_kernel` runs one program
per (sample, block of `per_program` consecutive candidates); for each candidate it loops over
the overlap rectangle [max(0, dy), min(H, H + dy)) x [max(0, dx), min(W, W + dx)) in BH x BW
tiles, loading G1 and the shifted G2 (both per-sample maps stay in L1/L2) and accumulating in
registers. Work per candidate is its overlap area (H - |dy|)(W - |dx|) rounded up to tiles,
about H W / 4 on average over all shifts; memory is the [B, K] scores and the [B] bases, never
B x K x H x W. Shared ([K, 2]), per-sample ([B, K, 2]) and exhaustive candidate sets all go
through the same kernel (a shared set is a stride-0 view). Programs are ordered sample-major so
the programs reading one sample's maps run together.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _launch
from ._common import max_nan, pixel_tile

MASK_EPS = 1e-16
PROGRAM_PIXELS = 16384   # small frames: several candidates per program, about this many pixels
MAX_PER_PROGRAM = 64
TILE_LANES = 1024


@triton.jit(do_not_specialize=["batch", "n_tiles"])
def _frame_base_kernel(g1_ptr, partial_ptr, batch, pixels, n_tiles, EPS: tl.constexpr, ACC: tl.constexpr,
                       BLOCK: tl.constexpr):
    """Partial sums of base[b] over one pixel tile (1-D grid of batch * tiles, sample fastest)."""
    pid = tl.program_id(0)
    b = (pid % batch).to(tl.int64)
    tile = pid // batch
    pixel, valid = pixel_tile(tile, pixels, BLOCK)
    g = tl.load(g1_ptr + b * pixels + pixel, mask=valid, other=0).to(ACC)
    tl.store(partial_ptr + b * n_tiles + tile, tl.sum(g * g / max_nan(g, EPS), axis=0))


# Width stays specialised (a multiple of 16 lets G1's rows load as aligned vectors); the other
# sizes and the candidates' strides only index.
@triton.jit(do_not_specialize=["height", "candidates", "ssb", "ssk", "ssd", "per_program", "n_blocks"])
def _scores_kernel(g1_ptr, g2_ptr, base_ptr, shifts_ptr, scores_ptr, height, width, candidates,
                   ssb, ssk, ssd, per_program, n_blocks,
                   EPS: tl.constexpr, ACC: tl.constexpr, BH: tl.constexpr, BW: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // n_blocks).to(tl.int64)
    first = (pid % n_blocks) * per_program
    # 64-bit sample bases, 32-bit offsets inside the maps: half the registers of 64-bit pointers
    # per lane.
    g1_sample = g1_ptr + b * height * width
    g2_sample = g2_ptr + b * height * width
    base = tl.load(base_ptr + b)
    tile_rows = tl.arange(0, BH)[:, None]
    tile_cols = tl.arange(0, BW)[None, :]
    for j in range(per_program):
        k = tl.minimum(first + j, candidates - 1)
        shift_ptr = shifts_ptr + b * ssb + k * ssk
        dy = tl.load(shift_ptr).to(tl.int32)
        dx = tl.load(shift_ptr + ssd).to(tl.int32)
        row_end = tl.minimum(height, height + dy)
        col_start = tl.maximum(dx, 0)
        col_end = tl.minimum(width, width + dx)
        # Column tiles start at multiples of BW, so G1's rows load as aligned vectors when the
        # width is a multiple of 16; the partner's shifted loads cannot be aligned.
        first_col = (col_start // BW) * BW
        gain = tl.zeros([BH, BW], dtype=ACC)
        for row0 in range(tl.maximum(dy, 0), row_end, BH):
            rows = row0 + tile_rows
            row_offset = rows * width
            for col0 in range(first_col, col_end, BW):
                cols = col0 + tile_cols
                inside = (rows < row_end) & (cols >= col_start) & (cols < col_end)
                g = tl.load(g1_sample + row_offset + cols, mask=inside, other=0).to(ACC)
                t = tl.load(g2_sample + (row_offset - dy * width) + (cols - dx), mask=inside, other=0).to(ACC)
                gain += t * (t - g) / max_nan(g + t, EPS)
        score = base + tl.sum(tl.sum(gain, axis=1), axis=0)
        tl.store(scores_ptr + b * candidates + first + j, score, mask=first + j < candidates)


def tile_shape(height: int, width: int):
    """BH x BW tile of at most TILE_LANES lanes, at most 32 columns wide."""
    tile_w = min(triton.next_power_of_2(width), 32)
    tile_h = min(triton.next_power_of_2(height), max(1, TILE_LANES // tile_w))
    return tile_h, tile_w


def shift_scores(g1: torch.Tensor, g2: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Scores [B, K] of shared ([K, 2]) or per-sample ([B, K, 2]) int64 (dy, dx) candidates."""
    _launch.check_launchable(_scores_kernel, g1, g2, shifts)
    batch, height, width = g1.shape
    g1, g2 = g1.contiguous(), g2.contiguous()
    if shifts.dim() == 2:
        shifts = shifts.unsqueeze(0).expand(batch, -1, -1)
    candidates = shifts.shape[1]
    if g1.numel() == 0:
        return _launch.empty((batch, candidates), g1.dtype, g1.device)
    acc = _launch.accumulator(g1.dtype)
    pixels = height * width

    block = _launch.pixel_block(pixels)
    n_tiles = triton.cdiv(pixels, block)
    partials = _launch.empty((batch, n_tiles), g1.dtype, g1.device)
    _frame_base_kernel[_launch.sample_grid(batch, n_tiles)](g1, partials, batch, pixels, n_tiles, EPS=MASK_EPS,
                                                            ACC=acc, BLOCK=block, num_warps=_launch.warps_for(block))
    base = partials[:, 0] if n_tiles == 1 else partials.sum(dim=1)

    per_program = max(1, min(MAX_PER_PROGRAM, PROGRAM_PIXELS // pixels, candidates))
    n_blocks = triton.cdiv(candidates, per_program)
    tile_h, tile_w = tile_shape(height, width)
    scores = _launch.empty((batch, candidates), g1.dtype, g1.device)
    _scores_kernel[_launch.sample_grid(batch, n_blocks)](g1, g2, base, shifts, scores, height, width, candidates,
                                        *shifts.stride(), per_program, n_blocks,
                                        EPS=MASK_EPS, ACC=acc, BH=tile_h, BW=tile_w,
                                        num_warps=_launch.warps_for(tile_h * tile_w))
    return scores
