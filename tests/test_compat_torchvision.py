"""fastmix.compat.torchvision against torchvision.transforms.v2 MixUp / CutMix's documented behaviour.

Expectations are written from torchvision's semantics (one lam per batch, partner images.roll(1, 0),
CutMix box around a uniform integer centre with half-extents int(0.5*sqrt(1-lam)*size), lam
corrected to the box area) on injected parameters; tests_peers/test_torchvision_peer.py compares
with the real torchvision.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastmix
from fastmix import params as draws
from fastmix.compat.torchvision import CutMix, MixUp, SageMix
from helpers import random_images

C = 10


def roll_targets(y, lam, num_classes=C):
    """torchvision's _mixup_label: one_hot(y).roll(1, 0) * (1 - lam) + one_hot(y) * lam."""
    one_hot = F.one_hot(y, num_classes).float()
    return one_hot.roll(1, 0) * (1 - lam) + one_hot * lam


def test_mixup_blends_with_the_rolled_batch():
    x, y = random_images(5, 3, 8, 8), torch.tensor([1, 2, 3, 4, 5])
    before = x.clone()
    out, targets = MixUp(num_classes=C)(x, y, params={"lam": 0.3})
    torch.testing.assert_close(out, 0.3 * x + 0.7 * x.roll(1, 0))
    torch.testing.assert_close(targets, roll_targets(y, 0.3))
    assert torch.equal(x, before)


def test_cutmix_pastes_one_box_of_the_rolled_batch():
    x, y = random_images(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    out, targets = CutMix(num_classes=C)(x, y, params={"box": (1, 5, 2, 7)})  # (y1, y2, x1, x2)
    expected = x.clone()
    expected[..., 1:5, 2:7] = x.roll(1, 0)[..., 1:5, 2:7]
    assert torch.equal(out, expected)
    torch.testing.assert_close(targets, roll_targets(y, 1 - 20 / 64))


def torchvision_box(lam, height, width, cy, cx):
    """torchvision's CutMix box, as documented: half-extents int(0.5*sqrt(1-lam)*size), clipped."""
    r = 0.5 * math.sqrt(1.0 - lam)
    half_w, half_h = int(r * width), int(r * height)
    return max(cy - half_h, 0), min(cy + half_h, height), max(cx - half_w, 0), min(cx + half_w, width)


def test_box_geometry_is_torchvisions():
    height, width = 12, 17
    for lam in np.linspace(0.0, 1.0, 41, dtype=np.float32):
        for cy, cx in [(0, 0), (5, 8), (11, 16), (3, 0)]:
            box = draws.box_from_lam(torch.tensor([lam]), height, width, torch.tensor([cy]), torch.tensor([cx]))
            assert tuple(box[0].tolist()) == torchvision_box(float(lam), height, width, cy, cx)


def test_cutmix_lam_distribution_matches_a_simulation_of_torchvision():
    """E[corrected lam] over Beta(1, 1) lams and uniform centres, by an independent NumPy simulation."""
    rng = np.random.default_rng(0)
    height = width = 8
    lams, cys, cxs = rng.beta(1, 1, 200000), rng.integers(0, height, 200000), rng.integers(0, width, 200000)
    half = (0.5 * np.sqrt(1 - lams) * height).astype(int)
    area = (np.minimum(cys + half, height) - np.maximum(cys - half, 0)) * \
           (np.minimum(cxs + half, width) - np.maximum(cxs - half, 0))
    expected = float(np.mean(1 - area / (height * width)))
    cutmix = CutMix(num_classes=C, generator=torch.Generator().manual_seed(0))
    x = torch.zeros(2, 1, height, width)
    drawn = [cutmix.make_params(x) for _ in range(3000)]
    assert abs(np.mean([p["lam"] for p in drawn]) - expected) < 0.012
    for p in drawn[:50]:
        y1, y2, x1, x2 = p["box"]
        assert p["lam"] == 1 - (y2 - y1) * (x2 - x1) / (height * width)


def test_mixup_lam_is_beta_alpha_alpha():
    mixup = MixUp(alpha=0.4, num_classes=C, generator=torch.Generator().manual_seed(0))
    lams = np.array([mixup.make_params(torch.zeros(2, 1, 2, 2))["lam"] for _ in range(4000)])
    assert abs(lams.mean() - 0.5) < 0.02 and abs(lams.var() - 1 / (4 * 1.8)) < 0.01


def test_sample_structures_and_labels_getter():
    x, y = random_images(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    transform = MixUp(num_classes=C)
    sample = {"image": x, "labels": y, "meta": "kept", "ids": [7, 8]}
    out = transform(sample, params={"lam": 0.5})
    assert set(out) == set(sample) and out["meta"] == "kept" and out["ids"] == [7, 8]
    torch.testing.assert_close(out["image"], 0.5 * x + 0.5 * x.roll(1, 0))
    torch.testing.assert_close(out["labels"], roll_targets(y, 0.5))
    images, extra = transform((x, {"class_label": y}), params={"lam": 0.5})  # second element: a dict
    torch.testing.assert_close(extra["class_label"], roll_targets(y, 0.5))
    custom = CutMix(num_classes=C, labels_getter=lambda s: s["target"])
    out = custom({"pixels": x, "target": y}, params={"box": (0, 8, 0, 4)})
    torch.testing.assert_close(out["target"], roll_targets(y, 0.5))
    assert torch.equal(out["pixels"][..., :4], x.roll(1, 0)[..., :4])


def test_leaf_rule_first_pure_tensor_only():
    """torchvision's rule without tv_tensors: only the first pure tensor (tree_flatten order) is an
    image; later tensors pass through as the very same objects."""
    x, y, aux = random_images(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]), random_images(4, 3, 8, 8, seed=1)
    images, labels, passed = MixUp(num_classes=C)(x, y, aux, params={"lam": 0.25})
    torch.testing.assert_close(images, 0.25 * x + 0.75 * x.roll(1, 0))
    assert passed is aux
    first, labels, second = MixUp(num_classes=C, labels_getter=lambda s: s[1])(aux, y, x, params={"lam": 0.25})
    torch.testing.assert_close(first, 0.25 * aux + 0.75 * aux.roll(1, 0))
    assert second is x
    # labels flattened before the images take the pure-tensor slot: the images pass through
    out = MixUp(num_classes=C)({"labels": y, "image": x}, params={"lam": 0.25})
    assert out["image"] is x
    torch.testing.assert_close(out["labels"], roll_targets(y, 0.25))
    with pytest.raises(TypeError, match="at least two dimensions"):
        CutMix(num_classes=C)({"labels": y, "image": x})


def test_label_forms_and_errors():
    x = random_images(4, 3, 8, 8)
    probabilities = torch.softmax(torch.randn(4, C), 1)
    _, targets = MixUp()(x, probabilities, params={"lam": 0.25})  # num_classes may be None for 2-D labels
    torch.testing.assert_close(targets, 0.25 * probabilities + 0.75 * probabilities.roll(1, 0))
    _, doubles = MixUp()(x, probabilities.double(), params={"lam": 0.25})
    assert doubles.dtype == torch.float64  # floating labels keep their dtype, as torchvision
    with pytest.raises(ValueError, match="num_classes must be passed"):
        MixUp()(x, torch.arange(4))
    with pytest.raises(ValueError, match="must match num_classes"):
        MixUp(num_classes=3)(x, probabilities)
    with pytest.raises(ValueError, match="labels should be index based"):
        MixUp(num_classes=C)(x, torch.zeros(4, 2, 2))
    with pytest.raises(ValueError, match="does not match the batch size of the labels"):
        MixUp(num_classes=C)(x, torch.arange(3))
    with pytest.raises(ValueError, match="Expected a batched input with 4 dims"):
        CutMix(num_classes=C)(x[None], torch.arange(1))
    with pytest.raises(ValueError, match="alpha"):
        CutMix(alpha=0.0)
    with pytest.raises(ValueError, match="Could not infer where the labels are"):
        MixUp(num_classes=C)({"image": x})
    with pytest.raises(ValueError, match="When using the default labels_getter"):
        MixUp(num_classes=C)(x, "not_a_tensor")
    with pytest.raises(ValueError, match="The labels must be a tensor"):
        MixUp(num_classes=C, labels_getter=None)(x, torch.arange(4))
    with pytest.raises(ValueError, match="labels_getter should either be"):
        MixUp(num_classes=C, labels_getter="first")
    with pytest.raises(ValueError, match="num_classes"):
        MixUp(num_classes=0)


def test_numpy_num_classes_and_empty_batch():
    x, y = random_images(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    _, targets = CutMix(num_classes=np.int64(C))(x, y, params={"box": (0, 4, 0, 8)})
    torch.testing.assert_close(targets, roll_targets(y, 0.5))
    for transform in (MixUp(num_classes=C), CutMix(num_classes=C)):
        images, labels = transform(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))
        assert images.shape == (0, 3, 8, 8) and labels.shape == (0, C) and labels.dtype == torch.float32


def test_rejects_pil_images():
    image = pytest.importorskip("PIL.Image").new("RGB", (8, 8))
    for transform in (CutMix(num_classes=C), MixUp(num_classes=C)):
        with pytest.raises(ValueError, match="does not support PIL images"):
            transform((random_images(2, 3, 8, 8), torch.arange(2), image))
        with pytest.raises(ValueError, match="does not support PIL images"):
            transform(image)  # checked before the labels are looked for


def test_dtypes_layouts_and_reproducibility():
    x = random_images(4, 3, 8, 8, dtype=torch.uint8, memory_format=torch.channels_last)
    out, _ = MixUp(num_classes=C)(x, torch.arange(4), params={"lam": 0.5})  # torchvision raises on uint8
    assert out.dtype == torch.uint8 and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, (0.5 * x.float() + 0.5 * x.roll(1, 0).float()).round().to(torch.uint8))
    class Image(torch.Tensor):  # stands in for torchvision.tv_tensors.Image
        pass

    wrapped, _ = CutMix(num_classes=C)(x.as_subclass(Image), torch.arange(4), params={"box": (0, 2, 0, 2)})
    assert type(wrapped) is Image
    runs = [CutMix(num_classes=C, generator=torch.Generator().manual_seed(s))(x, torch.arange(4)) for s in (3, 3)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, C))


def test_sage_mix_transform_uses_the_model_saliency_and_injected_params():
    x, y = random_images(4, 3, 8, 8), torch.tensor([0, 3, 5, 9])
    model = small_model()
    injected = {"perm": torch.tensor([2, 3, 1, 0]), "mass": 0.4, "shifts": torch.tensor([[0, 0], [1, -2], [3, 3]])}
    out = SageMix(model=model, num_classes=C, upper_lambda=0.6)({"image": x, "label": y}, params=injected)
    assert all(p.grad is None for p in model.parameters())
    sal = fastmix.saliency(model, x, y, num_classes=C)
    expected = fastmix.sage_mix(x, y, saliency=sal.saliency, **injected)
    torch.testing.assert_close(out["image"], expected.images)
    torch.testing.assert_close(out["label"], expected.targets(num_classes=C))
    given = SageMix(num_classes=C)(x, y, saliency=sal.saliency, params=injected)
    torch.testing.assert_close(given[0], expected.images)
    with pytest.raises(ValueError, match="model="):
        SageMix(num_classes=C)(x, y)
    with pytest.raises(ValueError, match="inject"):
        SageMix(model=model, num_classes=C)(x, y, params={"lam": 0.5})


def test_sage_mix_transform_defaults_are_fastmix_sage_mix_defaults():
    import inspect

    from fastmix.operators.sage import DEFAULT_UPPER_LAMBDA

    compat = inspect.signature(SageMix).parameters
    native = inspect.signature(fastmix.SageMix).parameters
    assert compat["upper_lambda"].default == native["upper_lambda"].default == DEFAULT_UPPER_LAMBDA
    assert compat["search"].default == native["search"].default == "auto"
    # the same draws give the same result as fastmix.sage_mix with its own defaults
    x, y = random_images(6, 3, 8, 8), torch.tensor([0, 3, 5, 9, 1, 2])
    sal = torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(3)) + 0.01
    out = SageMix(num_classes=C, generator=torch.Generator().manual_seed(7))(x, y, saliency=sal)
    expected = fastmix.sage_mix(x, y, saliency=sal, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out[0], expected.images, rtol=0, atol=0)
    torch.testing.assert_close(out[1], expected.targets(num_classes=C), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("transform", [MixUp, CutMix])
def test_mixup_cutmix_do_not_synchronise_the_gpu(transform):
    x = random_images(8, 3, 16, 16).cuda()
    y = torch.softmax(torch.randn(8, C), 1).cuda()  # probabilities: no index check on the device
    mix = transform(num_classes=C, generator=torch.Generator().manual_seed(0))
    expected = transform(num_classes=C, generator=torch.Generator().manual_seed(0))(x.cpu(), y.cpu())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        images, labels = mix(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(images.cpu(), expected[0])
    torch.testing.assert_close(labels.cpu(), expected[1])
