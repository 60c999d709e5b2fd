"""fastmix.compat.timm against the real timm.data.mixup (1.0.31).

Injected parameters: timm runs with its own np.random draws, which are recorded (its
`_params_per_elem` / `_params_per_batch` results and every `cutmix_bbox_and_lam` box) and given to
fastmix as TimmMixParams; the outputs must then be equal:
- float32 images and every uint8 output bit for bit; targets within float32 rounding
  (assert_close defaults: rtol 1.3e-6, atol 1e-5);
- float64 images within rtol 1e-7, atol 3e-7 (timm's per-element partner weight is a float32
  `1 - lam`, 6e-8 relative error, on values up to ~5);
- float16 / bfloat16 images within one unit of their last place (timm computes in the half
  type, fastmix in float32 with one rounding), and their per-sample targets within 2^-7 (timm
  rounds those lams to the images' dtype, fastmix keeps float32: a documented difference).
The per-batch lam handed to timm is rounded to float32 first, as fastmix keeps lam in float32; it
is still a draw of timm's.

Free draws (fixed seeds, so the results are deterministic): two-sample tests between timm's and
fastmix's draws, with p-value thresholds of 1e-3, and a check that the same tests do reject a box
1 px short (timm <= 1.0.28's geometry), so they can fail.
"""
import copy
import re

import numpy as np
import pytest
import torch

timm_mixup = pytest.importorskip("timm.data.mixup")
stats = pytest.importorskip("scipy.stats")

from fastmix.compat import timm as compat  # noqa: E402
from fastmix.compat.timm import FastCollateMixup, Mixup, TimmMixParams  # noqa: E402

P_MIN = 1e-3  # two-sample tests: a fixed seed passes or fails the same way every run


class Recorder:
    """Records the parameters timm draws (and rounds its per-batch lam to float32)."""

    def __init__(self, monkeypatch):
        self.units, self.boxes = [], []
        per_elem, per_batch = timm_mixup.Mixup._params_per_elem, timm_mixup.Mixup._params_per_batch
        bbox = timm_mixup.cutmix_bbox_and_lam

        def record_elem(mixer, count):
            lam, use_cutmix = per_elem(mixer, count)
            self.units.append((lam.copy(), np.asarray(use_cutmix).copy()))
            return lam, use_cutmix

        def record_batch(mixer):
            lam, use_cutmix = per_batch(mixer)
            lam = float(np.float32(lam))
            self.units.append((np.array([lam]), np.array([use_cutmix])))
            return lam, use_cutmix

        def record_bbox(*args, **kwargs):
            result = bbox(*args, **kwargs)
            self.boxes.append(result)
            return result

        monkeypatch.setattr(timm_mixup.Mixup, "_params_per_elem", record_elem)
        monkeypatch.setattr(timm_mixup.Mixup, "_params_per_batch", record_batch)
        monkeypatch.setattr(timm_mixup, "cutmix_bbox_and_lam", record_bbox)

    def params(self) -> TimmMixParams:
        """The last call's parameters as fastmix's rows (lam area-corrected where timm corrects it)."""
        lam, use_cutmix = self.units[-1]
        boxes = iter(self.boxes)
        cut = use_cutmix & (lam != 1.0)
        lam_out, boxes_out = lam.astype(np.float64), np.zeros((len(lam), 4), np.int64)
        for i in np.flatnonzero(cut):
            (yl, yh, xl, xh), corrected = next(boxes)
            boxes_out[i] = [yl, yh, xl, xh]
            lam_out[i] = corrected
        assert next(boxes, None) is None, "timm drew a box fastmix's parameters do not account for"
        self.units.clear()
        self.boxes.clear()
        return TimmMixParams(torch.from_numpy(lam_out), torch.from_numpy(cut), torch.from_numpy(boxes_out))


CONFIGS = {
    "mixup": dict(mixup_alpha=0.8, cutmix_alpha=0.0),
    "cutmix": dict(mixup_alpha=0.0, cutmix_alpha=1.0),
    "switch": dict(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.5, prob=0.8),
    "minmax": dict(mixup_alpha=0.5, cutmix_minmax=(0.2, 0.7), switch_prob=0.6),
    "uncorrected": dict(mixup_alpha=0.4, cutmix_alpha=0.7, correct_lam=False, label_smoothing=0.0, prob=0.7),
    "smooth1": dict(mixup_alpha=1.0, cutmix_alpha=1.0, label_smoothing=1.0),
}
BATCH, HEIGHT, WIDTH = 8, 13, 18


def kinds(params):
    return {"cutmix" if c else ("mixup" if lam < 1 else "none")
            for c, lam in zip(params.use_cutmix.tolist(), params.lam.tolist())}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("mode", ["batch", "pair", "elem", "half"])
def test_mixup_matches_timm_on_its_own_draws(monkeypatch, mode, config):
    recorder = Recorder(monkeypatch)
    options = dict(CONFIGS[config], mode=mode, num_classes=np.int64(BATCH))
    x = torch.randn(BATCH, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))
    y = torch.randperm(BATCH, generator=torch.Generator().manual_seed(2))
    seen = set()
    for seed in range(12):
        np.random.seed(seed)
        theirs, their_targets = timm_mixup.Mixup(**options)(x.clone(), y)
        injected = recorder.params()
        ours, our_targets = Mixup(**options)(x, y, params=injected)
        assert torch.equal(ours, theirs), f"seed {seed}"
        torch.testing.assert_close(our_targets, their_targets)
        seen |= kinds(injected)
    expected = {"mixup": {"mixup"}, "cutmix": {"cutmix"}}.get(config, {"mixup", "cutmix"})
    assert expected <= seen


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_mixup_other_float_dtypes(monkeypatch, mode, dtype):
    recorder = Recorder(monkeypatch)
    options = dict(CONFIGS["switch"], mode=mode, num_classes=BATCH)
    x = torch.randn(BATCH, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(3)).to(dtype)
    y = torch.arange(BATCH)
    image_tol = {torch.float64: dict(rtol=1e-7, atol=3e-7), torch.float16: dict(rtol=1e-3, atol=2e-3),
                 torch.bfloat16: dict(rtol=8e-3, atol=1.6e-2)}[dtype]
    for seed in range(8):
        np.random.seed(seed)
        theirs, their_targets = timm_mixup.Mixup(**options)(x.clone(), y)
        ours, our_targets = Mixup(**options)(x, y, params=recorder.params())
        assert ours.dtype == theirs.dtype
        torch.testing.assert_close(ours, theirs, **image_tol)
        assert our_targets.dtype == torch.float32  # timm's per-sample targets take float64 images' dtype
        torch.testing.assert_close(our_targets, their_targets, rtol=0, atol=2 ** -7 if mode == "elem" else 1e-6,
                                   check_dtype=False)


def samples_of(images, labels, as_tensor):
    return [(torch.from_numpy(im.copy()) if as_tensor else im.copy(), label) for im, label in zip(images, labels)]


@pytest.mark.parametrize("backend", ["numba", "pytorch"])
@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("mode", ["batch", "pair", "elem", "half"])
def test_fast_collate_matches_timm_on_its_own_draws(monkeypatch, mode, config, as_tensor, backend):
    """`numba`: the fused collate kernel (fastmix.backends.numba.collate); `pytorch`: the stack
    and per-sample float32 blend fallback."""
    if backend == "numba":
        pytest.importorskip("numba")
    recorder = Recorder(monkeypatch)
    options = dict(CONFIGS[config], mode=mode, num_classes=BATCH)
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (3, HEIGHT, WIDTH), dtype=np.uint8) for _ in range(BATCH)]
    labels = rng.permutation(BATCH).tolist()
    ours_in = samples_of(images, labels, as_tensor)
    kept = copy.deepcopy(ours_in)
    seen = set()
    for seed in range(10):
        np.random.seed(seed)
        theirs, their_targets = timm_mixup.FastCollateMixup(**options)(samples_of(images, labels, as_tensor))
        injected = recorder.params()
        ours, our_targets = FastCollateMixup(**options, backend=backend)(ours_in, params=injected)
        assert ours.dtype == torch.uint8 and torch.equal(ours, theirs), f"seed {seed}"
        torch.testing.assert_close(our_targets, their_targets)
        seen |= kinds(injected)
    assert all(np.array_equal(np.asarray(a[0]), np.asarray(b[0])) for a, b in zip(ours_in, kept))
    expected = {"mixup": {"mixup"}, "cutmix": {"cutmix"}}.get(config, {"mixup", "cutmix"})
    assert expected <= seen


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (4, 1, 5, 7), (6, 3, 31, 17), (16, 3, 64, 65)])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem", "half"])
def test_fast_collate_numba_kernel_matches_timm_on_other_shapes(monkeypatch, mode, shape):
    """The fused kernel (fastmix.backends.numba.collate) against the real timm byte for byte,
    on batches and image sizes other than the main test's (one pixel, one channel, odd sides)."""
    pytest.importorskip("numba")
    batch, channels, height, width = shape
    recorder = Recorder(monkeypatch)
    options = dict(CONFIGS["switch"], mode=mode, num_classes=batch)
    rng = np.random.default_rng(batch * height + width)
    images = [rng.integers(0, 256, (channels, height, width), dtype=np.uint8) for _ in range(batch)]
    labels = rng.permutation(batch).tolist()
    for seed in range(6):
        np.random.seed(seed)
        theirs, their_targets = timm_mixup.FastCollateMixup(**options)(samples_of(images, labels, False))
        ours, our_targets = FastCollateMixup(**options, backend="numba")(samples_of(images, labels, True),
                                                                        params=recorder.params())
        assert torch.equal(ours, theirs), f"seed {seed}"
        torch.testing.assert_close(our_targets, their_targets)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_mixup_multi_label_and_disabled_mixing(monkeypatch, mode):
    recorder = Recorder(monkeypatch)
    x = torch.randn(6, 3, 9, 7, generator=torch.Generator().manual_seed(6))
    dense = torch.from_numpy(np.random.default_rng(6).integers(0, 2, (6, 5))).float()
    options = dict(CONFIGS["switch"], mode=mode, num_classes=5, multi_label=True, label_smoothing=0.3)
    for enabled in (True, False):
        np.random.seed(1)
        theirs_fn = timm_mixup.Mixup(**options)
        theirs_fn.mixup_enabled = enabled
        theirs, their_targets = theirs_fn(x.clone(), dense)
        ours_fn = Mixup(**options)
        ours_fn.mixup_enabled = enabled
        ours, our_targets = ours_fn(x, dense, params=recorder.params())
        assert torch.equal(ours, theirs)
        torch.testing.assert_close(our_targets, their_targets)


def test_fast_collate_multi_label(monkeypatch):
    recorder = Recorder(monkeypatch)
    rng = np.random.default_rng(5)
    samples = [(rng.integers(0, 256, (3, 8, 8), dtype=np.uint8), torch.from_numpy(rng.integers(0, 2, 5)).float())
               for _ in range(6)]
    for mode in ("batch", "elem", "half"):
        options = dict(CONFIGS["switch"], mode=mode, num_classes=5, multi_label=True, label_smoothing=0.2)
        np.random.seed(0)
        theirs, their_targets = timm_mixup.FastCollateMixup(**options)(copy.deepcopy(samples))
        ours, our_targets = FastCollateMixup(**options)(samples, params=recorder.params())
        assert torch.equal(ours, theirs)
        torch.testing.assert_close(our_targets, their_targets)


# ---- timm's functions ---------------------------------------------------------------------------

class NumpyWithScriptedRandom:
    """Stands in for timm.data.mixup's `np`: `np.random.randint` returns scripted values and
    records its bounds; everything else is NumPy."""

    def __init__(self, values):
        self.values, self.bounds = list(values), []
        self.random = self

    def randint(self, low, high=None, size=None):
        self.bounds.append((low, high))
        return self.values.pop(0)

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 17, 23), (5, 1, 6)])
def test_rand_bbox_geometry_equals_timms(monkeypatch, shape):
    height, width = shape[-2:]
    lams = np.concatenate([np.linspace(0, 1, 33), np.random.default_rng(0).random(40)])
    for lam in list(lams) + list(lams.astype(np.float32)):  # per-batch float64 and per-element float32 lams
        for cy, cx in [(0, 0), (height - 1, width - 1), (height // 2, width // 3), (height // 3, width - 2)]:
            scripted = NumpyWithScriptedRandom([cy, cx])
            monkeypatch.setattr(timm_mixup, "np", scripted)
            theirs = timm_mixup.rand_bbox(shape, lam)
            monkeypatch.undo()
            assert scripted.bounds == [(0, height), (0, width)]
            assert tuple(int(v) for v in compat.bbox_at(shape, lam, cy, cx)) == tuple(int(v) for v in theirs)


def test_rand_bbox_margin_bounds_equal_timms(monkeypatch):
    for margin, lam in [(0.25, 0.3), (0.5, 0.1), (0.1, 0.9)]:
        scripted = NumpyWithScriptedRandom([20, 20])
        monkeypatch.setattr(timm_mixup, "np", scripted)
        timm_mixup.rand_bbox((3, 40, 40), lam, margin=margin)
        monkeypatch.undo()
        (low, high), _ = scripted.bounds
        drawn = compat.rand_bbox((3, 40, 40), lam, margin=margin, count=4000, generator=torch.Generator().manual_seed(0))
        cut = int(40 * np.sqrt(1 - lam))
        centre = np.where(drawn[0] > 0, drawn[0] + cut // 2, drawn[1] - (cut + 1) // 2)
        assert (centre.min(), centre.max() + 1) == (low, high)


def test_rand_bbox_minmax_geometry_equals_timms(monkeypatch):
    for shape, minmax in [((3, 32, 32), (0.2, 0.8)), ((3, 17, 29), (0.1, 0.5))]:
        height, width = shape[-2:]
        rng = np.random.default_rng(1)
        for _ in range(50):
            cut_h = int(rng.integers(int(height * minmax[0]), int(height * minmax[1])))
            cut_w = int(rng.integers(int(width * minmax[0]), int(width * minmax[1])))
            yl, xl = int(rng.integers(0, height - cut_h + 1)), int(rng.integers(0, width - cut_w + 1))
            scripted = NumpyWithScriptedRandom([cut_h, cut_w, yl, xl])
            monkeypatch.setattr(timm_mixup, "np", scripted)
            theirs = timm_mixup.rand_bbox_minmax(shape, minmax)
            bounds = scripted.bounds
            monkeypatch.undo()
            assert theirs == (yl, yl + cut_h, xl, xl + cut_w)
            assert bounds == [(int(height * minmax[0]), int(height * minmax[1])),
                              (int(width * minmax[0]), int(width * minmax[1])),
                              (0, height - cut_h + 1), (0, width - cut_w + 1)]
        drawn = compat.rand_bbox_minmax(shape, minmax, count=20000, generator=torch.Generator().manual_seed(2))
        sides = drawn[1] - drawn[0]
        assert (sides.min(), sides.max() + 1) == (int(height * minmax[0]), int(height * minmax[1]))
        assert drawn[0].min() == 0 and drawn[1].max() == height


def test_mixup_target_equals_timms():
    rng = np.random.default_rng(3)
    y = torch.from_numpy(rng.integers(0, 7, 10))
    dense = torch.from_numpy(rng.integers(0, 2, (10, 7))).float()
    per_sample = torch.from_numpy(rng.random((10, 1)).astype(np.float32))
    for smoothing in (0.0, 0.1, 0.37, 1.0):
        for lam in (1.0, 0.3, np.float64(0.71), per_sample):
            torch.testing.assert_close(compat.mixup_target(y, 7, lam, smoothing),
                                       timm_mixup.mixup_target(y, 7, lam, smoothing), rtol=0, atol=0)
            torch.testing.assert_close(compat.mixup_target(dense, np.int64(7), lam, smoothing, multi_label=True),
                                       timm_mixup.mixup_target(dense, 7, lam, smoothing, multi_label=True),
                                       rtol=0, atol=0)
    for bad in (y, dense[:, :5]):
        with pytest.raises(ValueError) as theirs:
            timm_mixup.mixup_target(bad, 7, multi_label=True)
        with pytest.raises(ValueError, match=re.escape(str(theirs.value))):
            compat.mixup_target(bad, 7, multi_label=True)


def test_cutmix_bbox_and_lam_correction_equals_timms(monkeypatch):
    for correct_lam in (True, False):
        for minmax in (None, (0.3, 0.6)):
            scripted = NumpyWithScriptedRandom([5, 7] if minmax is None else [6, 8, 2, 1])
            monkeypatch.setattr(timm_mixup, "np", scripted)
            (their_box, their_lam) = timm_mixup.cutmix_bbox_and_lam((3, 20, 24), 0.55, minmax, correct_lam)
            monkeypatch.undo()
            box = compat.bbox_at((3, 20, 24), 0.55, 5, 7) if minmax is None else (2, 8, 1, 9)
            assert tuple(int(v) for v in box) == tuple(int(v) for v in their_box)
            area = (box[1] - box[0]) * (box[3] - box[2])
            assert their_lam == (1 - area / 480 if correct_lam or minmax else 0.55)
            ours = compat.cutmix_bbox_and_lam((3, 20, 24), 0.55, minmax, correct_lam,
                                              generator=torch.Generator().manual_seed(0))
            if not correct_lam and minmax is None:
                assert ours[1] == 0.55
            else:
                ours_box = ours[0]
                assert ours[1] == 1 - (ours_box[1] - ours_box[0]) * (ours_box[3] - ours_box[2]) / 480


# ---- free draws: distributions ------------------------------------------------------------------

def timm_units(monkeypatch, options, batch, height, width, calls=1):
    """The parameters timm draws in `calls` calls of its Mixup on a zero batch, concatenated."""
    recorder = Recorder(monkeypatch)
    np.random.seed(12345)
    rows = []
    for _ in range(calls):
        timm_mixup.Mixup(**options)(torch.zeros(batch, 1, height, width), torch.zeros(batch, dtype=torch.long))
        rows.append(recorder.params())
    monkeypatch.undo()
    return TimmMixParams(torch.cat([r.lam for r in rows]), torch.cat([r.use_cutmix for r in rows]),
                         torch.cat([r.boxes for r in rows]))


def fastmix_units(options, batch, height, width, calls=1, maker="Mixup"):
    """fastmix's draws: Mixup's (NumPy), or FastCollateMixup's with numba (its draws finished in
    the compiled timm_params_kernel, which tests/test_compat_timm.py checks equal bit for bit)."""
    if maker == "Mixup":
        mixer = Mixup(**options, generator=torch.Generator().manual_seed(54321))
    else:
        pytest.importorskip("numba")
        mixer = FastCollateMixup(**options, generator=torch.Generator().manual_seed(54321), backend="numba")
        assert mixer._compiled_params()
    rows = [mixer.make_params(batch, height, width) for _ in range(calls)]
    return TimmMixParams(torch.cat([r.lam for r in rows]), torch.cat([r.use_cutmix for r in rows]),
                         torch.cat([r.boxes for r in rows]))


def same_rate(hits_a, n_a, hits_b, n_b):
    """Two-proportion z-test: |z| < 4 (p ~ 6e-5 two-sided)."""
    pooled = (hits_a + hits_b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return se == 0 or abs(hits_a / n_a - hits_b / n_b) / se < 4


def box_features(params):
    cut = params.use_cutmix
    y1, y2, x1, x2 = params.boxes[cut].unbind(1)
    return {"corrected lam": params.lam[cut], "height": y2 - y1, "width": x2 - x1, "y1": y1, "x1": x1}


def ks(a, b):
    return stats.ks_2samp(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).pvalue


@pytest.mark.parametrize("maker", ["Mixup", "FastCollateMixup"])
def test_elem_draws_match_timms_distributions(monkeypatch, maker):
    options = dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.9, switch_prob=0.4, mode="elem", num_classes=2)
    n, size = 6000, 32
    theirs, ours = timm_units(monkeypatch, options, n, size, size), fastmix_units(options, n, size, size, maker=maker)
    mixed_t, mixed_o = theirs.lam < 1, ours.lam < 1
    assert same_rate(int(mixed_t.sum()), n, int(mixed_o.sum()), n)
    assert same_rate(int(theirs.use_cutmix.sum()), int(mixed_t.sum()), int(ours.use_cutmix.sum()), int(mixed_o.sum()))
    assert ks(theirs.lam[mixed_t & ~theirs.use_cutmix], ours.lam[mixed_o & ~ours.use_cutmix]) > P_MIN
    for name, (a, b) in {k: (v, box_features(ours)[k]) for k, v in box_features(theirs).items()}.items():
        assert ks(a, b) > P_MIN, name


def test_cutmix_box_tests_detect_a_box_one_pixel_short(monkeypatch):
    """The same tests on CutMix-only draws at 32x32: fastmix passes, timm <= 1.0.28's box
    (upper edge cy + cut // 2, one pixel short for odd cuts) is rejected."""
    options = dict(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=2)
    n, size = 12000, 32
    theirs, ours = timm_units(monkeypatch, options, n, size, size), fastmix_units(options, n, size, size)
    features_t, features_o = box_features(theirs), box_features(ours)
    for name in ("corrected lam", "height", "width", "y1"):
        assert ks(features_t[name], features_o[name]) > P_MIN, name
    old = fastmix_units(dict(options, correct_lam=False), n, size, size)  # the drawn lams and centres
    lam = old.lam.numpy()
    cut = (size * np.sqrt(1 - lam)).astype(np.int64)
    y1, y2 = old.boxes[:, 0].numpy(), old.boxes[:, 1].numpy()
    cy = np.where(y1 > 0, y1 + cut // 2, y2 - (cut + 1) // 2)
    old_height = np.clip(cy + cut // 2, 0, size) - np.clip(cy - cut // 2, 0, size)
    assert ks(features_t["height"], old_height) < P_MIN


@pytest.mark.parametrize("maker", ["Mixup", "FastCollateMixup"])
def test_batch_mode_rates_match_timms(monkeypatch, maker):
    options = dict(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.6, switch_prob=0.3, mode="batch", num_classes=2)
    calls = 3000
    theirs, ours = timm_units(monkeypatch, options, 2, 8, 8, calls), fastmix_units(options, 2, 8, 8, calls, maker=maker)
    mixed_t, mixed_o = int((theirs.lam < 1).sum()), int((ours.lam < 1).sum())
    assert same_rate(mixed_t, calls, mixed_o, calls)
    assert same_rate(int(theirs.use_cutmix.sum()), mixed_t, int(ours.use_cutmix.sum()), mixed_o)
    assert ks(theirs.lam[theirs.lam < 1], ours.lam[ours.lam < 1]) > P_MIN


def test_minmax_draws_match_timms_distributions(monkeypatch):
    options = dict(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8), mode="elem", num_classes=2)
    n = 8000
    theirs, ours = timm_units(monkeypatch, options, n, 24, 30), fastmix_units(options, n, 24, 30)
    features_t, features_o = box_features(theirs), box_features(ours)
    for name in features_t:
        assert ks(features_t[name], features_o[name]) > P_MIN, name
