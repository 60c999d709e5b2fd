"""@triton.jit helpers shared by the kernel modules.

NaN semantics: NaN propagates, as on the PyTorch path (torch.clamp / torch.maximum) and under
the interpreter (numpy). Compiled `tl.maximum` / `tl.minimum` return the non-NaN operand
(fmaxf), so float clamps go through `max_nan` / `min_nan`; the compile proof
(fastmix/backends/triton/aot.py) rejects any non-propagating float min/max in the PTX. A NaN
written as uint8 becomes 0 (what the GPU's float->integer conversion does; numpy and torch leave
it undefined), so the kernels map it to 0 explicitly.
"""
import triton
import triton.language as tl


@triton.jit
def max_nan(a, b):
    """max(a, b), NaN if either is NaN."""
    return tl.where((a > b) | (a != a), a, b)


@triton.jit
def min_nan(a, b):
    """min(a, b), NaN if either is NaN."""
    return tl.where((a < b) | (a != a), a, b)


@triton.jit
def round_half_even(values):
    """Round to the nearest integer, ties to even (what torch.round does)."""
    rounded = tl.floor(values + 0.5)
    tie = (rounded - values) == 0.5
    odd = (rounded - 2.0 * tl.floor(rounded * 0.5)) != 0.0
    return tl.where(tie & odd, rounded - 1.0, rounded)


@triton.jit
def to_output(values, out_ptr, OUT_IS_UINT8: tl.constexpr):
    """Cast computed values to the output's element type; uint8 is rounded and saturated."""
    if OUT_IS_UINT8:
        saturated = min_nan(max_nan(round_half_even(values), 0.0), 255.0)
        values = tl.where(saturated != saturated, 0.0, saturated)
    return values.to(out_ptr.dtype.element_ty)


@triton.jit
def sample_and_chunk(batch):
    """(sample, chunk) of this program on a 1-D grid of batch * chunks programs, sample fastest:
    the program reading a partner's chunk runs next to the one reading it as its own sample, so
    the second read comes from L2. A 1-D grid has no 65,535 limit (CUDA's limit on axes 1, 2)."""
    pid = tl.program_id(0)
    b = pid % batch
    chunk = pid // batch
    return b.to(tl.int64), chunk


@triton.jit
def element_tile(chunk, channels, width, plane, sample_numel,
                 CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    """Elements of one chunk of a dense sample: (offset in the sample, channel, pixel, row, col,
    valid). channels_last: the sample is one contiguous range of H*W*C elements, cut in BLOCK
    pieces. NCHW: chunk = tile * C + c (channel fastest, so the C programs of one pixel tile run
    together and share per-pixel data in L2), a contiguous tile of one channel plane."""
    lanes = tl.arange(0, BLOCK)
    if CHANNELS_LAST:
        offset = chunk * BLOCK + lanes
        valid = offset < sample_numel
        pixel = offset // channels
        channel = offset - pixel * channels
    else:
        tile = chunk // channels
        channel = tl.zeros_like(lanes) + (chunk - tile * channels)  # a vector in both layouts
        pixel = tile * BLOCK + lanes
        valid = pixel < plane
        offset = channel * plane + pixel
    row = pixel // width
    col = pixel - row * width
    return offset, channel, pixel, row, col, valid


@triton.jit
def strided_offset(channel, row, col, sc, sh, sw):
    """Offset of (channel, row, col) in a sample with strides (sc, sh, sw)."""
    return channel * sc + row * sh + col * sw


@triton.jit
def pixel_tile(tile, pixels, BLOCK: tl.constexpr):
    """Pixels tile*BLOCK .. tile*BLOCK+BLOCK-1 of a map of `pixels` pixels: (pixel, in-map)."""
    pixel = tile * BLOCK + tl.arange(0, BLOCK)
    return pixel, pixel < pixels
