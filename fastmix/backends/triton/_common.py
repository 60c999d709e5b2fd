"""@triton.jit helpers shared by the kernel modules."""
import triton
import triton.language as tl


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
        values = tl.minimum(tl.maximum(round_half_even(values), 0.0), 255.0)
    return values.to(out_ptr.dtype.element_ty)


@triton.jit
def pixel_tile(tile, height, width, BLOCK: tl.constexpr):
    """Pixels tile*BLOCK .. tile*BLOCK+BLOCK-1 of an H x W frame: (pixel, row, col, in-frame)."""
    pixel = tile * BLOCK + tl.arange(0, BLOCK)
    valid = pixel < height * width
    row = pixel // width
    col = pixel - row * width
    return pixel, row, col, valid


@triton.jit
def plane_offset(row, col, pixel, stride_h, stride_w, DENSE_ROWS: tl.constexpr):
    """Offset of pixels (row, col) = divmod(pixel, W) within one channel plane. When rows are
    stored back to back (stride_h == W * stride_w: NCHW and channels_last) it is pixel * stride_w,
    which for NCHW (stride_w == 1) is a contiguous range the compiler turns into vector loads."""
    if DENSE_ROWS:
        offset = pixel * stride_w
    else:
        offset = row * stride_h + col * stride_w
    return offset
