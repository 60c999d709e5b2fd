"""OpenCV's ``StaticSaliencyFineGrained`` in batched, vectorised PyTorch.

SaliencyMix picks its paste box at the argmax of
``cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(img)[1]``. That is
Montabone & Soto (2010), as implemented in opencv_contrib
``modules/saliency/src/staticSaliencyFineGrained.cpp``. OpenCV runs it on the CPU, one image
at a time. This module reproduces it bit for bit on uint8 input, for a whole batch at once
and on any device. The steps are:

* ``cvtColor(BGR2GRAY)`` in fixed point;
* two bit-exact 3x3 ``GaussianBlur`` passes (BORDER_REFLECT_101);
* a float32 integral image;
* the centre-surround "on"/"off" maps at 6 scales (clamped boxes, ``area - 1`` divisor,
  C-style truncation to uchar);
* ``mixScales`` and ``mixOnOff``, with their float/double arithmetic and their
  0/0 -> NaN -> 0 cases;
* OpenCV's final ``uint8 * float32(1/255)``.

The reference SaliencyMix code fed the *normalised float* tensor to OpenCV. That is a bug:
OpenCV then reads the bytes of the float buffer as uchar (see ``shared/spec/algorithms.md``
section 4). We implement the intended semantics instead: saliency of the uint8 image.
"""
from __future__ import annotations

import torch

__all__ = ["rgb_to_grey_uint8", "fine_grained_saliency"]

# Neighbourhood half-sizes used by OpenCV: {3*4, 3*4*2, 3*4*2*2, 7*4, 7*4*2, 7*4*2*2}.
NEIGHBOURHOODS = (12, 24, 48, 28, 56, 112)

# Fixed-point BGR2GRAY coefficients of OpenCV >= 4 for uchar (BY15, GY15, RY15, gray_shift = 15 in
# imgproc/src/color.hpp; they sum to 2^15). OpenCV 3.x used Q14 1868/9617/4899, which differs on
# 43864 of the 2^24 colours.
_B2Y, _G2Y, _R2Y, _GRAY_SHIFT = 3735, 19235, 9798, 15

# Largest width for which OpenCV's float32 row running sum of uchar stays exact (255*W <= 2^24).
# Beyond it the row sums themselves would be rounded, in an order we do not emulate.
MAX_WIDTH = (1 << 24) // 255


def _check_uint8(images: torch.Tensor, name: str) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(
            f"{name} must be uint8 (0..255), got {images.dtype}; convert float images yourself, "
            "e.g. (x * 255).round().clamp(0, 255).to(torch.uint8) for [0, 1] data"
        )


def _check_spatial(images: torch.Tensor, name: str) -> None:
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B == 0)")
    h, w = images.shape[-2], images.shape[-1]
    if h == 0 or w == 0:
        raise ValueError(f"{name} has an empty spatial size {(h, w)}")


def _grey_int32(images: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] RGB or [B,1,H,W] uint8 -> int32 [B,H,W] grey (OpenCV BGR2GRAY fixed point)."""
    if images.shape[1] == 1:
        return images[:, 0].to(torch.int32)
    x = images.to(torch.int32)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return (b * _B2Y + g * _G2Y + r * _R2Y + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT


def rgb_to_grey_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] RGB (channel 0 = red) or [B,1,H,W] -> uint8 [B,H,W] grey.

    Equal to ``cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)`` on the same pixels in BGR order:
    ``(3735*B + 19235*G + 9798*R + 2**14) >> 15``. Grey input is returned as a copy.
    """
    _check_uint8(images, "images")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [B, 3, H, W] (RGB) or [B, 1, H, W] (grey), got shape {tuple(images.shape)}")
    _check_spatial(images, "images")
    if images.shape[1] == 1:
        return images[:, 0].clone()
    return _grey_int32(images).to(torch.uint8)


def _pad_reflect101(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Pad one pixel on both sides of ``dim`` with BORDER_REFLECT_101 (length 1: the pixel itself)."""
    n = t.shape[dim]
    left = t.narrow(dim, 1 if n > 1 else 0, 1)
    right = t.narrow(dim, n - 2 if n > 1 else 0, 1)
    return torch.cat([left, t, right], dim)


def _gaussian_blur_3x3(grey: torch.Tensor) -> torch.Tensor:
    """OpenCV's bit-exact ``GaussianBlur(ksize=3, sigma=0)`` on uint8, on an int32 [B,H,W] tensor.

    The fixed-point kernel is [64, 128, 64] / 256 per axis. The row pass is exact in Q8, the
    column pass is exact in Q16, and the result is rounded half up: ``(S + 8) >> 4``, where
    S is the [1,2,1] x [1,2,1] weighted sum.
    """
    p = _pad_reflect101(grey, 2)
    rows = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]
    p = _pad_reflect101(rows, 1)
    s = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    return (s + 8) >> 4


def _integral_float32(grey: torch.Tensor) -> torch.Tensor:
    """``cv2.integral(grey, sdepth=CV_32F)``: [B,H,W] int32 -> float32 [B,H+1,W+1].

    OpenCV keeps a running row sum (exact while 255*W <= 2^24). It then adds that sum to the
    previous integral row in float32: ``I[y+1] = fl32(I[y] + rowsum[y])``. While every value
    is at most 2^24 that is exact integer arithmetic, so an int64 cumsum gives it. Further down
    (large images), those float32 additions round, and we replay them row by row.
    """
    b, h, w = grey.shape
    rowsum = torch.cumsum(grey, dim=2, dtype=torch.int64)
    out = torch.zeros((b, h + 1, w + 1), dtype=torch.float32, device=grey.device)
    exact_rows = min(h, (1 << 24) // (255 * w))
    out[:, 1 : exact_rows + 1, 1:] = torch.cumsum(rowsum[:, :exact_rows], dim=1).to(torch.float32)
    if exact_rows < h:
        rowsum_f = rowsum.to(torch.float32)  # exact: 255*W <= 2^24
        for y in range(exact_rows, h):
            torch.add(out[:, y, 1:], rowsum_f[:, y], out=out[:, y + 1, 1:])
    return out


def _on_off_scale(integral: torch.Tensor, grey_f: torch.Tensor, neighbourhood: int):
    """``getIntensityScaled`` for one neighbourhood n: uint8-valued int32 on/off maps [B,H,W].

    getMean's box corners are ``P1 = p - n + 1`` and ``P2 = p + n + 1``, clamped to the integral
    image [0, size]. Replicate padding by n-1 before and n+1 after turns those clamped gathers
    into plain slices: P1 -> padded[p], P2 -> padded[p + 2n].
    """
    h, w = grey_f.shape[-2:]
    n = neighbourhood
    padded = torch.nn.functional.pad(integral[:, None], (n - 1, n + 1, n - 1, n + 1), mode="replicate")[:, 0]
    lo_y, hi_y = slice(0, h), slice(2 * n, 2 * n + h)
    lo_x, hi_x = slice(0, w), slice(2 * n, 2 * n + w)
    # float32, evaluated left to right exactly as the C++: ((I22 + I11) - I21) - I12
    box = padded[:, hi_y, hi_x] + padded[:, lo_y, lo_x]
    box -= padded[:, hi_y, lo_x]
    box -= padded[:, lo_y, hi_x]
    rows = torch.arange(h, device=grey_f.device)
    cols = torch.arange(w, device=grey_f.device)
    box_h = (rows + n + 1).clamp(max=h) - (rows - n + 1).clamp(min=0)
    box_w = (cols + n + 1).clamp(max=w) - (cols - n + 1).clamp(min=0)
    denom = (box_h[:, None] * box_w[None, :] - 1).to(torch.float32)  # >= 1 unless the image is 1x1
    box -= grey_f
    box /= denom  # the surround mean
    mean_on = grey_f - box  # and mean_off = box - grey_f == -mean_on exactly
    # (uchar)meanOn if meanOn > 0 else 0: truncate toward zero, keep the low byte.
    t = mean_on.to(torch.int32)
    return t.clamp(min=0) & 255, (-t).clamp(min=0) & 255


def _rescale_to_255(total: torch.Tensor) -> torch.Tensor:
    """mixScales' per-image rescale ``(uchar)(255. * (float)(v / (float)max))``; max 0 -> 0.

    The C++ divides in float32 and multiplies by 255 in (exact) double. For
    0 <= v <= max <= 6*255 this truncates to ``(255 * v) // max`` for every pair, a fact the
    tests check exhaustively. So integer arithmetic reproduces it on any device (no float64
    needed). For max == 0, 0/0 -> NaN -> (uchar) 0.
    """
    vmax = total.amax(dim=(1, 2), keepdim=True)
    return torch.where(vmax > 0, torch.div(255 * total, vmax.clamp(min=1), rounding_mode="floor"), 0)


def fine_grained_saliency(images: torch.Tensor) -> torch.Tensor:
    """Batched ``cv2.saliency.StaticSaliencyFineGrained`` on uint8 images.

    Args:
        images: uint8 ``[B, 3, H, W]`` RGB (channel 0 = red), ``[B, 1, H, W]`` grey or
            ``[B, H, W]`` grey, on any device. It is not modified.

    Returns:
        float32 ``[B, H, W]`` in [0, 1], on the same device. Each map is bit-identical to
        ``StaticSaliencyFineGrained_create().computeSaliency(bgr_hwc)[1]`` for that image.
        The map is 0 everywhere for constant images and for 1x1 images, as in OpenCV.

    Raises:
        TypeError: the input is not a uint8 tensor.
        ValueError: the input has the wrong rank or channel count, an empty batch or an empty
            spatial size, or is wider than 65793 pixels (there OpenCV's float32 row sums
            round, which is not emulated).
    """
    _check_uint8(images, "images")
    if images.dim() == 3:
        images = images[:, None]
    elif images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            "images must be [B, 3, H, W] (RGB), [B, 1, H, W] or [B, H, W] (grey), "
            f"got shape {tuple(images.shape)}"
        )
    _check_spatial(images, "images")
    if images.shape[-1] > MAX_WIDTH:
        raise ValueError(f"width {images.shape[-1]} exceeds {MAX_WIDTH}: OpenCV's float32 row sums are inexact there")

    b, _, h, w = images.shape
    if h == 1 and w == 1:
        # OpenCV divides (sum - centre) by area - 1 = 0: NaN, so on = off = 0 and the map is 0.
        return torch.zeros((b, 1, 1), dtype=torch.float32, device=images.device)

    grey = _grey_int32(images)
    grey = _gaussian_blur_3x3(_gaussian_blur_3x3(grey))
    integral = _integral_float32(grey)
    grey_f = grey.to(torch.float32)

    sum_on = torch.zeros_like(grey)
    sum_off = torch.zeros_like(grey)
    for n in NEIGHBOURHOODS:
        on, off = _on_off_scale(integral, grey_f, n)
        sum_on += on
        sum_off += off

    # mixScales: uint16 sums (<= 6*255, no overflow), each rescaled by its own maximum.
    on = _rescale_to_255(sum_on)
    off = _rescale_to_255(sum_off)

    # mixOnOff: (uchar)(255. * (on + off) / (float)max(maxOn, maxOff)). The double quotient is
    # exact when integral and otherwise at least 1/255 from one, so integer floor division
    # matches. The cast keeps the low byte (on + off can reach 510); max 0 -> NaN -> 0.
    vmax = torch.maximum(on.amax(dim=(1, 2), keepdim=True), off.amax(dim=(1, 2), keepdim=True))
    mixed = torch.where(vmax > 0, torch.div(255 * (on + off), vmax.clamp(min=1), rounding_mode="floor") & 255, 0)

    # OpenCV's convertTo(CV_32F, 1/255): v * float32(1/255), not v / 255 (they differ for 126 values).
    scale = torch.full((), 1.0 / 255.0, dtype=torch.float32, device=mixed.device)  # no host-to-device copy
    return mixed.to(torch.float32) * scale
