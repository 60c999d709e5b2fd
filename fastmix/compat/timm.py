"""A drop-in replacement for `timm.data.Mixup`, backed by fastmix's `mixup` and `cutmix` operators.

    from fastmix.compat.timm import Mixup          # instead of: from timm.data import Mixup
    mixup_fn = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=1000)
    images, targets = mixup_fn(images, labels)     # targets: float32 [B, num_classes]

Kept from timm (timm/data/mixup.py, timm 1.0.x):
- Pairing: sample i is mixed with sample B-1-i (`x.flip(0)`), in every mode.
- 'batch': one lam for the batch; with probability `prob` the batch is mixed, otherwise it is left
  alone (lam = 1). 'elem': the same draws per sample. 'pair': one draw per pair (i, B-1-i),
  applied to both members symmetrically (each keeps lam of its own label). 'half': per-sample
  draws for the first B/2 samples, mixed with their partners B-1-i; only those B/2 samples and
  their targets are returned (what timm's FastCollateMixup does with mode='half').
- With both `mixup_alpha > 0` and `cutmix_alpha > 0`, CutMix is used with probability
  `switch_prob`, Mixup otherwise; lam ~ Beta(alpha, alpha) of the chosen operator.
- CutMix box (`rand_bbox`): cut = int(H*sqrt(1-lam)) x int(W*sqrt(1-lam)) around a uniform integer
  centre, extending cut//2 each way, clipped to the image (the same geometry as `fastmix.cutmix`).
  With `cutmix_minmax=(lo, hi)` (`rand_bbox_minmax`): each side is a uniform integer in
  [int(size*lo), int(size*hi)) and the box is placed uniformly inside the image; cutmix_alpha is
  forced to 1.0 (its lam only gates the mix) and lam is always corrected.
- `correct_lam=True`: a CutMix lam is replaced by 1 - box area / (H*W); with False the drawn lam is
  kept although the clipped box may cover less than 1 - lam of the image.
- Targets (`mixup_target`): off = smoothing / num_classes, on = 1 - smoothing + off,
  t = lam * onehot(y) + (1 - lam) * onehot(y.flip(0)).
- `mixup_enabled = False` turns mixing off (targets are still smoothed).

Deliberate differences:
- The input batch is never modified; a new tensor is returned (timm mixes in place).
- 'batch' and 'elem' accept an odd batch: the middle sample is paired with itself, which leaves
  it and its label unchanged. timm asserts an even batch. 'pair' and 'half' need an even batch
  and raise ValueError.
- Random draws come from a `torch.Generator` (`generator=`, see `fastmix.distributed` for one
  per rank), not from the global `np.random`; the parameters of a call can be drawn with
  `make_params` and injected with `mixup_fn(x, target, params=...)`.
- The `rand_bbox_minmax` origin may be any position that keeps the box inside the image,
  including the last one (older timm excluded it; timm PR #2739 fixed that).
- uint8 images are blended in float32 and rounded (timm's in-place blend fails on uint8); soft
  labels [B, num_classes] are accepted as well as class indices.
- An unknown `mode` raises ValueError (timm falls back to 'batch'); a Mixup with neither operator
  active raises at construction (timm raises at the first call).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import params as draws
from .._checks import check_images
from ..backends.pytorch.blend import box_area_lam
from ..labels import mix_targets
from ..operators.boxes import cutmix
from ..operators.mixup import mixup

MODES = ("batch", "pair", "elem", "half")


@dataclass
class TimmMixParams:
    """The random parameters of one call, one row per mixing unit: 1 unit in 'batch' mode, B in
    'elem', B/2 in 'pair' and 'half' (unit i pairs sample i with sample B-1-i).

    lam:        float32 [n], the weight of the unit's own label (already area-corrected where
                timm corrects it); 1 means the unit is not mixed.
    use_cutmix: bool [n], True where the unit pastes a box instead of blending.
    boxes:      int64 [n, 4] (y1, y2, x1, x2), half-open; only read where use_cutmix is True.
    """

    lam: torch.Tensor
    use_cutmix: torch.Tensor
    boxes: torch.Tensor

    def __post_init__(self):
        self.lam = torch.as_tensor(self.lam, dtype=torch.float32).reshape(-1).cpu()
        units = self.lam.shape[0]
        self.use_cutmix = torch.as_tensor(self.use_cutmix, dtype=torch.bool).reshape(-1).cpu()
        self.boxes = torch.as_tensor(self.boxes).reshape(-1, 4).cpu()
        if self.use_cutmix.shape[0] != units or self.boxes.shape[0] != units:
            raise ValueError(f"lam, use_cutmix and boxes must have one row per unit; got {units}, "
                             f"{self.use_cutmix.shape[0]} and {self.boxes.shape[0]} rows")
        if self.boxes.dtype.is_floating_point or self.boxes.dtype == torch.bool:
            raise TypeError(f"boxes must be an integer tensor of (y1, y2, x1, x2), got {self.boxes.dtype}")
        if not bool(torch.isfinite(self.lam).all()) or bool((self.lam < 0).any() | (self.lam > 1).any()):
            raise ValueError("lam must lie in [0, 1]")
        self.boxes = self.boxes.long()


class Mixup:
    """timm.data.Mixup's constructor and call, `mixup_fn(x, target) -> (x_mixed, soft_targets)`.

    See the module docstring for the semantics kept from timm and the deliberate differences.
    `generator` (keyword only, not in timm) is the torch.Generator every draw comes from; the
    parameters of the last call are kept in `last_params`.
    """

    def __init__(self, mixup_alpha=1., cutmix_alpha=0., cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                 mode='batch', correct_lam=True, label_smoothing=0.1, num_classes=1000, *,
                 generator: torch.Generator | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 <= cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise ValueError(f"cutmix_minmax must be (min, max) with 0 <= min < max <= 1, got {cutmix_minmax}")
            cutmix_alpha = 1.0  # as timm: the Beta draw only gates the mix, the box comes from minmax
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"alphas must be >= 0, got mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}")
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("nothing to do: set mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax")
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.cutmix_minmax = None if cutmix_minmax is None else tuple(float(v) for v in cutmix_minmax)
        self.mix_prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = num_classes
        self.mode = mode
        self.correct_lam = bool(correct_lam)
        self.mixup_enabled = True  # a training loop may switch mixing off, as with timm
        self.generator = generator
        self.last_params: TimmMixParams | None = None

    def units(self, batch: int) -> int:
        """How many parameter rows a batch of `batch` samples needs in this mode."""
        if self.mode in ("pair", "half") and batch % 2:
            raise ValueError(f"mode '{self.mode}' pairs sample i with sample B-1-i and needs an even batch, got {batch}")
        return {"batch": 1, "elem": batch}.get(self.mode, batch // 2)

    def make_params(self, batch: int, height: int, width: int) -> TimmMixParams:
        """Draw the parameters of one call for a [batch, C, height, width] input."""
        units = self.units(batch)
        lam = torch.ones(units)
        use_cutmix = torch.zeros(units, dtype=torch.bool)
        boxes = torch.zeros(units, 4, dtype=torch.long)
        if not self.mixup_enabled:
            return TimmMixParams(lam, use_cutmix, boxes)
        gen = self.generator
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = draws.uniform(units, 0.0, 1.0, gen) < self.switch_prob
            lam_draw = torch.where(use_cutmix, draws.beta(self.cutmix_alpha, units, gen),
                                   draws.beta(self.mixup_alpha, units, gen))
        elif self.mixup_alpha > 0:
            lam_draw = draws.beta(self.mixup_alpha, units, gen)
        else:
            use_cutmix = torch.ones(units, dtype=torch.bool)
            lam_draw = draws.beta(self.cutmix_alpha, units, gen)
        mixed = draws.uniform(units, 0.0, 1.0, gen) < self.mix_prob
        lam = torch.where(mixed, lam_draw, lam)
        use_cutmix = use_cutmix & (lam < 1.0)  # timm only touches units whose lam is not 1
        if bool(use_cutmix.any()):
            drawn = self._draw_boxes(lam, height, width)
            boxes = torch.where(use_cutmix[:, None], drawn, boxes)
            if self.correct_lam or self.cutmix_minmax is not None:
                lam = torch.where(use_cutmix, box_area_lam(boxes, height, width), lam)
        return TimmMixParams(lam, use_cutmix, boxes)

    def _draw_boxes(self, lam: torch.Tensor, height: int, width: int) -> torch.Tensor:
        units, gen = lam.shape[0], self.generator
        if self.cutmix_minmax is None:
            cy = draws.randint(height, (units,), gen)
            cx = draws.randint(width, (units,), gen)
            return draws.box_from_lam(lam, height, width, cy, cx)
        lo, hi = self.cutmix_minmax
        sides = []
        for size in (height, width):
            low, high = int(size * lo), int(size * hi)
            if high <= low:
                raise ValueError(f"cutmix_minmax={self.cutmix_minmax} leaves no box size for an image side of "
                                 f"{size} px: int({size}*{lo}) = {low} >= int({size}*{hi}) = {high}")
            sides.append(low + draws.randint(high - low, (units,), gen))
        cut_h, cut_w = sides
        y1 = draws.randint(height - cut_h + 1, (units,), gen)
        x1 = draws.randint(width - cut_w + 1, (units,), gen)
        return torch.stack([y1, y1 + cut_h, x1, x1 + cut_w], dim=1)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, params: TimmMixParams | None = None):
        """(x_mixed, targets float32 [B, num_classes]); B/2 of each in 'half' mode."""
        check_images(x, name="x")
        batch, _, height, width = x.shape
        target = torch.as_tensor(target)
        if target.dim() == 0 or target.shape[0] != batch:
            raise ValueError(f"target must have one entry per sample ({batch}), got shape {tuple(target.shape)}")
        if params is None:
            params = self.make_params(batch, height, width)
        elif params.lam.shape[0] != self.units(batch):
            raise ValueError(f"mode '{self.mode}' needs {self.units(batch)} parameter rows for a batch of "
                             f"{batch}, got {params.lam.shape[0]}")
        self.last_params = params
        lam, use_cutmix, boxes = self._per_sample(params, batch)
        flip = torch.arange(batch - 1, -1, -1)
        images = _mix(x, flip, lam, use_cutmix, boxes)
        targets = mix_targets(target, flip, lam, self.num_classes, self.label_smoothing).to(x.device)
        if self.mode == "half":
            return images[: batch // 2], targets[: batch // 2]
        return images, targets

    def _per_sample(self, params: TimmMixParams, batch: int):
        """Expand unit rows to one row per sample (lam [B], use_cutmix [B], boxes [B, 4])."""
        lam, use_cutmix, boxes = params.lam, params.use_cutmix, params.boxes
        if self.mode == "batch":
            return lam.expand(batch).clone(), use_cutmix.expand(batch).clone(), boxes.expand(batch, 4).clone()
        if self.mode == "pair":  # sample B-1-i reuses unit i's draw: mirror the rows
            return (torch.cat([lam, lam.flip(0)]), torch.cat([use_cutmix, use_cutmix.flip(0)]),
                    torch.cat([boxes, boxes.flip(0)]))
        if self.mode == "half":  # the second half only serves as partners and is dropped
            rest = batch - lam.shape[0]
            return (torch.cat([lam, torch.ones(rest)]), torch.cat([use_cutmix, torch.zeros(rest, dtype=torch.bool)]),
                    torch.cat([boxes, torch.zeros(rest, 4, dtype=torch.long)]))
        return lam, use_cutmix, boxes


def _mix(x: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor, use_cutmix: torch.Tensor,
         boxes: torch.Tensor) -> torch.Tensor:
    """Blend the Mixup samples and paste the CutMix samples' boxes, both from the unmixed batch."""
    blend = (~use_cutmix) & (lam < 1.0)
    if not bool(blend.any() | use_cutmix.any()):
        return x.clone()
    # A CutMix sample gets lam 1 in the blend and an empty box in the paste: each call leaves the
    # other operator's samples as they are, and the two results are combined per sample.
    blended = mixup(x, perm=perm, lam=torch.where(use_cutmix, 1.0, lam)).images if bool(blend.any()) else None
    pasted = None
    if bool(use_cutmix.any()):
        pasted = cutmix(x, perm=perm, boxes=torch.where(use_cutmix[:, None], boxes, 0)).images
    if blended is None:
        return pasted
    if pasted is None:
        return blended
    return torch.where(use_cutmix.to(x.device).view(-1, 1, 1, 1), pasted, blended)


__all__ = ["Mixup", "TimmMixParams", "MODES"]
