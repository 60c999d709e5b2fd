"""Drop-in replacements for `timm.data.mixup`, backed by fastmix's mixing ops.

    from fastmix.compat.timm import Mixup          # instead of: from timm.data import Mixup
    mixup_fn = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=1000)
    images, targets = mixup_fn(images, labels)     # targets: float32 [B, num_classes]

    from fastmix.compat.timm import FastCollateMixup   # a DataLoader collate_fn, uint8 in and out
    loader = DataLoader(dataset, batch_size=256, collate_fn=FastCollateMixup(mixup_alpha=0.8, ...))

Checked against timm 1.0.31 (tests_peers/ compares with the real package). Kept from timm
(timm/data/mixup.py):
- `Mixup(mixup_alpha=1., cutmix_alpha=0., cutmix_minmax=None, prob=1.0, switch_prob=0.5,
  mode='batch', correct_lam=True, label_smoothing=0.1, num_classes=1000, multi_label=False)`, and
  `FastCollateMixup` with the same arguments; `mixup_enabled = False` turns mixing off.
- Pairing: sample i is mixed with sample B-1-i (`x.flip(0)`), in every mode.
- Modes: 'batch' one draw for the batch (with probability `prob` the batch is mixed, otherwise
  lam = 1); 'elem' the same draws per sample; 'pair' one draw per pair (i, B-1-i) applied to both
  members. 'half': `Mixup` treats it as 'batch' (as timm's Mixup does); `FastCollateMixup` draws
  per sample for the first B/2 samples, mixes them with their partners B-1-i and returns only
  those B/2 samples and targets.
- With both alphas > 0, CutMix is chosen with probability `switch_prob`, Mixup otherwise; lam ~
  Beta(alpha, alpha) of the chosen operator.
- `rand_bbox`: cut = int(H*sqrt(1-lam)) x int(W*sqrt(1-lam)) around a uniform integer centre
  (cy, cx), rows [cy - cut//2, cy + (cut+1)//2) clipped to the image (timm >= 1.0.29: the box
  is `cut` pixels long whenever it is not clipped). `rand_bbox_minmax` (`cutmix_minmax=(lo,
  hi)`): each side a uniform integer in [int(size*lo), int(size*hi)), placed uniformly inside
  the image; cutmix_alpha is forced to 1.0 (its lam only gates the mix) and lam is corrected.
  In 'elem'/'pair'/'half' the box size is computed from the float32 lam, in 'batch' from the
  float64 one, as timm does.
- `correct_lam=True`: a CutMix lam becomes 1 - box area / (H*W).
- Targets (`mixup_target`): off = smoothing / num_classes, on = 1 - smoothing + off,
  t = lam * onehot(y) + (1 - lam) * onehot(y.flip(0)); `multi_label=True` takes dense [B,
  num_classes] targets and smooths them toward 0.5: t * (1 - smoothing) + 0.5 * smoothing.
- `FastCollateMixup(batch)`: a list of (uint8 image [C, H, W] as NumPy array or tensor, target)
  gives (uint8 tensor [B, C, H, W] (B/2 in 'half'), float32 targets); blends are computed in
  float32 and rounded half to even, as timm's np.rint; targets are collated with
  `default_collate`.
- `rand_bbox`, `rand_bbox_minmax`, `cutmix_bbox_and_lam`, `mixup_target` and `one_hot` with
  timm's signatures, returning what timm returns (NumPy integers or arrays for the boxes).

Deliberate differences:
- Random draws come from a `torch.Generator` (`generator=`, keyword only; None: torch's global
  generator, so `torch.manual_seed` makes a run reproducible, not `np.random.seed`); one draw
  of it per call (4 x 63 bits) seeds the NumPy generator (PCG64) that draws the call's parameters:
  the coin flips and box centres of all units in one uniform draw (a centre is floor(u * side),
  uniform over the pixels to within 2^-53), the lams in one Beta draw per operator. The
  parameters of a call can be drawn with `make_params` and injected with `params=...`.
- Inputs are never modified: `Mixup` returns a new tensor (timm mixes `x` in place), and
  `FastCollateMixup` never writes into the samples (timm's 'pair' and 'half' CutMix write the
  partner's box into the dataset's arrays).
- 'batch' and 'elem' accept an odd batch: the middle sample is paired with itself, which leaves it
  and its label unchanged (timm asserts an even batch). 'pair' and 'half' need an even batch and
  raise ValueError.
- uint8 images are accepted by `Mixup` (blended in float32 and rounded); soft labels [B, C] are
  accepted as well as class indices (smoothed as t * (1 - s) + s / C). Targets are float32 and
  per-sample target lams float32 whatever the images' dtype (timm's per-sample modes round them
  to the images' dtype, e.g. bfloat16, and return float64 targets for float64 images).
- An unknown `mode` raises ValueError (timm falls back to 'batch'); a Mixup with neither operator
  active raises at construction (timm at the first call); bad arguments raise ValueError/TypeError
  instead of asserting.
"""
from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass

import numpy as np
import torch

from .. import dispatch
from .. import params as draws
from .._checks import check_images

MODES = ("batch", "pair", "elem", "half")


def _integer(value, name: str, *, minimum: int) -> int:
    """A Python or NumPy integer (not a bool) >= minimum, as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _randint(low, high, count, generator):
    """NumPy's randint(low, high, size=count) drawn from a torch.Generator: a Python int when
    count is None (as NumPy returns), else an int64 array; `high` may be an array (per-element
    bounds). low >= high raises ValueError, as NumPy does."""
    low_a, high_a = np.asarray(low, dtype=np.int64), np.asarray(high, dtype=np.int64)
    if bool(np.any(low_a >= high_a)):
        raise ValueError(f"low >= high: no integer in [{low}, {high})")
    shape = () if count is None else (int(count),)
    span = torch.from_numpy(np.broadcast_to(high_a - low_a, shape).copy())
    drawn = draws.randint(span, shape, generator).numpy() + low_a
    return int(drawn) if count is None else drawn


# ---- timm's functions ---------------------------------------------------------------------------

def one_hot(x, num_classes, on_value=1., off_value=0.):
    """timm's one_hot: float32 [B, num_classes] with on_value at the class index, off_value elsewhere."""
    x = x.long().view(-1, 1)
    return torch.full((x.size()[0], _integer(num_classes, "num_classes", minimum=1)), off_value,
                      device=x.device).scatter_(1, x, on_value)


def mixup_target(target, num_classes, lam=1., smoothing=0.0, multi_label=False):
    """timm's mixup_target: smoothed targets mixed with their flipped batch, lam * y + (1 - lam) * y.flip(0).

    `lam` is a number or a tensor [B, 1]. Class indices [B] are one-hot encoded with on = 1 - s +
    s/C and off = s/C; with multi_label=True, dense targets [B, num_classes] are smoothed toward
    0.5. Soft labels [B, num_classes] (floating point, multi_label False) are a fastmix extension:
    t * (1 - s) + s / C."""
    num_classes = _integer(num_classes, "num_classes", minimum=1)
    target = torch.as_tensor(target)
    if multi_label:
        if target.ndim != 2 or target.shape[1] != num_classes:
            raise ValueError('Multi-label mixup expects dense targets shaped (batch, num_classes).')
        y1 = target.float() * (1. - smoothing) + 0.5 * smoothing
    elif target.ndim == 2 and target.dtype.is_floating_point:
        if target.shape[1] != num_classes:
            raise ValueError(f"soft targets have {target.shape[1]} classes but num_classes={num_classes}")
        y1 = target.float() * (1. - smoothing) + smoothing / num_classes
    else:
        if target.ndim != 1 or target.dtype.is_floating_point or target.dtype == torch.bool:
            raise ValueError("targets must be class indices [B] (or soft labels [B, num_classes], or dense "
                             f"multi-label targets with multi_label=True), got {target.dtype} {tuple(target.shape)}")
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
            raise ValueError(f"class indices must lie in [0, {num_classes}), got range "
                             f"[{int(target.min())}, {int(target.max())}]")
        off_value = smoothing / num_classes
        on_value = 1. - smoothing + off_value
        y1 = one_hot(target, num_classes, on_value=on_value, off_value=off_value)
    if isinstance(lam, torch.Tensor):
        lam = dispatch.to_device(lam, y1.device)  # non-blocking: no host sync for a CUDA target
    y2 = y1.flip(0)
    return y1 * lam + y2 * (1. - lam)


def bbox_at(img_shape, lam, cy, cx):
    """The deterministic part of `rand_bbox`: the box of `lam` around the centre (cy, cx).

    (yl, yh, xl, xh) half-open, clipped to the image; NumPy arithmetic in lam's dtype (float32
    for a float32 lam, as timm's per-element modes; float64 for a Python float)."""
    img_h, img_w = img_shape[-2:]
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = np.asarray(img_h * ratio).astype(np.int64), np.asarray(img_w * ratio).astype(np.int64)
    def clip(value, high):  # np.clip's result, without its ~10 us of overhead per call
        return np.minimum(np.maximum(value, 0), high)
    yl = clip(cy - cut_h // 2, img_h)
    yh = clip(cy + (cut_h + 1) // 2, img_h)
    xl = clip(cx - cut_w // 2, img_w)
    xh = clip(cx + (cut_w + 1) // 2, img_w)
    return yl, yh, xl, xh


def _boxes_at(lam: np.ndarray, centre, height: int, width: int) -> np.ndarray:
    """int64 [n, 4] (y1, y2, x1, x2): `bbox_at` of n lams (float32 or float64, the arithmetic's
    dtype as in bbox_at) around centres floor(u * side) of uniform draws u = centre[0] (rows) and
    centre[1] (columns) in [0, 1), both image axes in one set of array ops."""
    sides = np.array([[height], [width]], dtype=np.int64)
    cut = (sides.astype(lam.dtype) * np.sqrt(1 - lam)).astype(np.int64)  # timm's int(img_h * ratio)
    # floor(u * side) is uniform over [0, side) to within 2^-53; the minimum only guards rounding
    middle = np.minimum((np.asarray(centre) * sides).astype(np.int64), sides - 1)
    boxes = np.empty((lam.shape[0], 4), dtype=np.int64)
    boxes[:, 0::2] = np.maximum(middle - cut // 2, 0).T  # the centre is < side: no upper clip needed
    boxes[:, 1::2] = np.minimum(middle + (cut + 1) // 2, sides).T  # and >= 0: no lower clip
    return boxes


def rand_bbox(img_shape, lam, margin=0., count=None, *, generator: torch.Generator | None = None):
    """timm's rand_bbox: a CutMix box of `lam` around a uniform integer centre.

    The centre keeps `margin` * cut pixels from each border. Returns (yl, yh, xl, xh) as NumPy
    integers, or int64 arrays of `count` boxes."""
    img_h, img_w = img_shape[-2:]
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    margin_y, margin_x = int(margin * cut_h), int(margin * cut_w)
    cy = _randint(0 + margin_y, img_h - margin_y, count, generator)
    cx = _randint(0 + margin_x, img_w - margin_x, count, generator)
    return bbox_at(img_shape, lam, cy, cx)


def rand_bbox_minmax(img_shape, minmax, count=None, *, generator: torch.Generator | None = None):
    """timm's rand_bbox_minmax: sides uniform in [int(size*min), int(size*max)), the box placed
    uniformly inside the image. Returns (yl, yu, xl, xu)."""
    if len(minmax) != 2:
        raise ValueError(f"minmax must be (min, max), got {minmax!r}")
    img_h, img_w = img_shape[-2:]
    cut_h = _randint(int(img_h * minmax[0]), int(img_h * minmax[1]), count, generator)
    cut_w = _randint(int(img_w * minmax[0]), int(img_w * minmax[1]), count, generator)
    yl = _randint(0, img_h - np.asarray(cut_h) + 1, count, generator)
    xl = _randint(0, img_w - np.asarray(cut_w) + 1, count, generator)
    return yl, yl + cut_h, xl, xl + cut_w


def cutmix_bbox_and_lam(img_shape, lam, ratio_minmax=None, correct_lam=True, count=None, *,
                        generator: torch.Generator | None = None):
    """timm's cutmix_bbox_and_lam: a box, and lam corrected to 1 - box area / (H*W) when
    `correct_lam` or `ratio_minmax` is set."""
    if ratio_minmax is not None:
        yl, yu, xl, xu = rand_bbox_minmax(img_shape, ratio_minmax, count=count, generator=generator)
    else:
        yl, yu, xl, xu = rand_bbox(img_shape, lam, count=count, generator=generator)
    if correct_lam or ratio_minmax is not None:
        bbox_area = (yu - yl) * (xu - xl)
        lam = 1. - bbox_area / float(img_shape[-2] * img_shape[-1])
    return (yl, yu, xl, xu), lam


# ---- parameters ----------------------------------------------------------------------------------

_SWITCH, _MIXUP_ONLY, _CUTMIX_ONLY = 0, 1, 2  # as fastmix.backends.numba.collate's constants
_NO_DRAWS = np.zeros(0)


class _TorchWords(np.random.bit_generator.ISeedSequence):
    """Seed words drawn from a torch.Generator, given to a NumPy bit generator as they are
    (NumPy's SeedSequence would hash a single integer seed into them: 10-20 us per call, more
    than all of a call's draws; the torch draws are already uniformly random)."""

    def __init__(self, words: np.ndarray):
        self.words = words

    def generate_state(self, n_words, dtype=np.uint32):
        words = self.words.view(dtype)
        if n_words > words.size:
            raise ValueError(f"{n_words} seed words asked for, {words.size} drawn")
        return words[:n_words].copy()


def _call_rng(generator: torch.Generator | None) -> np.random.Generator:
    """The NumPy generator of one call: PCG64 seeded with 4 x 63 bits drawn from `generator` (one
    torch draw; None: torch's global generator), so torch.manual_seed or the generator's seed
    fixes every draw of the call."""
    if generator is None or generator.device.type == "cpu":
        # torch writes the words straight into the NumPy array (63 random bits each): half the
        # cost of torch.randint and a conversion in a loader worker
        words = np.empty(4, dtype=np.int64)
        torch.from_numpy(words).random_(generator=generator)
    else:
        words = torch.randint(0, 2 ** 63 - 1, (4,), generator=generator, device=generator.device).cpu().numpy()
    return np.random.Generator(np.random.PCG64(_TorchWords(words.view(np.uint64))))


@dataclass
class TimmMixParams:
    """The random parameters of one call, one row per mixing unit: 1 unit in 'batch' mode, B in
    'elem', B/2 in 'pair' and in FastCollateMixup's 'half' (unit i pairs sample i with B-1-i).

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
        if not bool(((self.lam >= 0) & (self.lam <= 1)).all()):
            raise ValueError("lam must lie in [0, 1]")
        self.boxes = self.boxes.long()

    @classmethod
    def _drawn(cls, lam: np.ndarray, use_cutmix: np.ndarray, boxes: np.ndarray) -> "TimmMixParams":
        """Parameters made by `make_params` (float32 lam in [0, 1], bool flags, int64 boxes inside
        the image by construction): the validation of __post_init__, a few torch ops that cost
        ~0.2 ms per batch in a loader worker, is skipped."""
        params = cls.__new__(cls)
        params.lam, params.use_cutmix, params.boxes = (torch.from_numpy(lam), torch.from_numpy(use_cutmix),
                                                       torch.from_numpy(boxes))
        return params

    def check_boxes(self, height: int, width: int) -> None:
        y1, y2, x1, x2 = self.boxes[self.use_cutmix].unbind(1)
        if not bool(((y1 >= 0) & (y1 <= y2) & (y2 <= height) & (x1 >= 0) & (x1 <= x2) & (x2 <= width)).all()):
            raise ValueError(f"CutMix boxes must satisfy 0 <= y1 <= y2 <= {height} and 0 <= x1 <= x2 <= {width}")


# ---- Mixup ----------------------------------------------------------------------------------------

class Mixup:
    """timm.data.Mixup's constructor and call, `mixup_fn(x, target) -> (x_mixed, soft_targets)`.

    See the module docstring for the semantics kept from timm and the deliberate differences.
    `generator` (keyword only, not in timm) is the torch.Generator every draw comes from; the
    parameters of the last call are kept in `last_params`.
    """

    def __init__(self, mixup_alpha=1., cutmix_alpha=0., cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                 mode='batch', correct_lam=True, label_smoothing=0.1, num_classes=1000, multi_label=False, *,
                 generator: torch.Generator | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        mixup_alpha, cutmix_alpha = _real(mixup_alpha, "mixup_alpha"), _real(cutmix_alpha, "cutmix_alpha")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2 or not 0.0 <= cutmix_minmax[0] < cutmix_minmax[1] <= 1.0:
                raise ValueError(f"cutmix_minmax must be (min, max) with 0 <= min < max <= 1, got {cutmix_minmax}")
            cutmix_alpha = 1.0  # as timm: the Beta draw only gates the mix, the box comes from minmax
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"alphas must be >= 0, got mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}")
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("nothing to do: set mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax")
        for name, value in (("prob", prob), ("switch_prob", switch_prob), ("label_smoothing", label_smoothing)):
            if not 0.0 <= _real(value, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.cutmix_minmax = None if cutmix_minmax is None else tuple(float(v) for v in cutmix_minmax)
        self.mix_prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = _integer(num_classes, "num_classes", minimum=1)
        self.multi_label = bool(multi_label)
        self.mode = mode
        self.correct_lam = bool(correct_lam)
        self.mixup_enabled = True  # a training loop may switch mixing off, as with timm
        self.generator = generator
        self.last_params: TimmMixParams | None = None

    # Mixup treats 'half' as 'batch' (timm's Mixup does); FastCollateMixup overrides this.
    _PER_UNIT = {"batch": False, "half": False, "elem": True, "pair": True}

    def units(self, batch: int) -> int:
        """How many parameter rows a batch of `batch` samples needs in this mode."""
        if self.mode in ("pair", "half") and self._PER_UNIT[self.mode] and batch % 2:
            raise ValueError(f"mode '{self.mode}' pairs sample i with sample B-1-i and needs an even batch, got {batch}")
        if not self._PER_UNIT[self.mode]:
            return 1
        return batch if self.mode == "elem" else batch // 2

    def make_params(self, batch: int, height: int, width: int) -> TimmMixParams:
        """Draw the parameters of one call for a [batch, C, height, width] input."""
        units = self.units(batch)
        if not self.mixup_enabled or units == 0:
            return TimmMixParams._drawn(np.ones(units, np.float32), np.zeros(units, dtype=bool),
                                        np.zeros((units, 4), dtype=np.int64))
        # One torch draw seeds a NumPy generator for all of this call's draws, which are made in
        # two or three NumPy calls: in a loader worker (caches cold) each torch op costs ~50 us,
        # each NumPy call or array operation 3-10 us, and FastCollateMixup's image pass 1-2 ms.
        rng = _call_rng(self.generator)
        flips = rng.random((4, units))  # every unit's switch and mix coin flips and box centre (y, x)
        cut_lam = rng.beta(self.cutmix_alpha, self.cutmix_alpha, units) if self.cutmix_alpha > 0 else _NO_DRAWS
        mix_lam = rng.beta(self.mixup_alpha, self.mixup_alpha, units) if self.mixup_alpha > 0 else _NO_DRAWS
        operators = (_SWITCH if self.mixup_alpha > 0 and self.cutmix_alpha > 0
                     else _MIXUP_ONLY if self.mixup_alpha > 0 else _CUTMIX_ONLY)
        per_unit = self._PER_UNIT[self.mode]
        if self.cutmix_minmax is None and self._compiled_params():
            collate = _numba_collate()
            lam, cut, boxes = np.empty(units, np.float32), np.empty(units, bool), np.empty((units, 4), np.int64)
            collate.timm_params_kernel(flips, cut_lam, mix_lam, operators, self.switch_prob, self.mix_prob, per_unit,
                                       self.correct_lam, height, width, lam, cut, boxes)
            return TimmMixParams._drawn(lam, cut, boxes)
        return TimmMixParams._drawn(*self._finish_params(flips, cut_lam, mix_lam, operators, height, width))

    def _compiled_params(self) -> bool:
        """Whether make_params finishes its draws in numba (fastmix.backends.numba.collate
        .timm_params_kernel, equal to `_finish_params` bit for bit): FastCollateMixup with numba;
        Mixup never imports numba for it."""
        return False

    def _finish_params(self, flips, cut_lam, mix_lam, operators, height: int, width: int):
        """(lam float32 [n], use_cutmix bool [n], boxes int64 [n, 4]) from the call's random draws
        (see make_params), with NumPy array operations."""
        units = flips.shape[1]
        if operators == _SWITCH:
            use_cutmix = flips[0] < self.switch_prob
            lam_draw = np.where(use_cutmix, cut_lam, mix_lam)
        elif operators == _MIXUP_ONLY:
            use_cutmix, lam_draw = np.zeros(units, dtype=bool), mix_lam
        else:
            use_cutmix, lam_draw = np.ones(units, dtype=bool), cut_lam
        lam = np.where(flips[1] < self.mix_prob, lam_draw.astype(np.float32), np.float32(1.0))
        use_cutmix &= lam < 1.0  # timm only touches units whose lam is not 1
        boxes = np.zeros((units, 4), dtype=np.int64)
        if not use_cutmix.any():
            return lam, use_cutmix, boxes
        if self.cutmix_minmax is not None:
            (y1, y2, x1, x2), corrected = self._draw_minmax_boxes(height, width, int(use_cutmix.sum()))
            boxes[use_cutmix] = np.stack([y1, y2, x1, x2], axis=1)
            lam[use_cutmix] = np.asarray(corrected, dtype=np.float32)
            return lam, use_cutmix, boxes
        # Every unit's box is computed (a handful of array ops, whatever the count) and those of
        # the units that blend or stay unmixed are zeroed. timm computes a per-batch box from its
        # Python-float lam (float64), per-unit boxes from float32 lams.
        boxes = _boxes_at(lam if self._PER_UNIT[self.mode] else lam.astype(np.float64), flips[2:], height, width)
        boxes *= use_cutmix[:, None]
        if self.correct_lam:
            area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
            lam = np.where(use_cutmix, (1. - area / float(height * width)).astype(np.float32), lam)
        return lam, use_cutmix, boxes

    def _draw_minmax_boxes(self, height: int, width: int, count: int):
        """`count` boxes of `cutmix_minmax` and their area-corrected lams (timm's rand_bbox_minmax)."""
        shape = (height, width)
        lo, hi = self.cutmix_minmax
        for size in shape:
            if int(size * hi) <= int(size * lo):
                raise ValueError(f"cutmix_minmax={self.cutmix_minmax} leaves no box size for an image side of "
                                 f"{size} px: int({size}*{lo}) = {int(size * lo)} >= int({size}*{hi}) = "
                                 f"{int(size * hi)}")
        return cutmix_bbox_and_lam(shape, None, self.cutmix_minmax, self.correct_lam, count=count,
                                   generator=self.generator)

    def _check_call(self, batch: int, params: TimmMixParams | None, height: int, width: int) -> TimmMixParams:
        if params is None:
            return self.make_params(batch, height, width)
        if not isinstance(params, TimmMixParams):
            raise TypeError(f"params must be a TimmMixParams, got {type(params).__name__}")
        if params.lam.shape[0] != self.units(batch):
            raise ValueError(f"mode '{self.mode}' needs {self.units(batch)} parameter rows for a batch of "
                             f"{batch}, got {params.lam.shape[0]}")
        params.check_boxes(height, width)
        return params

    def _per_sample(self, params: TimmMixParams, batch: int):
        """Expand unit rows to one row per sample (lam [B], use_cutmix [B], boxes [B, 4])."""
        lam, use_cutmix, boxes = params.lam, params.use_cutmix, params.boxes
        if not self._PER_UNIT[self.mode]:
            return lam.expand(batch).clone(), use_cutmix.expand(batch).clone(), boxes.expand(batch, 4).clone()
        if self.mode == "pair":  # sample B-1-i reuses unit i's draw: mirror the rows
            return (torch.cat([lam, lam.flip(0)]), torch.cat([use_cutmix, use_cutmix.flip(0)]),
                    torch.cat([boxes, boxes.flip(0)]))
        if self.mode == "half":  # the second half only serves as partners and is dropped
            rest = batch - lam.shape[0]
            return (torch.cat([lam, torch.ones(rest)]), torch.cat([use_cutmix, torch.zeros(rest, dtype=torch.bool)]),
                    torch.cat([boxes, torch.zeros(rest, 4, dtype=torch.long)]))
        return lam, use_cutmix, boxes

    def _targets(self, target: torch.Tensor, params: TimmMixParams, lam: torch.Tensor) -> torch.Tensor:
        # timm passes the per-batch lam as a Python float and per-element lams as a [B, 1] tensor;
        # both forms round differently in `1 - lam`, so the same forms are used here.
        weight = float(params.lam[0]) if not self._PER_UNIT[self.mode] else lam.view(-1, 1)
        return mixup_target(target, self.num_classes, weight, self.label_smoothing, self.multi_label)

    def __call__(self, x: torch.Tensor, target: torch.Tensor, params: TimmMixParams | None = None):
        """(x_mixed, targets float32 [B, num_classes]); the targets stay on the target's device."""
        check_images(x, name="x")
        batch, _, height, width = x.shape
        target = torch.as_tensor(target)
        if target.dim() == 0 or target.shape[0] != batch:
            raise ValueError(f"target must have one entry per sample ({batch}), got shape {tuple(target.shape)}")
        params = self._check_call(batch, params, height, width)
        self.last_params = params
        lam, use_cutmix, boxes = self._per_sample(params, batch)
        flip = torch.arange(batch - 1, -1, -1)
        images = _mix(x, flip, lam, use_cutmix, boxes)
        return images, self._targets(target, params, lam)


def _mix(x: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor, use_cutmix: torch.Tensor,
         boxes: torch.Tensor, *, slice_paste: bool | None = None) -> torch.Tensor:
    """Blend the Mixup samples and paste the CutMix samples' boxes, both from the unmixed batch.

    `slice_paste` (default: on CPU tensors) copies the boxes of a batch that also blends sample
    by sample; otherwise (one launch each on a GPU) a paste op and a per-sample select."""
    blend = (~use_cutmix) & (lam < 1.0)
    if not bool(blend.any() | use_cutmix.any()):
        return x.clone()
    # A CutMix sample gets lam 1 in the blend and an empty box in the paste: each op leaves the
    # other operator's samples as they are, and the two results are combined per sample.
    blended = dispatch.mixup_blend(x, perm, torch.where(use_cutmix, 1.0, lam)) if bool(blend.any()) else None
    if not bool(use_cutmix.any()):
        return blended
    if blended is not None and (x.device.type == "cpu" if slice_paste is None else slice_paste):
        # on the CPU, copying each box into the fresh blend output beats a paste and a select
        # over the whole batch (two more passes); the source is the unmixed input
        box_list, partners = boxes.tolist(), perm.tolist()
        for i in use_cutmix.nonzero().flatten().tolist():
            y1, y2, x1, x2 = box_list[i]
            blended[i, :, y1:y2, x1:x2] = x[partners[i], :, y1:y2, x1:x2]
        return blended
    pasted = dispatch.box_paste(x, perm, torch.where(use_cutmix[:, None], boxes, 0))
    if blended is None:
        return pasted
    return torch.where(dispatch.to_device(use_cutmix, x.device).view(-1, 1, 1, 1), pasted, blended)


# ---- FastCollateMixup ---------------------------------------------------------------------------

class FastCollateMixup(Mixup):
    """timm.data.FastCollateMixup: a DataLoader `collate_fn` that stacks uint8 samples and mixes them.

        collate = FastCollateMixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=1000)
        images, targets = collate([(uint8 [C, H, W], label), ...])   # uint8 [B, C, H, W], float32 [B, K]

    Every mode of `Mixup`; 'half' mixes the first B/2 samples with their partners B-1-i and
    returns those B/2. The samples (NumPy arrays or CPU tensors, all uint8 of one shape) are
    never modified. Blends round half to even in float32 arithmetic (timm's np.rint).

    DataLoader workers: with `generator=None` (the default) draws come from torch's global RNG,
    which the DataLoader seeds differently in each worker, as timm's np.random. A generator given
    here is copied into every worker, which would then draw the same parameters: give each
    worker its own in a `worker_init_fn` (`collate.generator = torch.Generator().manual_seed(...)`).

    Speed: with numba (the `cpu` extra) one fused kernel (fastmix.backends.numba.collate) writes
    each returned row once, straight from the samples (no intermediate stack; B/2 rows in
    'half' mode; both rows of a blended pair from one read of the two samples), and the rest of
    the call is a few compiled loops (the parameters after their NumPy draws, the targets) and
    whole-list checks, ~0.1 ms per call warm, 0.4-0.5 ms with the caches cold: the whole call
    took 0.85-1.47x the time of a plain `torch.stack` collate at B=64 3x224x224 on one thread
    (benchmarks/results/cpu/collate.md). Without numba (or
    `backend="pytorch"`, keyword only, not in timm) the batch is stacked once, pasted boxes are
    copied from the partner samples and blended samples go through a per-sample float32 blend
    that stays in cache. Both give timm's bytes exactly, and the same parameters for a seed.
    """

    _PER_UNIT = {"batch": False, "half": True, "elem": True, "pair": True}  # 'half': B/2 per-sample draws

    def __init__(self, mixup_alpha=1., cutmix_alpha=0., cutmix_minmax=None, prob=1.0, switch_prob=0.5,
                 mode='batch', correct_lam=True, label_smoothing=0.1, num_classes=1000, multi_label=False, *,
                 generator: torch.Generator | None = None, backend: str = "auto"):
        super().__init__(mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob, mode, correct_lam,
                         label_smoothing, num_classes, multi_label, generator=generator)
        if backend not in ("auto", "numba", "pytorch"):
            raise ValueError(f"backend must be 'auto', 'numba' or 'pytorch', got {backend!r}")
        if backend == "numba" and not _numba_available():
            raise RuntimeError("backend='numba' needs numba (pip install fastmix[cpu]); it is not available")
        self.backend = backend

    def _compiled_params(self) -> bool:
        return self.backend != "pytorch" and _numba_available()

    def __call__(self, batch, _=None, *, params: TimmMixParams | None = None):
        images, targets = _split_samples(batch)
        size = len(images)
        _, height, width = images[0].shape
        params = self._check_call(size, params, height, width)
        self.last_params = params
        rows = size // 2 if self.mode == "half" else size
        if self.backend != "pytorch" and _numba_available():
            collate = _numba_collate()
            mode = collate.MODES[self.mode]
            lam = params.lam.numpy()
            # The targets first: small work that runs about twice as fast before the image pass
            # has flushed the caches; a label out of range (None) is reported by the general path.
            labels = None if self.multi_label else _class_indices(targets)
            target = None if labels is None else collate.collate_targets(labels, mode, lam, self.num_classes,
                                                                         self.label_smoothing, rows)
            if target is None:
                target = self._targets(torch.utils.data.default_collate(targets), params,
                                       self._per_sample(params, size)[0])[:rows]
            output = torch.from_numpy(collate.collate_mix(images, mode, lam, params.use_cutmix.numpy(),
                                                          params.boxes.numpy()))
            return output, target
        lam, use_cutmix, boxes = self._per_sample(params, size)
        output = _collate_mix(images, rows, lam, use_cutmix, boxes)
        target = self._targets(torch.utils.data.default_collate(targets), params, lam)
        return output, target[:rows]


def _class_indices(targets: list) -> np.ndarray | None:
    """int64 [B] of a list of integer class indices (Python or NumPy integers, 0-d integer
    tensors), which default_collate would turn into an integer tensor [B]; None for any other
    targets (soft labels, floats, bools, nested lists), which take the general path."""
    try:
        labels = np.array(targets)
    except (ValueError, TypeError, OverflowError):
        return None
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.dtype.itemsize > 8:
        return None
    if labels.dtype.kind == "u" and labels.size and labels.max() > np.iinfo(np.int64).max:
        return None
    return labels.astype(np.int64, copy=False)


_DTYPE, _SHAPE = operator.attrgetter("dtype"), operator.attrgetter("shape")


def _split_samples(batch):
    """(uint8 NumPy arrays [C, H, W] sharing the samples' memory, targets) of a list of samples."""
    if not isinstance(batch, (list, tuple)) or len(batch) == 0:
        raise ValueError("FastCollateMixup needs a non-empty list of (image, target) samples")
    # The usual batch (tuples or lists of a NumPy array or a CPU tensor and a target, all of one
    # dtype and shape) is checked with a few whole-list passes; anything else goes through the
    # sample-by-sample loop, which reports the first bad sample.
    if set(map(type, batch)) <= {tuple, list} and min(map(len, batch)) >= 2:
        images = [sample[0] for sample in batch]
        first = images[0]
        kinds = set(map(type, images))
        if kinds == {np.ndarray} and first.dtype == np.uint8 and first.ndim == 3 and 0 not in first.shape:
            if set(map(_DTYPE, images)) == {first.dtype} and set(map(_SHAPE, images)) == {first.shape}:
                return images, [sample[1] for sample in batch]
        elif (kinds == {torch.Tensor} and first.dtype == torch.uint8 and first.device.type == "cpu"
              and first.dim() == 3 and 0 not in first.shape):
            shape = first.shape
            if all(image.dtype is torch.uint8 and image.device == first.device and image.shape == shape
                   for image in images):
                return [image.detach().numpy() for image in images], [sample[1] for sample in batch]
    return _split_samples_one_by_one(batch)


def _split_samples_one_by_one(batch):
    images, targets = [], []
    shape = None
    for index, sample in enumerate(batch):
        if not isinstance(sample, (list, tuple)) or len(sample) < 2:
            raise ValueError(f"sample {index} must be an (image, target) pair, got {type(sample).__name__}")
        image = sample[0]
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.device.type != "cpu":
                raise TypeError(f"sample {index}: images must be uint8 CPU tensors, got {image.dtype} on {image.device}")
            image = image.detach().numpy()
        elif not isinstance(image, np.ndarray):
            raise TypeError(f"sample {index}: the image must be a NumPy array or a torch.Tensor, "
                            f"got {type(image).__name__}")
        elif image.dtype != np.uint8:
            raise TypeError(f"sample {index}: images must be uint8, got {image.dtype}")
        if shape is None:
            shape = image.shape
            if image.ndim != 3 or 0 in image.shape:
                raise ValueError(f"sample {index}: images must be [C, H, W], got shape {image.shape}")
        elif image.shape != shape:
            raise ValueError(f"sample {index} has shape {image.shape}, sample 0 {shape}: "
                             "all images of a batch must have one shape")
        images.append(image)
        targets.append(sample[1])
    return images, targets


def _numba_available() -> bool:
    global _NUMBA_BACKEND
    if _NUMBA_BACKEND is None:  # the module, not its answer: available() follows FASTMIX_DISABLE_NUMBA
        from ..backends import numba as numba_backend
        _NUMBA_BACKEND = numba_backend
    return _NUMBA_BACKEND.available()


_NUMBA_BACKEND = None


def _numba_collate():
    """fastmix.backends.numba.collate, imported on first use (numba is optional)."""
    global _COLLATE
    if _COLLATE is None:
        from ..backends.numba import collate
        _COLLATE = collate
    return _COLLATE


_COLLATE = None


def _collate_mix(images: list, rows: int, lam: torch.Tensor, use_cutmix: torch.Tensor,
                 boxes: torch.Tensor) -> torch.Tensor:
    """uint8 [rows, C, H, W]: row i mixed with sample B-1-i by lam[i] / use_cutmix[i] / boxes[i].

    Reads the samples only and writes a fresh output: one stack (a copy) of the returned rows,
    then blends and pastes whose sources are the untouched samples."""
    size = len(images)
    blend = (~use_cutmix) & (lam < 1.0)  # rows >= `rows` have lam 1 ('half')
    blend_rows = blend[:rows].nonzero().flatten().tolist()
    cut_rows = use_cutmix[:rows].nonzero().flatten().tolist()
    output = _stack(images[:rows])
    if blend_rows:
        _blend_rows(output, images, blend_rows, lam)
    if cut_rows:
        out = output.numpy()  # NumPy slicing: a fraction of torch indexing's per-call cost
        box_list = boxes.tolist()
        for i in cut_rows:
            y1, y2, x1, x2 = box_list[i]
            out[i, :, y1:y2, x1:x2] = images[size - 1 - i][:, y1:y2, x1:x2]
    return output


def _stack(images: list) -> torch.Tensor:
    """uint8 [B, C, H, W] copy of the arrays (np.stack: plain memcpy, faster than torch.stack here)."""
    return torch.from_numpy(np.stack(images))


def _blend_rows(output: torch.Tensor, images: list, rows: list, lam: torch.Tensor) -> None:
    """output[i] = rint(w * x[i] + (1 - w) * x[B-1-i]) for i in rows, one sample at a time so
    the float32 temporaries stay in cache; w and 1 - w are float32 and each product and the sum
    are rounded separately, as in fastmix's PyTorch path and timm's NumPy code."""
    size = len(images)
    own = torch.empty(images[0].shape, dtype=torch.float32)
    other = torch.empty_like(own)
    one = np.float32(1.0)
    for i in rows:
        weight = np.float32(lam[i])
        torch.mul(torch.from_numpy(images[i]), float(weight), out=own)
        torch.mul(torch.from_numpy(images[size - 1 - i]), float(one - weight), out=other)
        own.add_(other).round_()
        output[i].copy_(own)  # in [0, 255]: the weights sum to 1 within float32 rounding


__all__ = ["Mixup", "FastCollateMixup", "TimmMixParams", "MODES", "mixup_target", "one_hot", "rand_bbox",
           "rand_bbox_minmax", "cutmix_bbox_and_lam", "bbox_at"]
