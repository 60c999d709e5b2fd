"""Every random choice of Copy-Paste, drawn in one place from an explicit torch.Generator.

:func:`draw_copy_paste_params` returns a :class:`CopyPasteParams`; ``copy_paste(params=...)``
replays it exactly, which is how the kernels are tested with injected parameters. Draw order
(stable, so a seed always gives the same augmentation): the pairing ``perm``; the receiving
views' flips, scales, offsets; the pasted views' flips, scales, offsets; then for each pair
i = 0..B-1 the number of pasted objects and which ones.

Pairing: an image never pastes into itself. The drawn pairing is a derangement (perm[i] != i,
uniform over all of them, as every reference pastes from a different image; ``torch.randperm``
would pair 1 image in 8 with itself at B = 8, and half the batches of B = 2 entirely). A batch of
one image has no partner: perm = [0] and nothing is pasted (the image is only jittered). The same
holds for any self-pair of an injected pairing (e.g. DALI's ``fn.batch_permutation``, which
ignores ``no_fixed_points`` at batch size 1): nothing is pasted where perm[i] == i.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import params as rng
from .._checks import check_perm

__all__ = ["JitterParams", "CopyPasteParams", "draw_copy_paste_params", "draw_jitter",
           "lsj_scaled_size", "check_copy_paste_params"]


@dataclass(frozen=True)
class JitterParams:
    """Large-scale jittering of one view per pair (CPU tensors).

    scale:  float64 [B], the factor s ~ U(scale_range) of the TensorFlow reference: the target
            is round(s * output_size), the aspect ratio is kept (see :func:`lsj_scaled_size`).
    offset: int64 [B, 2], (rows, cols) of the output window inside the resized image; 0 where
            the resized image is smaller than the output (it is zero-padded bottom/right).
    flip:   bool [B], horizontal flip of the original image before resizing.
    """

    scale: torch.Tensor
    offset: torch.Tensor
    flip: torch.Tensor


@dataclass(frozen=True)
class CopyPasteParams:
    """All random choices of one ``copy_paste`` call (CPU tensors).

    perm:      int64 [B], image i receives objects from image perm[i].
    receiving: jitter of image i as the receiving (background) image of pair i.
    pasted:    jitter of image perm[i] as the source of the objects pasted into image i.
    selected:  bool [B, Nmax], selected[i, n]: object n of image perm[i] is pasted into image i.
    """

    perm: torch.Tensor
    receiving: JitterParams
    pasted: JitterParams
    selected: torch.Tensor

    def selected_indices(self) -> list[torch.Tensor]:
        """Per pair i, int64 indices of the objects of image perm[i] that were pasted."""
        return [row.nonzero().flatten() for row in self.selected]


def lsj_scaled_size(scale: torch.Tensor, image_sizes: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """int64 [B, 2] resized (rows, cols), as TensorFlow's ``resize_and_crop_image``.

    target = round(s * output); ratio = min(target_h / h, target_w / w); size = round(image * ratio),
    at least 1 pixel. float64 with round-half-to-even.
    """
    out = torch.tensor(output_size, dtype=torch.float64)
    target = torch.round(scale.to(torch.float64)[:, None] * out)
    sizes = image_sizes.to(torch.float64)
    ratio = (target / sizes).amin(dim=1, keepdim=True)
    return torch.round(sizes * ratio).clamp_min(1).to(torch.int64)


def _max_offset(scaled: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    return (scaled - torch.tensor(output_size, dtype=torch.int64)).clamp_min(0)


def draw_jitter(image_sizes: torch.Tensor, output_size: tuple[int, int], scale_range: tuple[float, float],
                flip_prob: float, generator: torch.Generator | None) -> JitterParams:
    """Flip with probability flip_prob, s ~ U(scale_range), offsets floor(max_offset * U[0, 1))."""
    batch = image_sizes.shape[0]
    flip = rng.uniform((batch,), 0.0, 1.0, generator) < flip_prob
    scale = rng.uniform((batch,), scale_range[0], scale_range[1], generator)
    max_offset = _max_offset(lsj_scaled_size(scale, image_sizes, output_size), output_size)
    offset = (max_offset.to(torch.float64) * rng.uniform((batch, 2), 0.0, 1.0, generator)).floor().to(torch.int64)
    return JitterParams(scale=scale, offset=offset, flip=flip)


def _paste_count(available: int, max_num_pasted: int, paste_fraction: float | None,
                 generator: torch.Generator | None) -> int:
    cap = min(available, max_num_pasted)
    if paste_fraction is None:
        return int(rng.randint(cap + 1, (1,), generator)[0])  # uniform in 0..cap, as TF's U{0..n}
    return min(int(available * paste_fraction), max_num_pasted)  # albumentations' pct_objects_paste


def check_draw_options(scale_range, flip_prob: float, max_num_pasted: int, paste_fraction: float | None) -> None:
    if len(scale_range) != 2:
        raise ValueError(f"scale_range must be (min, max), got {scale_range}")
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"scale_range must satisfy 0 < min <= max (finite), got {scale_range}")
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must lie in [0, 1], got {flip_prob}")
    if isinstance(max_num_pasted, bool) or not isinstance(max_num_pasted, int) or max_num_pasted < 0:
        raise ValueError(f"max_num_pasted must be an int >= 0, got {max_num_pasted!r}")
    if paste_fraction is not None and not 0.0 <= paste_fraction <= 1.0:
        raise ValueError(f"paste_fraction must lie in [0, 1] or be None, got {paste_fraction}")


def draw_copy_paste_params(counts: torch.Tensor, image_sizes: torch.Tensor, output_size: tuple[int, int], *,
                           max_instances: int | None = None, scale_range=(0.1, 2.0), flip_prob: float = 0.5,
                           max_num_pasted: int = 100, paste_fraction: float | None = None,
                           perm=None, generator: torch.Generator | None = None) -> CopyPasteParams:
    """Draw the pairing, both jitters and the pasted subsets (see the module docstring).

    counts: int64 [B] objects per image; image_sizes: int64 [B, 2] (rows, cols) of each image;
    output_size: (rows, cols) of the output. The number of pasted objects is uniform in
    0..min(n, max_num_pasted) (TensorFlow's U{0..n}; mmdetection's randint stops one short), or
    min(int(n * paste_fraction), max_num_pasted) when paste_fraction is given; the objects are a
    uniform subset without replacement. n counts every object of the source image, including
    ones the crop will remove (those are simply not appended).
    """
    check_draw_options(scale_range, flip_prob, max_num_pasted, paste_fraction)
    counts = torch.as_tensor(counts).to(device="cpu", dtype=torch.int64)
    image_sizes = torch.as_tensor(image_sizes).to(device="cpu", dtype=torch.int64)
    batch = counts.shape[0]
    slots = int(counts.max()) if max_instances is None else int(max_instances)
    perm_t = rng.derangement(batch, generator) if perm is None else check_perm(torch.as_tensor(perm), batch).cpu()
    receiving = draw_jitter(image_sizes, output_size, scale_range, flip_prob, generator)
    pasted = draw_jitter(image_sizes[perm_t], output_size, scale_range, flip_prob, generator)
    selected = torch.zeros((batch, slots), dtype=torch.bool)
    for i in range(batch):
        if int(perm_t[i]) == i:
            continue  # a self-pair pastes nothing (see the module docstring)
        available = int(counts[perm_t[i]])
        count = _paste_count(available, max_num_pasted, paste_fraction, generator)
        selected[i, rng.choose_without_replacement(available, count, generator)] = True
    return CopyPasteParams(perm=perm_t, receiving=receiving, pasted=pasted, selected=selected)


def _check_jitter(jitter: JitterParams, name: str, image_sizes: torch.Tensor,
                  output_size: tuple[int, int]) -> JitterParams:
    batch = image_sizes.shape[0]
    if not isinstance(jitter, JitterParams):
        raise TypeError(f"{name} must be a JitterParams, got {type(jitter).__name__}")
    scale = torch.as_tensor(jitter.scale).cpu()
    offset = torch.as_tensor(jitter.offset).cpu()
    flip = torch.as_tensor(jitter.flip).cpu()
    if not scale.dtype.is_floating_point or scale.shape != (batch,):
        raise ValueError(f"{name}.scale must be a float [{batch}] tensor, got {scale.dtype} {list(scale.shape)}")
    if not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
        raise ValueError(f"{name}.scale must be finite and > 0")
    if offset.dtype.is_floating_point or offset.dtype == torch.bool or offset.shape != (batch, 2):
        raise ValueError(f"{name}.offset must be an integer [{batch}, 2] tensor, got {offset.dtype} {list(offset.shape)}")
    if flip.dtype != torch.bool or flip.shape != (batch,):
        raise ValueError(f"{name}.flip must be a bool [{batch}] tensor, got {flip.dtype} {list(flip.shape)}")
    scale, offset = scale.to(torch.float64), offset.to(torch.int64)
    max_offset = _max_offset(lsj_scaled_size(scale, image_sizes, output_size), output_size)
    if bool((offset < 0).any()) or bool((offset > max_offset).any()):
        raise ValueError(f"{name}.offset must lie in [0, resized size - output size] per axis; "
                         f"got {offset.tolist()}, maxima {max_offset.tolist()}")
    return JitterParams(scale=scale, offset=offset, flip=flip)


def check_copy_paste_params(params: CopyPasteParams, counts: torch.Tensor, image_sizes: torch.Tensor,
                            output_size: tuple[int, int], max_instances: int) -> CopyPasteParams:
    """Validate injected parameters against the batch; returns them as normalised CPU tensors."""
    if not isinstance(params, CopyPasteParams):
        raise TypeError(f"params must be a CopyPasteParams, got {type(params).__name__}")
    batch = counts.shape[0]
    perm = check_perm(torch.as_tensor(params.perm), batch).cpu()
    receiving = _check_jitter(params.receiving, "receiving", image_sizes, output_size)
    pasted = _check_jitter(params.pasted, "pasted", image_sizes[perm], output_size)
    selected = torch.as_tensor(params.selected).cpu()
    if selected.dtype != torch.bool or selected.shape != (batch, max_instances):
        raise ValueError(f"selected must be a bool [{batch}, {max_instances}] tensor, "
                         f"got {selected.dtype} {list(selected.shape)}")
    available = counts[perm]
    beyond = torch.arange(max_instances)[None, :] >= available[:, None]
    if bool((selected & beyond).any()):
        raise ValueError("selected marks objects beyond the source image's object count (padding slots)")
    self_pairs = perm == torch.arange(batch)
    if bool((selected & self_pairs[:, None]).any()):
        raise ValueError(f"selected marks objects for images paired with themselves (perm[i] == i at "
                         f"{self_pairs.nonzero().flatten().tolist()}): an image never pastes into itself")
    return CopyPasteParams(perm=perm, receiving=receiving, pasted=pasted, selected=selected)
