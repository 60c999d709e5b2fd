"""Gaussian smoothing of saliency maps, as torchvision.transforms.GaussianBlur computes it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel1d(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """linspace(-(k-1)/2, (k-1)/2, k), exp(-x^2 / 2 sigma^2), normalised to sum 1."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, dtype=dtype, device=device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_smooth(maps: torch.Tensor, kernel_size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Smooth [B, H, W] maps with a reflect-padded kernel_size x kernel_size Gaussian.

    The 2-D kernel is the outer product of the 1-D kernel with itself, applied as one conv2d,
    which is what torchvision does (SAGE's reference calls GaussianBlur((5, 5), 1.0)).
    kernel_size == 1 returns a copy.
    """
    if kernel_size == 1:
        return maps.clone()
    pad = kernel_size // 2
    height, width = maps.shape[-2:]
    if pad >= height or pad >= width:
        raise ValueError(f"reflect padding of {pad} px needs maps larger than {pad} px in both "
                         f"dimensions, got {height}x{width}; use a smaller kernel_size (1 disables smoothing)")
    k1 = gaussian_kernel1d(kernel_size, sigma, maps.dtype, maps.device)
    kernel = torch.outer(k1, k1)[None, None]
    padded = F.pad(maps[:, None], (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, kernel)[:, 0]
