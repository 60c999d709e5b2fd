"""The one-call training steps: the exact gradient that reaches the optimiser, AMP and channels_last."""
import copy
import functools

import pytest
import torch
import torch.nn.functional as F

import fastmix
from fastmix.training import mix_step, sage_step
from helpers import random_images

NUM_CLASSES = 5


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                               torch.nn.Conv2d(6, 6, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, NUM_CLASSES))


def batch(seed=0, memory_format=torch.contiguous_format):
    x = random_images(6, 3, 8, 8, seed=seed, memory_format=memory_format)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    return x, y


def bce(logits, targets):
    return F.binary_cross_entropy(torch.softmax(logits.float(), 1), targets)


def autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)


def hand_gradients(model, x, y, x_mix, targets, r, dtype=None):
    """(1 - r) * grad(L_clean) + r * grad(L_mix), both forwards in train mode, written out by hand."""
    model.train()
    params = list(model.parameters())
    with autocast(dtype):
        clean_logits = model(x)
        mix_logits = model(x_mix)
    clean = bce(clean_logits, F.one_hot(y, NUM_CLASSES).float())
    mixed = bce(mix_logits, targets)
    objective = mixed if r == 1 else (1 - r) * clean + r * mixed
    return torch.autograd.grad(objective, params, retain_graph=True), torch.autograd.grad(mixed, params)


def grads_of(model):
    return [p.grad.clone() for p in model.parameters()]


def assert_all_close(actual, expected, **tol):
    for a, b in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("update_ratio", [0.7, 1.0])
def test_sage_step_gradient_is_scaled_clean_plus_scaled_mixed(update_ratio):
    model, x, y = tiny_model(), *batch()
    reference = copy.deepcopy(model)
    before = x.clone()
    result = sage_step(model, None, x, y, update_ratio=update_ratio, rand_pos=0.3, upper_lambda=0.6,
                       generator=torch.Generator().manual_seed(1))
    expected, mixed_only = hand_gradients(reference, x, y, result.mix.images, result.targets, update_ratio)
    assert_all_close(grads_of(model), expected, rtol=1e-4, atol=1e-6)
    if update_ratio != 1:  # the clean part is really there: grad(L_mix) alone differs from the step's
        assert max(float((g - update_ratio * m).abs().max()) for g, m in zip(grads_of(model), mixed_only)) > 1e-4
    assert torch.equal(x, before) and model.training
    torch.testing.assert_close(result.loss, (1 - update_ratio) * result.clean_loss + update_ratio * result.mix_loss)


def test_sage_step_mixes_with_the_clean_bce_input_gradient():
    model, x, y = tiny_model(), *batch()
    xr = x.clone().requires_grad_()
    bce(copy.deepcopy(model)(xr), F.one_hot(y, NUM_CLASSES).float()).backward()
    expected = fastmix.sage_mix(x, y, grad=xr.grad, rand_pos=0.3, generator=torch.Generator().manual_seed(4))
    result = sage_step(model, None, x, y, update_ratio=0.5, rand_pos=0.3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(result.mix.images, expected.images)
    torch.testing.assert_close(result.mix.lam, expected.lam)
    torch.testing.assert_close(result.targets, expected.targets(y, NUM_CLASSES))


def test_sage_step_zeroes_old_gradients_and_steps_the_optimizer():
    model, x, y = tiny_model(), *batch()
    reference = copy.deepcopy(model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)  # stale gradients must not leak into the update
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    start = [p.detach().clone() for p in model.parameters()]
    result = sage_step(model, optimizer, x, y, update_ratio=0.7, rand_pos=0.3, generator=torch.Generator().manual_seed(2))
    expected, _ = hand_gradients(reference, x, y, result.mix.images, result.targets, 0.7)
    for p, p0, g in zip(model.parameters(), start, expected):
        torch.testing.assert_close(p.detach(), p0 - 0.5 * g, rtol=1e-4, atol=1e-6)


def test_sage_step_bf16_autocast_on_cpu():
    model, x, y = tiny_model(), *batch()
    reference = copy.deepcopy(model)
    seen = []
    model[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    result = sage_step(model, None, x, y, update_ratio=0.7, rand_pos=0.3, autocast_dtype=torch.bfloat16,
                       generator=torch.Generator().manual_seed(3))
    assert seen == [torch.bfloat16, torch.bfloat16]  # both passes ran under autocast
    assert result.logits.dtype == torch.float32 and bool(torch.isfinite(result.loss))
    expected, _ = hand_gradients(reference, x, y, result.mix.images, result.targets, 0.7, torch.bfloat16)
    assert_all_close(grads_of(model), expected, rtol=2e-2, atol=1e-4)


def test_sage_step_fp16_grad_scaler_scales_both_passes():
    model, x, y = tiny_model(), *batch()
    reference = copy.deepcopy(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    result = sage_step(model, None, x, y, update_ratio=0.7, rand_pos=0.3, autocast_dtype=torch.float16,
                       scaler=scaler, generator=torch.Generator().manual_seed(3))
    expected, _ = hand_gradients(reference, x, y, result.mix.images, result.targets, 0.7, torch.float16)
    # With optimizer=None the gradients stay on the scaler's scale, clean part and mixed part alike.
    assert_all_close([g / 1024.0 for g in grads_of(model)], expected, rtol=2e-2, atol=1e-4)


def test_sage_step_fp16_overflow_skips_the_step_and_backs_off():
    model, x, y = tiny_model(), *batch()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)  # the scaled fp16 gradients overflow
    result = sage_step(model, optimizer, x, y, update_ratio=0.7, autocast_dtype=torch.float16, scaler=scaler,
                       generator=torch.Generator().manual_seed(0))
    assert result.mix is None and bool(torch.isnan(result.loss))
    assert scaler.get_scale() == 2.0 ** 39
    assert all(torch.equal(p.detach(), p0) for p, p0 in zip(model.parameters(), start))


def test_sage_step_channels_last_matches_contiguous():
    outcomes = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        model = tiny_model().to(memory_format=memory_format)
        x, y = batch(memory_format=memory_format)
        result = sage_step(model, None, x, y, update_ratio=0.7, rand_pos=0.3, generator=torch.Generator().manual_seed(5))
        assert result.mix.images.is_contiguous(memory_format=memory_format)
        outcomes.append((result, grads_of(model)))
    (flat, flat_grads), (last, last_grads) = outcomes
    torch.testing.assert_close(last.mix.images, flat.mix.images)
    assert_all_close(last_grads, flat_grads, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("operator, options", [
    ("none", {}), ("mixup", {"alpha": 1.0}), ("cutmix", {"per_sample": True}), ("cutout", {"length": 4}),
    ("saliencymix", {"value_range": None}), (functools.partial(fastmix.mixup, per_sample=True), {}),
])
def test_mix_step_gradient_is_the_mixed_loss_gradient(operator, options):
    model, x, y = tiny_model(), *batch()
    reference = copy.deepcopy(model).train()
    result = mix_step(model, None, x, y, operator=operator, loss="ce", label_smoothing=0.1,
                      generator=torch.Generator().manual_seed(7), **options)
    images = x if result.mix is None else result.mix.images
    targets = fastmix.one_hot(y, NUM_CLASSES, 0.1) if result.mix is None else result.mix.targets(y, NUM_CLASSES, 0.1)
    loss = torch.sum(-targets * F.log_softmax(reference(images), 1), 1).mean()
    expected = torch.autograd.grad(loss, list(reference.parameters()))
    assert_all_close(grads_of(model), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(result.loss, loss.detach())
    if operator != "none":
        assert not torch.equal(images, x)


def test_mix_step_bf16_and_channels_last():
    model = tiny_model().to(memory_format=torch.channels_last)
    x, y = batch(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = mix_step(model, optimizer, x, y, operator="cutmix", autocast_dtype=torch.bfloat16,
                      generator=torch.Generator().manual_seed(0))
    assert result.mix.images.is_contiguous(memory_format=torch.channels_last)
    assert result.logits.dtype == torch.float32 and bool(torch.isfinite(result.loss))


def test_step_argument_errors():
    model, x, y = tiny_model(), *batch()
    with pytest.raises(ValueError, match="update_ratio"):
        sage_step(model, None, x, y, update_ratio=1.5)
    with pytest.raises(ValueError, match="loss"):
        sage_step(model, None, x, y, update_ratio=0.5, loss="mse")
    with pytest.raises(ValueError, match="autocast_dtype"):
        mix_step(model, None, x, y, autocast_dtype=torch.float64)
    with pytest.raises(TypeError, match="grad"):
        sage_step(model, None, x, y, update_ratio=0.5, grad=torch.ones_like(x))
    with pytest.raises(ValueError, match="sage_step"):
        mix_step(model, None, x, y, operator="sage")
    with pytest.raises(TypeError, match="MixResult"):
        mix_step(model, None, x, y, operator=lambda images, labels, generator: images)
    with pytest.raises(TypeError, match="no operator arguments"):
        mix_step(model, None, x, y, operator="none", alpha=1.0)
    with pytest.raises(ValueError, match="x must be"):
        mix_step(model, None, x[0], y)
    with pytest.raises(TypeError, match="scaler"):
        mix_step(model, None, x, y, scaler=object())
    with pytest.raises(ValueError, match="logits"):
        mix_step(torch.nn.Conv2d(3, 2, 1), None, x, y)
