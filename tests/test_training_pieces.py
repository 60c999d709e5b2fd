"""Soft targets, the input-gradient saliency step and the v2-style transforms."""
import pytest
import torch
import torch.nn.functional as F

import fastmix
from helpers import random_images


def tiny_model(num_classes=5, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, num_classes))


def test_one_hot_and_soft_labels():
    assert fastmix.one_hot(torch.tensor([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    soft = torch.tensor([[0.2, 0.8]])
    torch.testing.assert_close(fastmix.one_hot(soft), soft)
    with pytest.raises(ValueError, match="num_classes"):
        fastmix.one_hot(torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        fastmix.one_hot(torch.tensor([3]), 3)
    with pytest.raises(ValueError):
        fastmix.one_hot(torch.tensor([1]), 3, label_smoothing=1.0)
    with pytest.raises(ValueError, match="soft labels"):
        fastmix.one_hot(soft, 3)


def test_result_targets_need_labels():
    result = fastmix.mixup(random_images(2, 1, 2, 2), perm=torch.tensor([1, 0]), lam=0.5)
    with pytest.raises(ValueError, match="no labels"):
        result.targets(num_classes=3)
    torch.testing.assert_close(result.targets(torch.tensor([0, 2]), 3), torch.tensor([[0.5, 0, 0.5]] * 2))


def test_soft_target_losses():
    logits = torch.randn(4, 6)
    targets = fastmix.one_hot(torch.tensor([0, 1, 2, 3]), 6)
    bce = fastmix.soft_target_loss(logits, targets, "bce")
    torch.testing.assert_close(bce, F.binary_cross_entropy(torch.softmax(logits, 1), targets))
    ce = fastmix.soft_target_loss(logits, targets, "ce")
    torch.testing.assert_close(ce, F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])))
    with pytest.raises(ValueError):
        fastmix.soft_target_loss(logits, targets, "mse")


def test_saliency_step_matches_manual_gradient_and_leaves_params_alone():
    model = tiny_model()
    x = random_images(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    result = fastmix.saliency(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    xr = x.clone().requires_grad_()
    loss = F.binary_cross_entropy(torch.softmax(model(xr), 1), F.one_hot(y, 5).float())
    loss.backward()
    torch.testing.assert_close(result.grad, xr.grad)
    torch.testing.assert_close(result.saliency, xr.grad.abs().mean(1))
    assert result.saliency.shape == (4, 8, 8) and not x.requires_grad


def test_saliency_step_keeps_scaled_clean_gradient():
    x, y = random_images(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    model = tiny_model()
    fastmix.saliency(model, x, y, update_ratio=0.7)
    kept = [p.grad.clone() for p in model.parameters()]
    reference = tiny_model()
    loss = F.binary_cross_entropy(torch.softmax(reference(x), 1), F.one_hot(y, 5).float())
    (0.3 * loss).backward()
    for a, b in zip(kept, reference.parameters()):
        torch.testing.assert_close(a, b.grad)


def test_saliency_step_restores_mode_and_validates():
    model = tiny_model().eval()
    fastmix.saliency(model, random_images(2, 3, 8, 8), torch.tensor([0, 1]), loss="ce")
    assert not model.training
    with pytest.raises(ValueError):
        fastmix.saliency(model, random_images(2, 3, 8, 8), torch.tensor([0, 1]), update_ratio=1.5)
    with pytest.raises(ValueError):
        fastmix.saliency(model, torch.ones(2, 3, 8, dtype=torch.float32), torch.tensor([0, 1]))


@pytest.mark.parametrize("transform", [
    fastmix.MixUp(num_classes=5, seed=0), fastmix.CutMix(num_classes=5, seed=0, per_sample=True),
    fastmix.CutOut(num_classes=5, seed=0),
    fastmix.SaliencyMix(num_classes=5, seed=0),
    fastmix.SageMix(num_classes=5, seed=0, model=tiny_model(), rand_pos=0.05),
])
def test_transforms_return_images_and_soft_targets(transform):
    x = torch.rand(4, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 4])
    images, targets = transform(x, y)
    assert images.shape == x.shape and images.dtype == x.dtype
    assert targets.shape == (4, 5) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    torch.testing.assert_close(targets, transform.last_result.targets(y, 5))


def test_transforms_reproducible_with_seed_and_label_smoothing():
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    a = fastmix.CutMix(num_classes=4, seed=3, label_smoothing=0.1)(x, y)
    b = fastmix.CutMix(num_classes=4, seed=3, label_smoothing=0.1)(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert float(a[1].min()) >= 0.1 / 4 - 1e-7
    with pytest.raises(ValueError, match="SageMix needs"):
        fastmix.SageMix(num_classes=4)(x, y)
    with pytest.raises(ValueError, match="num_classes"):
        fastmix.MixUp(num_classes=0)
