"""fastmix.compat.timm.Mixup against timm.data.Mixup's documented behaviour.

Expectations are written from timm's semantics (pairing i <-> B-1-i, mixup_target's smoothing,
rand_bbox / rand_bbox_minmax, correct_lam) on injected parameters; the gpu-marked tests compare
with the real timm where it is installed, on parameters read back from timm's own output.
"""
import inspect

import numpy as np
import pytest
import torch

from fastmix.compat.timm import Mixup, TimmMixParams
from helpers import random_images

C = 10


def timm_targets(y, lam, num_classes=C, smoothing=0.1):
    """timm's mixup_target: off = s/K, on = 1 - s + off, lam * y1 + (1 - lam) * y2 with y2 = flip(y)."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    y1 = torch.full((len(y), num_classes), off).scatter_(1, y.view(-1, 1), on)
    y2 = torch.full((len(y), num_classes), off).scatter_(1, y.flip(0).view(-1, 1), on)
    lam = torch.as_tensor(lam, dtype=torch.float32).view(-1, 1)
    return y1 * lam + y2 * (1 - lam)


def params(lam, use_cutmix=None, boxes=None):
    n = len(lam)
    return TimmMixParams(torch.tensor(lam), torch.tensor(use_cutmix or [False] * n),
                         torch.tensor(boxes or [[0, 0, 0, 0]] * n))


def paste(target, source, box):
    y1, y2, x1, x2 = box
    out = target.clone()
    out[:, y1:y2, x1:x2] = source[:, y1:y2, x1:x2]
    return out


def test_constructor_signature_is_timms():
    signature = inspect.signature(Mixup)
    expected = dict(mixup_alpha=1., cutmix_alpha=0., cutmix_minmax=None, prob=1.0, switch_prob=0.5, mode='batch',
                    correct_lam=True, label_smoothing=0.1, num_classes=1000)
    positional = [p for p in signature.parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == list(expected.items())


def test_batch_mixup_blends_with_the_flipped_batch():
    x, y = random_images(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    before = x.clone()
    out, targets = Mixup(num_classes=C)(x, y, params=params([0.3]))
    torch.testing.assert_close(out, 0.3 * x + 0.7 * x.flip(0))
    torch.testing.assert_close(targets, timm_targets(y, [0.3] * 6))
    assert torch.equal(x, before)  # timm mixes in place; fastmix never does


def test_batch_cutmix_pastes_one_box_of_the_flipped_batch():
    x, y = random_images(6, 3, 8, 8), torch.arange(6)
    box = [1, 5, 2, 7]
    out, targets = Mixup(mixup_alpha=0, cutmix_alpha=1, num_classes=C)(x, y, params=params([1 - 20 / 64], [True], [box]))
    expected = torch.stack([paste(x[i], x[5 - i], box) for i in range(6)])
    assert torch.equal(out, expected)
    torch.testing.assert_close(targets, timm_targets(y, [1 - 20 / 64] * 6))


def test_odd_batch_pairs_the_middle_sample_with_itself():
    x, y = random_images(5, 3, 8, 8), torch.arange(5)
    out, targets = Mixup(num_classes=C)(x, y, params=params([0.4]))
    torch.testing.assert_close(out[2], x[2])
    torch.testing.assert_close(targets[2], timm_targets(y, [1.0] * 5)[2])


def test_elem_mode_mixes_each_sample_with_its_own_draw():
    x, y = random_images(5, 3, 8, 8), torch.arange(5)
    boxes = [[0, 0, 0, 0], [2, 6, 1, 4], [0, 0, 0, 0], [0, 8, 0, 3], [0, 0, 0, 0]]
    lam = [0.25, 1 - 12 / 64, 1.0, 1 - 24 / 64, 0.6]
    injected = params(lam, [False, True, False, True, False], boxes)
    mixup_fn = Mixup(mixup_alpha=1, cutmix_alpha=1, mode="elem", label_smoothing=0.0, num_classes=C)
    out, targets = mixup_fn(x, y, params=injected)
    partner = x.flip(0)
    expected = torch.stack([0.25 * x[0] + 0.75 * partner[0], paste(x[1], partner[1], boxes[1]), x[2],
                            paste(x[3], partner[3], boxes[3]), 0.6 * x[4] + 0.4 * partner[4]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(targets, timm_targets(y, lam, smoothing=0.0))
    assert mixup_fn.last_params is injected


def test_pair_mode_mixes_both_members_of_a_pair_with_one_draw():
    x, y = random_images(6, 3, 8, 8), torch.arange(6)
    box = [1, 4, 2, 8]
    injected = params([0.3, 1 - 18 / 64, 1.0], [False, True, False], [[0, 0, 0, 0], box, [0, 0, 0, 0]])
    out, targets = Mixup(mixup_alpha=1, cutmix_alpha=1, mode="pair", num_classes=C)(x, y, params=injected)
    expected = x.clone()
    expected[0], expected[5] = 0.3 * x[0] + 0.7 * x[5], 0.3 * x[5] + 0.7 * x[0]
    expected[1], expected[4] = paste(x[1], x[4], box), paste(x[4], x[1], box)
    torch.testing.assert_close(out, expected)
    lam = [0.3, 1 - 18 / 64, 1.0, 1.0, 1 - 18 / 64, 0.3]
    torch.testing.assert_close(targets, timm_targets(y, lam))
    with pytest.raises(ValueError, match="even batch"):
        Mixup(mode="pair", num_classes=C)(random_images(5, 3, 8, 8), torch.arange(5))


def test_half_mode_returns_the_first_half_mixed_with_the_second():
    x, y = random_images(6, 3, 8, 8), torch.arange(6)
    box = [0, 4, 0, 4]
    injected = params([0.7, 0.75, 1.0], [False, True, False], [[0, 0, 0, 0], box, [0, 0, 0, 0]])
    out, targets = Mixup(mixup_alpha=1, cutmix_alpha=1, mode="half", num_classes=C)(x, y, params=injected)
    expected = torch.stack([0.7 * x[0] + 0.3 * x[5], paste(x[1], x[4], box), x[2]])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(targets, timm_targets(y, [0.7, 0.75, 1.0, 1.0, 1.0, 1.0])[:3])
    with pytest.raises(ValueError, match="even batch"):
        Mixup(mode="half", num_classes=C)(random_images(3, 3, 8, 8), torch.arange(3))


def test_label_smoothing_and_disabled_mixing():
    x, y = random_images(4, 3, 8, 8), torch.tensor([3, 1, 4, 1])
    mixup_fn = Mixup(label_smoothing=0.2, num_classes=C, generator=torch.Generator().manual_seed(0))
    mixup_fn.mixup_enabled = False
    out, targets = mixup_fn(x, y)
    assert torch.equal(out, x) and out is not x
    expected = torch.full((4, C), 0.02).scatter_(1, y.view(-1, 1), 0.82)
    torch.testing.assert_close(targets, expected)


def test_dtypes_and_layouts():
    x = random_images(4, 3, 8, 8, dtype=torch.uint8, memory_format=torch.channels_last)
    out, targets = Mixup(num_classes=C)(x, torch.arange(4), params=params([0.5]))
    assert out.dtype == torch.uint8 and out.is_contiguous(memory_format=torch.channels_last)
    expected = (0.5 * x.float() + 0.5 * x.flip(0).float()).round().to(torch.uint8)
    assert torch.equal(out, expected)
    assert targets.dtype == torch.float32
    soft = torch.softmax(torch.randn(4, C), 1)
    _, soft_targets = Mixup(num_classes=C, label_smoothing=0.0)(random_images(4, 3, 8, 8), soft, params=params([0.25]))
    torch.testing.assert_close(soft_targets, 0.25 * soft + 0.75 * soft.flip(0))


def draw(n, **kwargs):
    kwargs.setdefault("num_classes", C)
    return Mixup(mode="elem", generator=torch.Generator().manual_seed(0), **kwargs).make_params(n, 16, 16)


def test_lam_distribution_prob_and_switch():
    uniform = draw(20000, mixup_alpha=1.0).lam
    assert abs(float(uniform.mean()) - 0.5) < 0.01 and abs(float(uniform.var()) - 1 / 12) < 0.004
    peaked = draw(20000, mixup_alpha=0.2).lam
    assert abs(float(peaked.var()) - 1 / (4 * 1.4)) < 0.01  # Beta(a, a) variance 1 / (4 (2a + 1))
    gated = draw(20000, mixup_alpha=1.0, prob=0.3).lam
    assert abs(float((gated == 1).float().mean()) - 0.7) < 0.015
    switched = draw(20000, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.25)
    assert abs(float(switched.use_cutmix.float().mean()) - 0.25) < 0.015
    batch = [Mixup(prob=0.5, num_classes=C, generator=torch.Generator().manual_seed(s)).make_params(4, 8, 8)
             for s in range(400)]
    assert all(p.lam.shape == (1,) for p in batch)
    assert 0.4 < np.mean([float(p.lam[0]) == 1.0 for p in batch]) < 0.6


def test_rand_bbox_geometry_and_lam_correction():
    height = width = 16
    raw = draw(4000, mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False)
    y1, y2, x1, x2 = raw.boxes.unbind(1)
    half = (height * torch.sqrt(1 - raw.lam.double())).floor().long() // 2  # int(H*sqrt(1-lam)) // 2
    assert bool(((y2 - y1) <= 2 * half).all()) and bool(((x2 - x1) <= 2 * half).all())
    inside = (y1 > 0) & (y2 < height)
    assert bool(((y2 - y1)[inside] == 2 * half[inside]).all())
    centre = torch.where(y1 > 0, y1 + half, y2 - half)  # the integer centre, recovered
    assert int(centre.min()) == 0 and int(centre.max()) == height - 1
    corrected = draw(4000, mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=True)
    assert torch.equal(corrected.boxes, raw.boxes)  # the same draws, only lam differs
    area = ((y2 - y1) * (x2 - x1)).float()
    torch.testing.assert_close(corrected.lam, 1 - area / (height * width))
    assert float(corrected.lam.mean()) > float(raw.lam.mean()) + 0.05  # clipping shrinks the boxes


def test_rand_bbox_minmax():
    mixup_fn = Mixup(mixup_alpha=0.0, cutmix_alpha=0.3, cutmix_minmax=(0.25, 0.75), correct_lam=False, num_classes=C)
    assert mixup_fn.cutmix_alpha == 1.0  # as timm: forced to 1 when minmax is active
    drawn = draw(4000, mixup_alpha=0.0, cutmix_minmax=(0.25, 0.75), correct_lam=False)
    y1, y2, x1, x2 = drawn.boxes.unbind(1)
    assert set((y2 - y1).tolist()) == set(range(4, 12)) and set((x2 - x1).tolist()) == set(range(4, 12))
    assert int(y1.min()) == 0 and bool((y2 <= 16).all()) and bool((y2 == 16).any()) and bool((x2 == 16).any())
    torch.testing.assert_close(drawn.lam, 1 - ((y2 - y1) * (x2 - x1)).float() / 256)  # always corrected
    with pytest.raises(ValueError, match="no box size"):
        Mixup(mixup_alpha=0, cutmix_minmax=(0.5, 0.55), num_classes=C)(random_images(2, 3, 4, 4), torch.arange(2))


def test_generator_reproducible_and_input_untouched():
    x, y = random_images(8, 3, 8, 8), torch.arange(8)
    before = x.clone()
    runs = [Mixup(mixup_alpha=1, cutmix_alpha=1, mode="elem", num_classes=C,
                  generator=torch.Generator().manual_seed(seed))(x, y) for seed in (5, 5, 6)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])
    assert torch.equal(x, before)


def test_argument_errors():
    with pytest.raises(ValueError, match="mode"):
        Mixup(mode="pairs")
    with pytest.raises(ValueError, match="nothing to do"):
        Mixup(mixup_alpha=0.0, cutmix_alpha=0.0)
    with pytest.raises(ValueError, match="prob"):
        Mixup(prob=1.5)
    with pytest.raises(ValueError, match="cutmix_minmax"):
        Mixup(cutmix_minmax=(0.8, 0.2))
    with pytest.raises(ValueError, match="num_classes"):
        Mixup(num_classes=0)
    with pytest.raises(TypeError, match="generator"):
        Mixup(generator=np.random.default_rng(0))
    mixup_fn = Mixup(mode="elem", num_classes=C)
    with pytest.raises(ValueError, match="parameter rows"):
        mixup_fn(random_images(4, 3, 8, 8), torch.arange(4), params=params([0.5]))
    with pytest.raises(ValueError, match="one entry per sample"):
        mixup_fn(random_images(4, 3, 8, 8), torch.arange(3))
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\]"):
        params([1.5])


# ---- against the real timm (installed on the GPU test machine) --------------------------------

def read_back_params(x, out, targets, y, units, smoothing):
    """The parameters timm used, recovered from its output: lam from the targets (labels are
    distinct from their partners'), a box where the output is an exact copy of the partner on the
    bounding rectangle of the changed pixels, a blend otherwise."""
    batch, (rows, num_classes) = x.shape[0], targets.shape  # 'half' returns B/2 rows
    off = smoothing / num_classes
    own = targets[torch.arange(rows), y[:rows].to(targets.device)]
    lam_all = (own.double().cpu() - off) / (1.0 - smoothing)
    lam, use_cutmix, boxes = [], [], []
    for i in range(units):
        partner = x[batch - 1 - i]
        changed = (out[i] != x[i]).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        box = [int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1] if changed.any() \
            else [0, 0, 0, 0]
        copied = bool(changed.any()) and torch.equal(out[i, :, box[0]:box[1], box[2]:box[3]],
                                                    partner[:, box[0]:box[1], box[2]:box[3]])
        cut = copied or (not bool(changed.any()) and float(lam_all[i]) < 1.0)
        lam.append(float(lam_all[i]))
        use_cutmix.append(cut)
        boxes.append(box if cut else [0, 0, 0, 0])
    return TimmMixParams(torch.tensor(lam), torch.tensor(use_cutmix), torch.tensor(boxes))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_matches_real_timm_mixup(mode):
    timm_mixup = pytest.importorskip("timm.data.mixup")
    batch, device = 8, "cuda"
    x = random_images(batch, 3, 16, 16, seed=1).to(device)
    y = torch.arange(batch, device=device)
    options = dict(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.8, switch_prob=0.5, mode=mode, label_smoothing=0.1,
                   num_classes=batch)
    seen = set()
    for seed in range(16):
        np.random.seed(seed)
        theirs, their_targets = timm_mixup.Mixup(**options)(x.clone(), y)
        units = {"batch": 1, "pair": batch // 2, "elem": batch}[mode]
        injected = read_back_params(x, theirs, their_targets, y, units, 0.1)
        ours, our_targets = Mixup(**options)(x, y, params=injected)
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(our_targets, their_targets.float())
        seen.update("cutmix" if c else ("mixup" if lam < 1 else "none")
                    for c, lam in zip(injected.use_cutmix.tolist(), injected.lam.tolist()))
    assert {"cutmix", "mixup"} <= seen


@pytest.mark.gpu
def test_half_mode_matches_real_timm_fast_collate_mixup():
    timm_mixup = pytest.importorskip("timm.data.mixup")
    batch = 8
    x = random_images(batch, 3, 16, 16, dtype=torch.uint8, seed=2)
    y = torch.arange(batch)
    options = dict(mixup_alpha=1.0, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode="half", label_smoothing=0.0,
                   num_classes=batch)
    for seed in range(4):
        np.random.seed(seed)
        samples = [(x[i].numpy().copy(), int(y[i])) for i in range(batch)]
        theirs, their_targets = timm_mixup.FastCollateMixup(**options)(samples)
        injected = read_back_params(x, theirs, their_targets, y, batch // 2, 0.0)
        ours, our_targets = Mixup(**options)(x, y, params=injected)
        assert ours.shape == theirs.shape and int((ours.int() - theirs.int()).abs().max()) <= 1
        torch.testing.assert_close(our_targets, their_targets.float())
