"""fastmix.compat.timm against timm.data.mixup's documented behaviour (timm 1.0.31).

Expectations are written here from timm's semantics (pairing i <-> B-1-i, mixup_target's smoothing,
rand_bbox's (cut+1)//2 upper edge, rand_bbox_minmax, correct_lam, FastCollateMixup's uint8 blend
with np.rint) on injected parameters. tests_peers/test_timm_peer.py compares with the real timm.
"""
import inspect

import numpy as np
import pytest
import torch

from fastmix import dispatch
from fastmix.backends import numba as numba_backend
from fastmix.compat import timm as compat
from fastmix.compat.timm import FastCollateMixup, Mixup, TimmMixParams
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


def test_signatures_are_timms():
    expected = dict(mixup_alpha=1., cutmix_alpha=0., cutmix_minmax=None, prob=1.0, switch_prob=0.5, mode='batch',
                    correct_lam=True, label_smoothing=0.1, num_classes=1000, multi_label=False)
    for cls in (Mixup, FastCollateMixup):
        positional = [p for p in inspect.signature(cls).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert [(p.name, p.default) for p in positional] == list(expected.items())
    functions = {compat.rand_bbox: ["img_shape", "lam", "margin", "count"],
                 compat.rand_bbox_minmax: ["img_shape", "minmax", "count"],
                 compat.cutmix_bbox_and_lam: ["img_shape", "lam", "ratio_minmax", "correct_lam", "count"],
                 compat.mixup_target: ["target", "num_classes", "lam", "smoothing", "multi_label"]}
    for function, names in functions.items():
        positional = [p.name for p in inspect.signature(function).parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert positional == names, function.__name__


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


def test_mixed_batch_paste_paths_agree():
    """The CPU's per-box copy and the paste-op-and-select path (used on GPUs) give the same batch."""
    for dtype in (torch.float32, torch.uint8, torch.bfloat16):
        x = random_images(6, 3, 9, 11, dtype=dtype, seed=5)
        lam = torch.tensor([0.3, 0.8, 1.0, 0.5, 0.6, 0.9])
        use_cutmix = torch.tensor([False, True, False, True, False, True])
        boxes = torch.tensor([[0, 0, 0, 0], [1, 5, 2, 9], [0, 0, 0, 0], [0, 9, 0, 4], [0, 0, 0, 0], [3, 4, 10, 11]])
        flip = torch.arange(5, -1, -1)
        sliced = compat._mix(x, flip, lam, use_cutmix, boxes, slice_paste=True)
        selected = compat._mix(x, flip, lam, use_cutmix, boxes, slice_paste=False)
        assert torch.equal(sliced, selected)
        assert torch.equal(sliced[1], paste(x[1], x[4], [1, 5, 2, 9]))


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


def test_mixup_half_mode_is_batch_mode_as_in_timm():
    """timm's Mixup falls through to its batch path for 'half'; only FastCollateMixup halves."""
    x, y = random_images(6, 3, 8, 8), torch.arange(6)
    mixup_fn = Mixup(mode="half", num_classes=C, generator=torch.Generator().manual_seed(1))
    assert mixup_fn.make_params(6, 8, 8).lam.shape == (1,)
    out, targets = mixup_fn(x, y, params=params([0.7]))
    torch.testing.assert_close(out, 0.7 * x + 0.3 * x.flip(0))
    assert targets.shape == (6, C)


def test_multi_label_label_smoothing_one_and_numpy_num_classes():
    x = random_images(4, 3, 8, 8)
    dense = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 0, 0, 0], [0, 0, 0, 1, 0]], dtype=torch.float32)
    mixup_fn = Mixup(multi_label=True, num_classes=np.int64(5), label_smoothing=0.2)
    assert mixup_fn.num_classes == 5 and type(mixup_fn.num_classes) is int
    _, targets = mixup_fn(x, dense, params=params([0.25]))
    smoothed = dense * 0.8 + 0.1  # toward 0.5: t * (1 - s) + 0.5 * s
    torch.testing.assert_close(targets, 0.25 * smoothed + 0.75 * smoothed.flip(0))
    with pytest.raises(ValueError, match="Multi-label mixup expects dense targets"):
        mixup_fn(x, torch.arange(4))
    _, flat = Mixup(label_smoothing=1.0, num_classes=np.int32(4))(x, torch.tensor([0, 1, 2, 3]), params=params([0.3]))
    torch.testing.assert_close(flat, torch.full((4, 4), 0.25))  # smoothing 1: uniform targets


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


# ---- timm's functions ---------------------------------------------------------------------------

def test_bbox_at_upper_edge_is_cut_plus_one_halved():
    """timm >= 1.0.29: rows [cy - cut//2, cy + (cut+1)//2), so an unclipped box is exactly cut long."""
    for height, width in [(32, 32), (12, 17)]:
        for lam in np.linspace(0.0, 1.0, 37):
            cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
            for cy, cx in [(0, 0), (height // 2, width // 2), (height - 1, width - 1), (3, width - 2)]:
                yl, yh, xl, xh = compat.bbox_at((3, height, width), lam, cy, cx)
                assert (yl, yh) == (max(cy - cut_h // 2, 0), min(cy + (cut_h + 1) // 2, height))
                assert (xl, xh) == (max(cx - cut_w // 2, 0), min(cx + (cut_w + 1) // 2, width))
            if cut_h <= height // 2 and cut_w <= width // 2:  # inside the image: the full cut
                yl, yh, xl, xh = compat.bbox_at((height, width), lam, height // 2, width // 2)
                assert (yh - yl, xh - xl) == (cut_h, cut_w)


def test_rand_bbox_return_types_margin_and_generator():
    gen = torch.Generator().manual_seed(0)
    box = compat.rand_bbox((3, 16, 16), 0.5, generator=gen)
    assert all(isinstance(v, np.integer) for v in box)
    many = compat.rand_bbox((3, 16, 20), 0.5, count=500, generator=gen)
    assert all(isinstance(v, np.ndarray) and v.shape == (500,) and v.dtype == np.int64 for v in many)
    yl, yh, xl, xh = many
    cut_h, cut_w = int(16 * np.sqrt(0.5)), int(20 * np.sqrt(0.5))  # 11, 14
    cy, cx = np.where(yl > 0, yl + cut_h // 2, yh - (cut_h + 1) // 2), np.where(xl > 0, xl + cut_w // 2, xh - (cut_w + 1) // 2)
    assert cy.min() == 0 and cy.max() == 15 and cx.min() == 0 and cx.max() == 19
    margined = compat.rand_bbox((16, 20), 0.5, margin=0.5, count=500, generator=gen)
    cy = margined[0] + cut_h // 2  # margin 0.5 keeps the centre >= cut//2 px from the border: never clipped above
    assert cy.min() == int(0.5 * cut_h) and cy.max() == 16 - int(0.5 * cut_h) - 1
    again = compat.rand_bbox((3, 16, 20), 0.5, count=500, generator=torch.Generator().manual_seed(7))
    assert all(np.array_equal(a, b) for a, b in
               zip(again, compat.rand_bbox((3, 16, 20), 0.5, count=500, generator=torch.Generator().manual_seed(7))))
    with pytest.raises(ValueError, match="low >= high"):
        compat.rand_bbox((4, 4), 0.0, margin=1.0)


def test_rand_bbox_minmax_and_cutmix_bbox_and_lam():
    gen = torch.Generator().manual_seed(1)
    yl, yu, xl, xu = compat.rand_bbox_minmax((3, 16, 16), (0.25, 0.75), count=2000, generator=gen)
    assert set((yu - yl).tolist()) == set(range(4, 12)) and set((xu - xl).tolist()) == set(range(4, 12))
    assert yl.min() == 0 and yu.max() == 16 and xu.max() == 16  # the last origin is reachable
    (box, lam) = compat.cutmix_bbox_and_lam((3, 16, 16), 0.3, count=100, generator=gen)
    area = (box[1] - box[0]) * (box[3] - box[2])
    np.testing.assert_array_equal(lam, 1.0 - area / 256.0)
    (_, raw_lam) = compat.cutmix_bbox_and_lam((3, 16, 16), 0.3, correct_lam=False, generator=gen)
    assert raw_lam == 0.3
    (_, minmax_lam) = compat.cutmix_bbox_and_lam((3, 16, 16), 0.3, ratio_minmax=(0.25, 0.5), correct_lam=False,
                                                 generator=gen)
    assert minmax_lam != 0.3  # minmax always corrects
    with pytest.raises(ValueError, match="low >= high"):
        compat.rand_bbox_minmax((3, 4, 4), (0.5, 0.55))


def test_mixup_target_forms():
    y = torch.tensor([2, 0, 1, 3])
    torch.testing.assert_close(compat.mixup_target(y, 4, 0.3, 0.1), timm_targets(y, [0.3] * 4, 4, 0.1))
    per_sample = torch.tensor([[0.1], [0.5], [0.9], [1.0]])
    torch.testing.assert_close(compat.mixup_target(y, 4, per_sample, 0.0), timm_targets(y, per_sample.flatten(), 4, 0.0))
    torch.testing.assert_close(compat.one_hot(y, 4, on_value=0.9, off_value=0.1)[0], torch.tensor([0.1, 0.1, 0.9, 0.1]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        compat.mixup_target(torch.tensor([0, 4]), 4)


# ---- drawing ---------------------------------------------------------------------------------------

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


def test_drawn_boxes_follow_rand_bbox_and_lam_correction():
    height = width = 16
    raw = draw(4000, mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=False)
    y1, y2, x1, x2 = raw.boxes.unbind(1)
    cut = (height * torch.sqrt(1 - raw.lam)).long()  # float32 lam, as timm's per-element modes
    assert bool(((y2 - y1) <= cut).all()) and bool(((x2 - x1) <= cut).all())
    inside = (y1 > 0) & (y2 < height)
    assert bool(((y2 - y1)[inside] == cut[inside]).all())
    centre = torch.where(y1 > 0, y1 + cut // 2, y2 - (cut + 1) // 2)  # the integer centre, recovered
    assert int(centre.min()) == 0 and int(centre.max()) == height - 1
    corrected = draw(4000, mixup_alpha=0.0, cutmix_alpha=1.0, correct_lam=True)
    assert torch.equal(corrected.boxes, raw.boxes)  # the same draws, only lam differs
    area = ((y2 - y1) * (x2 - x1)).float()
    torch.testing.assert_close(corrected.lam, 1 - area / (height * width))
    assert float(corrected.lam.mean()) > float(raw.lam.mean()) + 0.05  # clipping shrinks the boxes


def test_drawn_minmax_boxes():
    mixup_fn = Mixup(mixup_alpha=0.0, cutmix_alpha=0.3, cutmix_minmax=(0.25, 0.75), correct_lam=False, num_classes=C)
    assert mixup_fn.cutmix_alpha == 1.0  # as timm: forced to 1 when minmax is active
    drawn = draw(4000, mixup_alpha=0.0, cutmix_minmax=(0.25, 0.75), correct_lam=False)
    y1, y2, x1, x2 = drawn.boxes.unbind(1)
    assert set((y2 - y1).tolist()) == set(range(4, 12)) and set((x2 - x1).tolist()) == set(range(4, 12))
    assert int(y1.min()) == 0 and bool((y2 <= 16).all()) and bool((y2 == 16).any()) and bool((x2 == 16).any())
    torch.testing.assert_close(drawn.lam, 1 - ((y2 - y1) * (x2 - x1)).float() / 256)  # always corrected
    with pytest.raises(ValueError, match="no box size"):
        Mixup(mixup_alpha=0, cutmix_minmax=(0.5, 0.55), num_classes=C)(random_images(2, 3, 4, 4), torch.arange(2))


def test_boxes_at_equals_bbox_at():
    """The vectorised box geometry of make_params against bbox_at (timm's rand_bbox arithmetic) on
    float32 and float64 lams, edge lams (0 and 1) and centres at both borders."""
    rng = np.random.default_rng(16)
    for dtype in (np.float32, np.float64):
        for height, width in [(16, 16), (1, 1), (7, 224), (224, 225)]:
            lam = np.concatenate([[0.0, 1.0, 0.5], rng.random(500)]).astype(dtype)
            centre = np.concatenate([np.zeros((2, 1)), np.full((2, 1), 1 - 2 ** -53), rng.random((2, 501))], axis=1)
            boxes = compat._boxes_at(lam, centre, height, width)
            cy = np.floor(centre[0] * height).astype(np.int64)
            cx = np.floor(centre[1] * width).astype(np.int64)
            assert cy.max() < height and cx.max() < width
            expected = np.stack(compat.bbox_at((height, width), lam, cy, cx), axis=1)
            assert np.array_equal(boxes, expected), (dtype, height, width)


CONFIGS_FOR_DRAWS = [dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.4, prob=0.7),
                     dict(mixup_alpha=0.3), dict(mixup_alpha=0.0, cutmix_alpha=0.5, prob=0.9),
                     dict(mixup_alpha=1.0, cutmix_alpha=2.0, correct_lam=False), dict(mixup_alpha=0.5, cutmix_minmax=(0.2, 0.6))]


@pytest.mark.skipif(not numba_backend.available(), reason="numba is not installed")
@pytest.mark.parametrize("mode", ["batch", "elem", "pair", "half"])
def test_compiled_params_equal_the_numpy_path(mode):
    """FastCollateMixup finishes its draws in numba (timm_params_kernel), Mixup and the pytorch
    backend with NumPy: the same generator seed gives the same parameters bit for bit."""
    for config in CONFIGS_FOR_DRAWS:
        for seed in range(3):
            for batch, height, width in [(64, 224, 224), (6, 13, 18), (2, 1, 1)]:
                if "cutmix_minmax" in config and height == 1:
                    continue  # no box size fits (an error, tested elsewhere)
                compiled = FastCollateMixup(**config, mode=mode, num_classes=C, backend="numba",
                                            generator=torch.Generator().manual_seed(seed))
                plain = FastCollateMixup(**config, mode=mode, num_classes=C, backend="pytorch",
                                         generator=torch.Generator().manual_seed(seed))
                assert compiled._compiled_params() and not plain._compiled_params()
                ours, theirs = compiled.make_params(batch, height, width), plain.make_params(batch, height, width)
                for name in ("lam", "use_cutmix", "boxes"):
                    a, b = getattr(ours, name), getattr(theirs, name)
                    assert a.dtype == b.dtype and torch.equal(a, b), (config, mode, seed, batch, name)
                if mode != "half":  # Mixup treats 'half' as 'batch'
                    mixup = Mixup(**config, mode=mode, num_classes=C, generator=torch.Generator().manual_seed(seed))
                    assert torch.equal(mixup.make_params(batch, height, width).boxes, theirs.boxes)


def test_one_torch_draw_seeds_each_call():
    """Each call's NumPy generator is seeded by one draw of the torch generator (4 x 63 bits): the
    generator's seed, or torch.manual_seed for generator=None, fixes every draw."""
    def run(generator):
        mixer = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem", num_classes=C, generator=generator)
        return [mixer.make_params(16, 32, 32) for _ in range(3)]

    first, again = run(torch.Generator().manual_seed(3)), run(torch.Generator().manual_seed(3))
    assert all(torch.equal(a.lam, b.lam) and torch.equal(a.boxes, b.boxes) for a, b in zip(first, again))
    assert not torch.equal(first[0].lam, first[1].lam)  # the generator advances between calls
    torch.manual_seed(4)
    global_draws = run(None)
    torch.manual_seed(4)
    assert all(torch.equal(a.lam, b.lam) for a, b in zip(global_draws, run(None)))
    generator = torch.Generator().manual_seed(5)
    state = generator.get_state()
    compat._call_rng(generator)
    after_one = generator.get_state()
    generator.set_state(state)
    torch.empty(4, dtype=torch.int64).random_(generator=generator)
    assert torch.equal(after_one, generator.get_state())  # exactly one torch draw per call
    with pytest.raises(ValueError, match="seed words"):
        compat._TorchWords(np.zeros(4, np.uint64)).generate_state(9)


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
    with pytest.raises(ValueError, match="label_smoothing"):
        Mixup(label_smoothing=1.01)
    with pytest.raises(ValueError, match="cutmix_minmax"):
        Mixup(cutmix_minmax=(0.8, 0.2))
    for bad in (0, 2.5, True, "10"):
        with pytest.raises(ValueError, match="num_classes"):
            Mixup(num_classes=bad)
    with pytest.raises(TypeError, match="generator"):
        Mixup(generator=np.random.default_rng(0))
    mixup_fn = Mixup(mode="elem", num_classes=C)
    with pytest.raises(ValueError, match="parameter rows"):
        mixup_fn(random_images(4, 3, 8, 8), torch.arange(4), params=params([0.5]))
    with pytest.raises(ValueError, match="one entry per sample"):
        mixup_fn(random_images(4, 3, 8, 8), torch.arange(3))
    with pytest.raises(ValueError, match=r"lam must lie in \[0, 1\]"):
        params([1.5])
    with pytest.raises(ValueError, match="CutMix boxes"):
        Mixup(num_classes=C)(random_images(2, 3, 8, 8), torch.arange(2), params=params([0.5], [True], [[0, 9, 0, 2]]))


# ---- FastCollateMixup -------------------------------------------------------------------------------

def uint8_samples(batch, shape=(3, 8, 10), seed=0, as_tensor=False):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(batch)]
    return [(torch.from_numpy(im) if as_tensor else im, i) for i, im in enumerate(images)]


def rint_blend(a, b, lam):
    """timm's collate blend: float32 lam * a + (1 - lam) * b, np.rint, uint8."""
    lam = np.float32(lam)
    mixed = a.astype(np.float32) * lam + b.astype(np.float32) * (np.float32(1) - lam)
    return torch.from_numpy(np.rint(mixed).astype(np.uint8))


BACKENDS = ["pytorch", pytest.param("numba", marks=pytest.mark.skipif(not numba_backend.available(),
                                                                      reason="numba is not installed"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_fast_collate_every_mode_on_injected_params(as_tensor, backend):
    samples = uint8_samples(6, as_tensor=as_tensor)
    src = [s[0].numpy() if as_tensor else s[0] for s in samples]
    kept = [a.copy() for a in src]
    y = torch.arange(6)
    box = [1, 6, 2, 9]
    cases = {
        "batch": (params([0.35]), [rint_blend(src[i], src[5 - i], 0.35) for i in range(6)], [0.35] * 6),
        "elem": (params([0.2, 0.75, 1.0, 0.5, 0.9, 0.6], [False, True, False, False, False, False],
                        [[0, 0, 0, 0], box, [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
                 [rint_blend(src[0], src[5], 0.2), paste(torch.from_numpy(src[1]), torch.from_numpy(src[4]), box),
                  torch.from_numpy(src[2]), rint_blend(src[3], src[2], 0.5), rint_blend(src[4], src[1], 0.9),
                  rint_blend(src[5], src[0], 0.6)], [0.2, 0.75, 1.0, 0.5, 0.9, 0.6]),
        "pair": (params([0.3, 0.75, 1.0], [False, True, False], [[0, 0, 0, 0], box, [0, 0, 0, 0]]),
                 [rint_blend(src[0], src[5], 0.3), paste(torch.from_numpy(src[1]), torch.from_numpy(src[4]), box),
                  torch.from_numpy(src[2]), torch.from_numpy(src[3]),
                  paste(torch.from_numpy(src[4]), torch.from_numpy(src[1]), box), rint_blend(src[5], src[0], 0.3)],
                 [0.3, 0.75, 1.0, 1.0, 0.75, 0.3]),
        "half": (params([0.45, 0.75, 1.0], [False, True, False], [[0, 0, 0, 0], box, [0, 0, 0, 0]]),
                 [rint_blend(src[0], src[5], 0.45), paste(torch.from_numpy(src[1]), torch.from_numpy(src[4]), box),
                  torch.from_numpy(src[2])], [0.45, 0.75, 1.0, 1.0, 1.0, 1.0]),
    }
    for mode, (injected, expected, lam) in cases.items():
        collate = FastCollateMixup(mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, num_classes=C, backend=backend)
        out, targets = collate(samples, params=injected)
        assert out.dtype == torch.uint8 and out.shape == (len(expected), 3, 8, 10), mode
        assert torch.equal(out, torch.stack(expected)), mode
        torch.testing.assert_close(targets, timm_targets(y, lam)[:len(expected)])
        assert all(np.array_equal(a, k) for a, k in zip(src, kept)), f"{mode}: a sample changed"


def test_fast_collate_blend_matches_the_pytorch_op_bit_for_bit():
    """The per-sample fallback and fastmix's mixup_blend op round identically on random data."""
    for seed, shape in enumerate([(3, 7, 9), (1, 16, 16), (4, 5, 33)]):
        samples = uint8_samples(8, shape, seed=seed)
        lam = torch.from_numpy(np.random.default_rng(seed).random(8).astype(np.float32))
        out = compat._stack([s[0] for s in samples])
        compat._blend_rows(out, [s[0] for s in samples], list(range(8)), lam)
        stacked = torch.from_numpy(np.stack([s[0] for s in samples]))
        expected = dispatch.mixup_blend(stacked, torch.arange(7, -1, -1), lam, backend="pytorch")
        assert torch.equal(out, expected)


def _random_draws(mode, batch, height, width, seed):
    """Random injected parameters of every kind (blend, paste incl. empty and edge boxes, unmixed)."""
    rng = np.random.default_rng(seed)
    units = {"batch": 1, "elem": batch, "pair": batch // 2, "half": batch // 2}[mode]
    kind = rng.integers(0, 3, units)  # 0 unmixed, 1 blend, 2 paste
    lam = np.where(kind == 0, 1.0, rng.random(units)).astype(np.float32)
    y = np.sort(rng.integers(0, height + 1, (units, 2)), axis=1)
    x = np.sort(rng.integers(0, width + 1, (units, 2)), axis=1)
    boxes = np.stack([y[:, 0], y[:, 1], x[:, 0], x[:, 1]], axis=1)
    return TimmMixParams(torch.from_numpy(lam), torch.from_numpy(kind == 2), torch.from_numpy(boxes))


@pytest.mark.skipif(not numba_backend.available(), reason="numba is not installed")
@pytest.mark.parametrize("mode", ["batch", "elem", "pair", "half"])
def test_fast_collate_numba_kernel_matches_the_pytorch_path(mode):
    """The fused kernel against the stack-and-blend path on random samples of many shapes (odd
    sizes, one channel, one pixel, B = 1 and 2), NumPy and strided tensor samples."""
    shapes = [(3, 8, 10), (1, 1, 1), (3, 7, 13), (4, 33, 5), (3, 1, 200), (2, 130, 131)]
    sizes = [1, 2, 3, 6, 9] if mode in ("batch", "elem") else [2, 4, 10]
    for seed, (shape, batch) in enumerate((s, b) for s in shapes for b in sizes):
        samples = uint8_samples(batch, shape, seed=seed)
        if seed % 3 == 1:  # strided tensor samples: a channels-last buffer seen as [C, H, W]
            samples = [(torch.from_numpy(np.ascontiguousarray(im.transpose(1, 2, 0))).permute(2, 0, 1), t)
                       for im, t in samples]
        kept = [np.asarray(s[0].numpy() if torch.is_tensor(s[0]) else s[0]).copy() for s in samples]
        for draw in range(3):
            injected = _random_draws(mode, batch, shape[1], shape[2], seed * 7 + draw)
            options = dict(mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, num_classes=C)
            fused, fused_targets = FastCollateMixup(**options, backend="numba")(samples, params=injected)
            expected, targets = FastCollateMixup(**options, backend="pytorch")(samples, params=injected)
            assert fused.is_contiguous() and fused.shape == expected.shape
            assert torch.equal(fused, expected), (mode, shape, batch, draw)
            assert torch.equal(fused_targets, targets)
        assert all(np.array_equal(np.asarray(s[0]), k) for s, k in zip(samples, kept))


def _expected_rows(images, mode, lam, cut, boxes):
    """The collate kernel's output from its definition: row i of sample i and its partner B-1-i by
    its unit's parameters (pasted where cut, blended where lam < 1, copied otherwise)."""
    from fastmix.backends.numba import collate

    size = len(images)
    rows = size // 2 if mode == collate.HALF else size
    expected = []
    for i in range(rows):
        unit = {collate.BATCH: 0, collate.PAIR: min(i, size - 1 - i)}.get(mode, i)
        own, other = images[i], images[size - 1 - i]
        if cut[unit]:
            y1, y2, x1, x2 = boxes[unit]
            row = own.copy()
            row[:, y1:y2, x1:x2] = other[:, y1:y2, x1:x2]
        elif lam[unit] < 1:
            row = rint_blend(own, other, lam[unit]).numpy()
        else:
            row = own.copy()
        expected.append(row)
    return np.stack(expected)


@pytest.mark.skipif(not numba_backend.available(), reason="numba is not installed")
@pytest.mark.parametrize("threads", [1, 2])
def test_collate_kernel_writes_every_returned_row(threads):
    """Every mode's row-to-unit map, every row kind (blend pairs, blend next to paste, empty and
    full boxes), odd sizes and B = 1, into a poisoned output; one thread runs the serial driver,
    two the parallel one."""
    from fastmix.backends.numba import collate

    rng = np.random.default_rng(11)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for shape in [(3, 9, 11), (1, 1, 1), (2, 40, 3), (3, 130, 131)]:
            _, height, width = shape
            for mode in (collate.BATCH, collate.ELEM, collate.PAIR, collate.HALF):
                for size in ([2, 4, 6] if mode in (collate.PAIR, collate.HALF) else [1, 3, 6]):
                    images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(size)]
                    kept = [im.copy() for im in images]
                    units = collate.units_of(mode, size)
                    for draw in range(4):
                        kind = rng.integers(0, 3, units) if draw else np.ones(units, np.int64)  # draw 0: all blend
                        lam = np.where(kind == 0, 1.0, rng.random(units)).astype(np.float32)
                        y = np.sort(rng.integers(0, height + 1, (units, 2)), axis=1)
                        x = np.sort(rng.integers(0, width + 1, (units, 2)), axis=1)
                        boxes = np.stack([y[:, 0], y[:, 1], x[:, 0], x[:, 1]], axis=1)
                        rows = size // 2 if mode == collate.HALF else size
                        out = np.full((rows, *shape), 77, dtype=np.uint8)  # poison: every byte must be rewritten
                        result = collate.collate_mix(images, mode, lam, kind == 2, boxes, out=out)
                        assert result is out
                        expected = _expected_rows(images, mode, lam, kind == 2, boxes)
                        assert np.array_equal(out, expected), (shape, mode, size, draw)
                        assert np.array_equal(collate.collate_mix(images, mode, lam, kind == 2, boxes), expected)
                    assert all(np.array_equal(a, k) for a, k in zip(images, kept))
    finally:
        torch.set_num_threads(previous)


@pytest.mark.skipif(not numba_backend.available(), reason="numba is not installed")
def test_collate_kernel_reads_sample_addresses_both_ways(monkeypatch):
    """The data pointers read from the array objects (the fast path) equal __array_interface__'s,
    and strided or subclassed samples (the slow path) give the same rows."""
    from fastmix.backends.numba import collate

    assert collate._DATA_OFFSET is not None  # CPython + NumPy's documented PyArrayObject layout
    rng = np.random.default_rng(12)
    base = rng.integers(0, 256, (6, 3, 7, 9), dtype=np.uint8)
    images = [base[i] for i in range(6)]  # views with offsets into one buffer
    ids = np.array([id(im) for im in images], np.int64) + collate._DATA_OFFSET
    assert collate._load_words(ids).tolist() == [im.__array_interface__["data"][0] for im in images]
    lam = rng.random(6).astype(np.float32)
    cut = np.array([False, True, False, True, False, False])
    boxes = np.tile([[1, 5, 2, 8]], (6, 1))
    fast = collate.collate_mix(images, collate.ELEM, lam, cut, boxes)
    expected = _expected_rows(images, collate.ELEM, lam, cut, boxes)
    assert np.array_equal(fast, expected)
    strided = [np.ascontiguousarray(im.transpose(1, 2, 0)).transpose(2, 0, 1) for im in images]
    assert np.array_equal(collate.collate_mix(strided, collate.ELEM, lam, cut, boxes), expected)
    subclass = type("Subclass", (np.ndarray,), {})
    assert np.array_equal(collate.collate_mix([im.view(subclass) for im in images], collate.ELEM, lam, cut, boxes),
                          expected)
    monkeypatch.setattr(collate, "_DATA_OFFSET", None)
    assert np.array_equal(collate.collate_mix(images, collate.ELEM, lam, cut, boxes), expected)


@pytest.mark.skipif(not numba_backend.available(), reason="numba is not installed")
def test_collate_kernel_checks_its_arguments():
    from fastmix.backends.numba import collate

    rng = np.random.default_rng(13)
    images = [rng.integers(0, 256, (3, 9, 11), dtype=np.uint8) for _ in range(6)]
    ones, no, zeros = np.ones(6, np.float32), np.zeros(6, bool), np.zeros((6, 4), np.int64)
    with pytest.raises(ValueError, match="mode must be"):
        collate.collate_mix(images, 4, ones, no, zeros)
    with pytest.raises(ValueError, match="even"):
        collate.collate_mix(images[:5], collate.PAIR, ones[:2], no[:2], zeros[:2])
    with pytest.raises(ValueError, match="non-empty"):
        collate.collate_mix([], collate.ELEM, ones[:0], no[:0], zeros[:0])
    with pytest.raises(ValueError, match="needs lam"):
        collate.collate_mix(images, collate.PAIR, ones, no, zeros)  # 6 units given, 3 needed
    with pytest.raises(ValueError, match="needs lam"):
        collate.collate_mix(images, collate.ELEM, ones, no, zeros[:, :3])
    for bad in (2.0, -0.5, np.nan):
        with pytest.raises(ValueError, match="lam must lie"):
            collate.collate_mix(images, collate.ELEM, np.where(np.arange(6) == 4, bad, 0.5), no, zeros)
    for box in ([0, 10, 0, 2], [3, 2, 0, 2], [0, 2, -1, 2], [0, 2, 5, 12]):
        with pytest.raises(ValueError, match="boxes must"):
            collate.collate_mix(images, collate.ELEM, ones * 0.5, np.arange(6) == 2, np.tile([box], (6, 1)))
    # a box is only read where the unit pastes: an out-of-image box of a blended unit is fine
    collate.collate_mix(images, collate.ELEM, ones * 0.5, no, np.tile([[0, 99, 0, 99]], (6, 1)))
    with pytest.raises(ValueError, match="uint8"):
        collate.collate_mix(images[:5] + [images[5].astype(np.int16)], collate.ELEM, ones, no, zeros)
    with pytest.raises(ValueError, match="shape"):
        collate.collate_mix(images[:5] + [images[5][:, :8]], collate.ELEM, ones, no, zeros)
    with pytest.raises(ValueError, match="uint8 NumPy arrays"):
        collate.collate_mix([torch.from_numpy(im) for im in images], collate.ELEM, ones, no, zeros)
    with pytest.raises(ValueError, match="out must be a writable"):
        collate.collate_mix(images, collate.ELEM, ones, no, zeros, out=np.empty((6, 3, 9, 10), np.uint8))
    with pytest.raises(ValueError, match="share memory"):
        stacked = np.stack(images)
        collate.collate_mix(list(stacked), collate.ELEM, ones, no, zeros, out=stacked)
    with pytest.raises(ValueError, match="backend"):
        FastCollateMixup(num_classes=C, backend="cuda")


@pytest.mark.skipif(not numba_backend.available(), reason="numba is not installed")
@pytest.mark.parametrize("mode", ["batch", "elem", "pair", "half"])
def test_collate_targets_equal_mixup_target_bit_for_bit(mode):
    """The compiled targets against mixup_target (timm's formula in torch) on random labels and
    lams: smoothing 0, 0.1 and 1, odd batches, repeated labels (a pair with one class)."""
    from fastmix.backends.numba import collate

    rng = np.random.default_rng(14)
    code = collate.MODES[mode]
    for size in ([2, 4, 8] if mode in ("pair", "half") else [1, 2, 5, 8]):
        for smoothing in (0.0, 0.1, 1.0):
            for classes in (1, 3, 1000):
                labels = rng.integers(0, classes, size)
                units = collate.units_of(code, size)
                lam = np.where(rng.random(units) < 0.2, 1.0, rng.random(units)).astype(np.float32)
                rows = size // 2 if mode == "half" else size
                ours = collate.collate_targets(labels, code, lam, classes, smoothing, rows)
                collate_fn = FastCollateMixup(mode=mode, num_classes=classes, label_smoothing=smoothing)
                injected = TimmMixParams(torch.from_numpy(lam), torch.zeros(units, dtype=torch.bool),
                                         torch.zeros(units, 4, dtype=torch.long))
                lam_rows = collate_fn._per_sample(injected, size)[0]
                expected = collate_fn._targets(torch.from_numpy(labels), injected, lam_rows)[:rows]
                assert ours.dtype == torch.float32 and torch.equal(ours, expected), (size, smoothing, classes)
    assert collate.collate_targets(np.array([0, 3]), collate.ELEM, np.ones(2, np.float32), 3, 0.1, 2) is None
    assert collate.collate_targets(np.array([-1, 2]), collate.ELEM, np.ones(2, np.float32), 3, 0.1, 2) is None
    with pytest.raises(ValueError, match="labels"):
        collate.collate_targets(np.array([0, 1, 2, 0]), collate.PAIR, np.ones(4, np.float32), 3, 0.1, 4)
    with pytest.raises(ValueError, match="labels"):
        collate.collate_targets(np.array([0, 1]), collate.ELEM, np.ones(2, np.float32), 3, 0.1, 3)


@pytest.mark.skipif(not numba_backend.available(), reason="numba is not installed")
def test_fast_collate_targets_of_every_label_form():
    """Class indices as Python ints, NumPy integers or 0-d tensors take the compiled targets;
    soft labels, floats and out-of-range labels take (or are refused by) the general path, and
    both backends agree."""
    samples = uint8_samples(4, seed=15)
    injected = params([0.3, 0.8], [False, True], [[0, 0, 0, 0], [1, 5, 2, 7]])
    forms = {"int": [1, 4, 2, 7], "numpy": list(np.array([1, 4, 2, 7], np.int32)),
             "tensor": [torch.tensor(v) for v in (1, 4, 2, 7)], "soft": [torch.eye(C)[v] for v in (1, 4, 2, 7)]}
    for name, labels in forms.items():
        batch = [(s[0], label) for s, label in zip(samples, labels)]
        out = {backend: FastCollateMixup(num_classes=C, mode="pair", backend=backend)(batch, params=injected)
               for backend in ("numba", "pytorch")}
        assert torch.equal(out["numba"][0], out["pytorch"][0]) and torch.equal(out["numba"][1], out["pytorch"][1]), name
    assert compat._class_indices([1, 2.5]) is None and compat._class_indices([True, False]) is None
    assert compat._class_indices([[1], [2]]) is None and compat._class_indices([2 ** 64, 1]) is None
    for labels in ([0, C, 1, 2], [0, -1, 1, 2]):
        with pytest.raises(ValueError, match="class indices must lie"):
            FastCollateMixup(num_classes=C, mode="pair", backend="numba")(
                [(s[0], label) for s, label in zip(samples, labels)], params=injected)
    with pytest.raises(ValueError, match="targets must be class indices"):
        FastCollateMixup(num_classes=C, backend="numba")([(s[0], 0.5) for s in samples], params=params([0.5]))


def test_split_samples_fast_path_equals_the_checked_loop():
    arrays = [np.random.default_rng(i).integers(0, 256, (3, 4, 5), dtype=np.uint8) for i in range(4)]
    for batch in ([(a, i) for i, a in enumerate(arrays)],
                  [[torch.from_numpy(a), i, "extra"] for i, a in enumerate(arrays)],
                  tuple((torch.from_numpy(a).permute(0, 2, 1), i) for i, a in enumerate(arrays))):
        fast, slow = compat._split_samples(batch), compat._split_samples_one_by_one(batch)
        assert fast[1] == slow[1] == [0, 1, 2, 3]
        assert all(a.dtype == np.uint8 and np.shares_memory(a, b) and np.array_equal(a, b)
                   for a, b in zip(fast[0], slow[0]))
    errors = {"pair": [(arrays[0], 0), (arrays[1],)], "NumPy array or a torch.Tensor": [(arrays[0], 0), ([1, 2], 1)],
              "uint8 CPU tensors": [(torch.from_numpy(arrays[0]).float(), 0)],
              "one shape": [(arrays[0], 0), (arrays[1][:, :3], 1)], "must be \\[C, H, W\\]": [(arrays[0][0], 0)],
              "images must be uint8": [(arrays[0], 0), (arrays[1].astype(np.int64), 1)]}
    for message, batch in errors.items():
        with pytest.raises((TypeError, ValueError), match=message):
            compat._split_samples(batch)


def test_fast_collate_falls_back_without_numba(monkeypatch):
    """backend='auto' without numba runs the PyTorch path; backend='numba' then refuses clearly."""
    monkeypatch.setattr(compat, "_numba_available", lambda: False)
    samples = uint8_samples(4, seed=9)
    out, _ = FastCollateMixup(num_classes=C)(samples, params=params([0.4]))
    src = [s[0] for s in samples]
    assert torch.equal(out, torch.stack([rint_blend(src[i], src[3 - i], 0.4) for i in range(4)]))
    with pytest.raises(RuntimeError, match="numba"):
        FastCollateMixup(num_classes=C, backend="numba")


def test_fast_collate_batch_cutmix_and_odd_batch():
    samples = uint8_samples(5, seed=4)
    box = [2, 7, 1, 6]
    out, targets = FastCollateMixup(num_classes=C, mixup_alpha=0.0, cutmix_alpha=1.0)(samples,
                                                                                     params=params([0.75], [True], [box]))
    src = [torch.from_numpy(s[0]) for s in samples]
    assert torch.equal(out, torch.stack([paste(src[i], src[4 - i], box) for i in range(5)]))
    assert torch.equal(out[2], src[2])  # the middle sample is its own partner
    torch.testing.assert_close(targets[[0, 1, 3, 4]], timm_targets(torch.arange(5), [0.75] * 5)[[0, 1, 3, 4]])


def test_fast_collate_draws_targets_and_errors():
    samples = uint8_samples(8)
    for mode, rows in [("batch", 8), ("elem", 8), ("pair", 8), ("half", 4)]:
        collate = FastCollateMixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode=mode, label_smoothing=0.1, num_classes=C,
                                   generator=torch.Generator().manual_seed(3))
        out, targets = collate(samples)
        assert out.shape == (rows, 3, 8, 10) and targets.shape == (rows, C)
        torch.testing.assert_close(targets.sum(1), torch.ones(rows))
        units = collate.last_params.lam.shape[0]
        assert units == {"batch": 1, "elem": 8, "pair": 4, "half": 4}[mode]
    dense = [(s[0], torch.tensor([1.0, 0.0, 1.0])) for s in samples]
    _, multi = FastCollateMixup(multi_label=True, num_classes=3, label_smoothing=0.0)(dense, params=params([0.5]))
    torch.testing.assert_close(multi, torch.tensor([[1.0, 0.0, 1.0]] * 8))
    collate = FastCollateMixup(num_classes=C, mode="half")
    with pytest.raises(ValueError, match="even batch"):
        collate(samples[:3])
    with pytest.raises(ValueError, match="non-empty"):
        collate([])
    with pytest.raises(TypeError, match="uint8"):
        collate([(s[0].astype(np.float32), 0) for s in samples])
    with pytest.raises(ValueError, match="one shape"):
        collate([samples[0], (np.zeros((3, 8, 9), np.uint8), 1)])
    with pytest.raises(ValueError, match="CutMix boxes"):
        FastCollateMixup(num_classes=C)(samples, params=params([0.5], [True], [[0, 2, 0, 11]]))


class _Pictures(torch.utils.data.Dataset):
    def __getitem__(self, index):
        return np.full((3, 6, 6), index * 7 % 256, dtype=np.uint8), index % C

    def __len__(self):
        return 32


def test_fast_collate_in_dataloader_workers_draws_per_worker():
    """generator=None: each worker draws from its own DataLoader-seeded torch RNG (as timm's np.random)."""
    collate = FastCollateMixup(mixup_alpha=1.0, mode="elem", num_classes=C)
    loader = torch.utils.data.DataLoader(_Pictures(), batch_size=8, num_workers=2, collate_fn=collate)
    torch.manual_seed(0)
    batches = list(loader)
    assert len(batches) == 4 and all(images.shape == (8, 3, 6, 6) for images, _ in batches)
    lams = [targets.max(1).values for _, targets in batches]
    assert not torch.equal(lams[0], lams[1])  # batches 0 and 1 come from different workers


def test_collate_benchmark_runs(tmp_path, monkeypatch, capsys):
    from benchmarks import bench_collate
    out = tmp_path / "collate.md"
    monkeypatch.setattr("sys.argv", ["bench_collate", "--batch", "4", "--size", "8", "--repeats", "1",
                                     "--timm-mixup", str(tmp_path / "absent.py"), "--out", str(out)])
    bench_collate.main()
    report = out.read_text()
    assert "torch.stack collate" in report and report.count("| timm default |") == 4
    assert "timm mixup.py: not found" in report  # no timm here: its column says n/a, never a made-up number
