"""Regression tests for the new-user trial (issue 10: silent wrong results, defaults and
conventions) and for sync-free operators (issue 12.3). Each test failed on the code before the fix.
"""
import inspect

import pytest
import torch

import fastmix
from fastmix.copy_paste import InstanceBatch, copy_paste
from fastmix.copy_paste.params import CopyPasteParams, JitterParams, draw_copy_paste_params
from fastmix.training import mix_step

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def photos(batch=4, size=32, seed=0):
    """[0, 1] float images on the uint8 grid (k / 255), with a smooth bright blob per image so that
    the saliency has a clear peak."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (batch, 3, size, size), generator=gen).float()
    rows = torch.arange(size).view(1, size, 1).float()
    cols = torch.arange(size).view(1, 1, size).float()
    centres = torch.randint(4, size - 4, (batch, 2), generator=gen).float()
    blob = torch.exp(-((rows - centres[:, 0, None, None]) ** 2 + (cols - centres[:, 1, None, None]) ** 2) / 20)
    values = (0.3 * noise + 0.7 * 255 * blob[:, None]).round().clamp(0, 255)
    return values / 255


def normalise(x):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------ 1. a [B] lam is per sample

@pytest.mark.parametrize("operator", [fastmix.cutmix, fastmix.saliencymix])
def test_vector_lam_is_one_weight_per_sample(operator):
    x = photos()
    lam = torch.tensor([0.1, 0.4, 0.7, 0.95])
    perm = torch.tensor([1, 2, 3, 0])
    result = operator(x, lam=lam, perm=perm, generator=torch.Generator().manual_seed(0))
    assert len(set(result.lam.tolist())) == 4  # was [lam[0]'s area] * 4
    explicit = operator(x, lam=lam, perm=perm, per_sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.boxes, explicit.boxes) and torch.equal(result.images, explicit.images)
    # each box has the CutMix size of its own lam (before clipping at the border)
    heights = result.boxes[:, 1] - result.boxes[:, 0]
    expected = (2 * ((32 * torch.sqrt(1 - lam.double())).floor().long() // 2))
    assert bool((heights <= expected).all()) and heights.tolist() != [heights[0].item()] * 4
    with pytest.raises(ValueError, match="shape"):
        operator(x, lam=torch.tensor([0.1, 0.4]), perm=perm)


def test_mixup_vector_lam_unchanged_and_scalar_lam_shared():
    x = photos()
    lam = torch.tensor([0.1, 0.4, 0.7, 0.95])
    assert torch.equal(fastmix.mixup(x, lam=lam).lam, lam)
    shared = fastmix.cutmix(x, lam=0.5, generator=torch.Generator().manual_seed(0))
    assert bool((shared.boxes == shared.boxes[0]).all())


# ------------------------------------------------------------------ 2. SaliencyMix refuses to clip

def test_saliencymix_refuses_normalised_images_and_undoes_the_normalisation():
    x01 = photos(seed=3)
    xn = normalise(x01)
    perm, lam = torch.tensor([2, 3, 0, 1]), torch.tensor([0.5, 0.6, 0.7, 0.8])
    with pytest.raises(ValueError, match="mean=/std="):
        fastmix.saliencymix(xn, lam=lam, perm=perm)
    reference = fastmix.saliencymix(x01, lam=lam, perm=perm)
    undone = fastmix.saliencymix(xn, lam=lam, perm=perm, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert torch.equal(undone.boxes, reference.boxes)
    assert torch.equal(fastmix.operators.boxes.images_to_uint8(xn, mean=IMAGENET_MEAN, std=IMAGENET_STD),
                       fastmix.operators.boxes.images_to_uint8(x01))
    # the old silent clip moved the boxes: the clipped saliency differs from the true one
    clipped = fastmix.saliencymix(xn.clamp(0, 1), lam=lam, perm=perm)
    assert not torch.equal(clipped.boxes, reference.boxes)
    # the stated range of the data is accepted as well
    low, high = float(xn.min()), float(xn.max())
    fastmix.saliencymix(xn, lam=lam, perm=perm, value_range=(low, high))


def test_saliencymix_range_check_reaches_transform_and_mix_step():
    xn = normalise(photos())
    y = torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="value_range"):
        fastmix.SaliencyMix(num_classes=4, seed=0)(xn, y)
    images, _ = fastmix.SaliencyMix(num_classes=4, seed=0, mean=IMAGENET_MEAN, std=IMAGENET_STD)(xn, y)
    assert images.shape == xn.shape
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    with pytest.raises(ValueError, match="value_range"):
        mix_step(model, None, xn, y, operator="saliencymix")
    mix_step(model, None, xn, y, operator="saliencymix", mean=IMAGENET_MEAN, std=IMAGENET_STD)


def test_saliencymix_tolerates_rounding_but_not_nan():
    x = photos()
    fastmix.saliencymix(x * (1 + 1e-6) - 1e-7, generator=torch.Generator().manual_seed(0))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="value_range"):
        fastmix.saliencymix(bad, perm=torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="both mean= and std="):
        fastmix.saliencymix(x, mean=IMAGENET_MEAN)


# ------------------------------------------------------------------ 3. Copy-Paste never self-pairs

def test_copy_paste_draw_is_a_derangement():
    for batch in (2, 3, 8):
        counts = torch.full((batch,), 2)
        sizes = torch.full((batch, 2), 8)
        seen = set()
        for seed in range(60):
            params = draw_copy_paste_params(counts, sizes, (8, 8), generator=torch.Generator().manual_seed(seed))
            assert not bool((params.perm == torch.arange(batch)).any())
            assert sorted(params.perm.tolist()) == list(range(batch))
            seen.add(tuple(params.perm.tolist()))
        if batch == 3:
            assert seen == {(1, 2, 0), (2, 0, 1)}  # both derangements of 3 are drawn


def _instances(batch, size=16):
    images = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(batch)]
    masks = []
    for i in range(batch):
        m = torch.zeros(1, size, size, dtype=torch.bool)
        m[0, 2 + i:8 + i, 3:10] = True
        masks.append(m)
    return InstanceBatch.from_lists(images, masks, labels=[torch.tensor([i]) for i in range(batch)])


def test_copy_paste_single_image_pastes_nothing():
    batch = _instances(1)
    out = copy_paste(batch, max_num_pasted=5, paste_fraction=1.0, scale_range=(1, 1), flip_prob=0,
                     generator=torch.Generator().manual_seed(0), backend="pytorch")
    assert out.perm.tolist() == [0] and not bool(out.params.selected.any()) and not bool(out.pasted.any())
    assert torch.equal(out.images, batch.images) and out.labels[0].tolist() == [0]


def test_copy_paste_injected_self_pair_with_selection_is_refused():
    batch = _instances(2)
    jitter = JitterParams(scale=torch.ones(2, dtype=torch.float64), offset=torch.zeros(2, 2, dtype=torch.int64),
                          flip=torch.zeros(2, dtype=torch.bool))
    params = CopyPasteParams(perm=torch.tensor([0, 0]), receiving=jitter, pasted=jitter,
                             selected=torch.tensor([[True], [False]]))
    with pytest.raises(ValueError, match="paired with themselves"):
        copy_paste(batch, params=params, backend="pytorch")
    # an injected self-pair pastes nothing
    out = copy_paste(batch, perm=[0, 0], paste_fraction=1.0, generator=torch.Generator().manual_seed(0),
                     backend="pytorch")
    assert not bool(out.params.selected[0].any()) and bool(out.params.selected[1].any())


def test_dali_copy_paste_defaults_to_no_fixed_points():
    dali_copy_paste = pytest.importorskip("fastmix.dali.copy_paste")
    assert inspect.signature(dali_copy_paste.copy_paste).parameters["no_fixed_points"].default is True


# ------------------------------------------------------------------ 4. SAGE is scale-free

@pytest.mark.parametrize("scale", [1e36, 1e-30, 3.0, 2.0 ** 100, 2.0 ** -100])
def test_sage_mix_result_does_not_depend_on_the_saliency_scale(scale):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 32, generator=gen)  # 32 x 32 maps of 1e36 overflowed the float32 sums
    s = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 32, 32, generator=gen), 5, 1, 2)[:, 0]
    kwargs = dict(perm=torch.tensor([1, 2, 3, 0]), mass=0.4, search="exhaustive")
    base = fastmix.sage_mix(x, saliency=s, **kwargs)
    scaled = fastmix.sage_mix(x, saliency=s * scale, **kwargs)
    assert bool((base.lam > 0.05).all())  # the 1e36 saliency used to give lam = 0
    grad = torch.randn(4, 3, 32, 32, generator=gen)
    from_grad = fastmix.sage_mix(x, grad=grad, **kwargs)
    scaled_grad = fastmix.sage_mix(x, grad=grad * scale, **kwargs)
    if scale in (2.0 ** 100, 2.0 ** -100):  # an exact rescaling gives bit-identical results
        assert torch.equal(scaled.images, base.images) and torch.equal(scaled_grad.images, from_grad.images)
    torch.testing.assert_close(scaled.lam, base.lam)
    torch.testing.assert_close(scaled.images, base.images)
    torch.testing.assert_close(scaled_grad.images, from_grad.images)
    assert torch.equal(scaled.shifts, base.shifts) and torch.equal(scaled_grad.shifts, from_grad.shifts)


def test_sage_mix_overflowing_or_nan_saliency_raises():
    x, s = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
    for bad in (s * 1e39, torch.where(s > 0.5, float("nan"), s)):
        with pytest.raises(ValueError, match="NaN or infinite"):
            fastmix.sage_mix(x, saliency=bad, mass=0.5)


# ------------------------------------------------------------------ 5. CutOut fill value

def test_cutout_fill_value_must_be_representable():
    x8 = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match="cannot be represented"):
        fastmix.cutout(x8, value=0.5)
    with pytest.raises(ValueError, match="cannot be represented"):
        fastmix.cutout(x8, value=300)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            fastmix.cutout(torch.rand(2, 3, 8, 8), value=bad)
    with pytest.raises(ValueError, match="overflows"):
        fastmix.cutout(torch.rand(2, 3, 8, 8).half(), value=1e6)
    out = fastmix.cutout(x8, value=128, boxes=torch.tensor([0, 4, 0, 4]))
    assert bool((out.images[:, :, :4, :4] == 128).all())


# ------------------------------------------------------------------ 6. labels on the images' device

def test_labels_on_another_device_are_refused():
    x = photos()
    elsewhere = torch.tensor([0, 1, 2, 3], device="meta")
    for operator in (fastmix.mixup, fastmix.cutmix, fastmix.cutout, fastmix.saliencymix):
        with pytest.raises(ValueError, match="labels are on meta"):
            operator(x, elsewhere)
    with pytest.raises(ValueError, match="labels are on meta"):
        fastmix.sage_mix(x, elsewhere, saliency=torch.rand(4, 32, 32))
    with pytest.raises(ValueError, match="labels are on meta"):
        fastmix.mixup(x).targets(elsewhere, num_classes=4)
    with pytest.raises(ValueError, match="labels are on meta"):
        fastmix.MixUp(num_classes=4)(x, elsewhere)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    with pytest.raises(ValueError, match="y is on meta"):
        mix_step(model, None, x, elsewhere, operator="none")


# ------------------------------------------------------------------ defaults and conventions

def test_sage_defaults_upper_lambda_and_search():
    assert inspect.signature(fastmix.sage_mix).parameters["upper_lambda"].default == 0.6
    assert inspect.signature(fastmix.SageMix).parameters["upper_lambda"].default == 0.6
    assert inspect.signature(fastmix.sage_mix).parameters["search"].default == "auto"
    small = fastmix.sage_mix(torch.randn(2, 3, 32, 32), saliency=torch.rand(2, 32, 32),
                             generator=torch.Generator().manual_seed(0))
    assert small.extras["search"] == "random"
    assert float(small.extras["mass"].max()) <= 0.6
    large = fastmix.sage_mix(torch.randn(2, 3, 72, 72), saliency=torch.rand(2, 72, 72),
                             generator=torch.Generator().manual_seed(0))
    assert large.extras["search"] == "coarse_to_fine"
    explicit = fastmix.sage_mix(torch.randn(2, 3, 72, 72), saliency=torch.rand(2, 72, 72), search="random",
                                rand_pos=0.001, generator=torch.Generator().manual_seed(0))
    assert explicit.extras["search"] == "random"


def test_soft_target_loss_defaults_to_cross_entropy():
    logits = torch.randn(5, 4)
    targets = torch.softmax(torch.randn(5, 4), 1)
    expected = -(targets * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(fastmix.soft_target_loss(logits, targets), expected)
    assert not torch.allclose(fastmix.soft_target_loss(logits, targets, "bce"), expected)
    assert inspect.signature(fastmix.training.sage_step).parameters["loss"].default == "bce"
    assert inspect.signature(fastmix.saliency).parameters["loss"].default == "bce"


def test_transforms_share_the_torchvision_constructor_convention():
    from fastmix.compat import torchvision as tv_compat

    for ours, theirs in ((fastmix.MixUp, tv_compat.MixUp), (fastmix.CutMix, tv_compat.CutMix)):
        ours_params = inspect.signature(ours).parameters
        for name in ("alpha", "num_classes", "generator"):
            assert ours_params[name].kind is inspect.Parameter.KEYWORD_ONLY
            assert inspect.signature(theirs).parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert ours_params["alpha"].default == inspect.signature(theirs).parameters["alpha"].default
    with pytest.raises(TypeError):
        fastmix.MixUp(10)
    soft = torch.softmax(torch.randn(4, 3), 1)
    _, targets = fastmix.MixUp(seed=0)(photos(), soft)  # num_classes may be None for soft labels
    assert targets.shape == (4, 3)


def test_box_order_is_named_and_convertible():
    result = fastmix.cutmix(photos(), boxes=torch.tensor([1, 5, 2, 9]))
    assert fastmix.MixResult.BOX_ORDER == "y1, y2, x1, x2"
    assert result.boxes[0].tolist() == [1, 5, 2, 9]
    assert result.boxes_xyxy()[0].tolist() == [2, 1, 9, 5]
    from fastmix.copy_paste import CopyPasteResult
    assert CopyPasteResult.BOX_ORDER == "x1, y1, x2, y2"
    for api in (fastmix.cutmix, fastmix.cutout, fastmix.saliencymix):
        assert "(y1, y2, x1, x2)" in api.__doc__


def _bn_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))


def test_sagemix_eval_mode_keeps_batchnorm_statistics():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])

    def stats_after(model, **kwargs):
        before = model[1].running_mean.clone()
        fastmix.SageMix(num_classes=5, model=model, seed=0, rand_pos=0.1, **kwargs)(x, y)
        return torch.equal(before, model[1].running_mean)

    model = _bn_model().eval()
    assert stats_after(model) and not model.training  # default: the model's own mode
    assert stats_after(_bn_model().train(), eval_mode=True)
    model = _bn_model().eval()
    assert not stats_after(model, eval_mode=False) and not model.training  # the reference's default
    assert not stats_after(_bn_model().train())
    with pytest.raises(ValueError, match="eval_mode"):
        fastmix.SageMix(num_classes=5, eval_mode="yes")


# ------------------------------------------------------------------ issue 12.3: no host sync

def _meta_cases():
    x = torch.rand(4, 3, 16, 16, device="meta")
    s = torch.rand(4, 16, 16, device="meta")
    g = torch.rand(4, 3, 16, 16, device="meta")
    on_meta = dict(perm=torch.tensor([1, 2, 3, 0], device="meta"))
    return x, {
        "mixup": lambda: fastmix.mixup(x, alpha=0.4),
        "mixup_injected": lambda: fastmix.mixup(x, lam=torch.rand(4, device="meta"), **on_meta),
        "mixup_per_sample": lambda: fastmix.mixup(x, per_sample=True),
        "cutmix": lambda: fastmix.cutmix(x),
        "cutmix_per_sample": lambda: fastmix.cutmix(x, per_sample=True),
        "cutmix_injected": lambda: fastmix.cutmix(x, lam=torch.rand(4, device="meta"), **on_meta),
        "cutmix_boxes": lambda: fastmix.cutmix(x, boxes=torch.zeros(4, 4, dtype=torch.long, device="meta")),
        "cutout": lambda: fastmix.cutout(x),
        "saliencymix": lambda: fastmix.saliencymix(x),
        "saliencymix_per_sample": lambda: fastmix.saliencymix(x, per_sample=True, mean=0.5, std=0.25),
        "saliencymix_stretch": lambda: fastmix.saliencymix(x, value_range=None, **on_meta),
        "saliencymix_given": lambda: fastmix.saliencymix(x, saliency=s, lam=torch.rand(4, device="meta")),
        "saliencymix_uint8": lambda: fastmix.saliencymix(torch.empty(4, 3, 16, 16, dtype=torch.uint8, device="meta")),
        "sage_random": lambda: fastmix.sage_mix(x, saliency=s, rand_pos=0.05),
        "sage_grad_per_sample": lambda: fastmix.sage_mix(x, grad=g, rand_pos=0.05, per_sample_shifts=True,
                                                         per_sample_mass=True),
        "sage_exhaustive": lambda: fastmix.sage_mix(x, saliency=s, search="exhaustive"),
        "sage_coarse_to_fine": lambda: fastmix.sage_mix(x, saliency=s, search="coarse_to_fine"),
        "sage_injected": lambda: fastmix.sage_mix(x, saliency=s, mass=torch.rand(4, device="meta"),
                                                  shifts=torch.zeros(3, 2, dtype=torch.long, device="meta"),
                                                  **on_meta),
    }


@pytest.mark.parametrize("name", list(_meta_cases()[1]))
def test_operators_run_on_meta_tensors_without_reading_device_values(name):
    """Any host read of a device value (.item(), bool(), .cpu(), data-dependent shapes) fails on
    "meta" tensors: an operator that runs end to end here launches its work without a sync."""
    x, cases = _meta_cases()
    result = cases[name]()
    assert result.images.device.type == "meta" and result.images.shape == x.shape
    assert result.lam.device.type == "meta" and result.perm.device.type == "meta"
    labels = torch.zeros(4, dtype=torch.long, device="meta")
    targets = result.targets(labels, num_classes=7)
    assert targets.device.type == "meta" and targets.shape == (4, 7)


@pytest.mark.parametrize("transform", [
    fastmix.MixUp(num_classes=5, seed=0), fastmix.CutMix(num_classes=5, seed=0, per_sample=True),
    fastmix.CutOut(num_classes=5, seed=0), fastmix.SaliencyMix(num_classes=5, seed=0),
    fastmix.SageMix(num_classes=5, seed=0, rand_pos=0.05),
], ids=lambda t: type(t).__name__)
def test_transforms_run_on_meta_tensors(transform):
    x = torch.rand(4, 3, 16, 16, device="meta")
    labels = torch.zeros(4, dtype=torch.long, device="meta")
    extra = {"saliency": torch.rand(4, 16, 16, device="meta")} if isinstance(transform, fastmix.SageMix) else {}
    images, targets = transform(x, labels, **extra)
    assert images.device.type == "meta" and targets.shape == (4, 5) and targets.device.type == "meta"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["pytorch", "triton"])
def test_operators_do_not_synchronise_on_cuda(backend):
    """The operators and their targets under set_sync_debug_mode("error"): any host sync raises."""
    device = torch.device("cuda")
    x = torch.rand(8, 3, 32, 32, device=device)
    s = torch.rand(8, 32, 32, device=device)
    y = torch.arange(8, device=device) % 5
    calls = [
        lambda: fastmix.mixup(x, y, backend=backend), lambda: fastmix.cutmix(x, y, backend=backend),
        lambda: fastmix.cutmix(x, y, per_sample=True, backend=backend),
        lambda: fastmix.cutout(x, y, backend=backend), lambda: fastmix.saliencymix(x, y, backend=backend),
        lambda: fastmix.saliencymix(x, y, per_sample=True, backend=backend),
        lambda: fastmix.sage_mix(x, y, saliency=s, backend=backend),
        lambda: fastmix.sage_mix(x, y, saliency=s, search="exhaustive", backend=backend),
        lambda: fastmix.sage_mix(x, y, saliency=s, search="coarse_to_fine", backend=backend),
    ]
    for call in calls:  # warm-up: first calls compile kernels and allocate pinned buffers
        call().targets(num_classes=5)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for call in calls:
            call().targets(num_classes=5)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
