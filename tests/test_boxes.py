import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastmix
from fastmix import params
from fastmix.backends.pytorch.blend import box_mask
from helpers import DTYPES, random_images


def test_official_cutmix_geometry_by_hand():
    # lam 0.75 -> cut = int(10 * 0.5) = 5, half-extent 2; centre (2, 9) clips to rows 0:4, cols 7:10
    box = params.box_from_lam(torch.tensor([0.75]), 10, 10, torch.tensor([2]), torch.tensor([9]))
    assert box.tolist() == [[0, 4, 7, 10]]
    x = random_images(2, 3, 10, 10)
    result = fastmix.cutmix(x, perm=torch.tensor([1, 0]), boxes=box[0])
    assert result.lam.tolist() == pytest.approx([1 - 12 / 100] * 2)
    assert torch.equal(result.images[0, :, 0:4, 7:10], x[1, :, 0:4, 7:10])
    outside = ~box_mask(result.boxes, 10, 10)[0, 0]
    assert torch.equal(result.images[0][:, outside], x[0][:, outside])


@pytest.mark.parametrize("dtype", DTYPES + [torch.uint8])
@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix_pastes_exactly_and_lam_matches_area(dtype, per_sample):
    x = random_images(5, 3, 11, 7, dtype)
    result = fastmix.cutmix(x, per_sample=per_sample, generator=torch.Generator().manual_seed(1))
    inside = box_mask(result.boxes, 11, 7)
    expected = torch.where(inside, x[result.perm], x)
    assert result.images.dtype == dtype and torch.equal(result.images, expected)
    area = inside.sum(dim=(1, 2, 3)).double()
    torch.testing.assert_close(result.lam.double(), 1 - area / 77, atol=1e-7, rtol=0)
    if not per_sample:
        assert bool((result.boxes == result.boxes[0]).all())


def test_cutmix_reproducible_and_channels_last():
    x = random_images(4, 3, 8, 8, memory_format=torch.channels_last)
    a = fastmix.cutmix(x, generator=torch.Generator().manual_seed(5))
    b = fastmix.cutmix(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    assert a.images.is_contiguous(memory_format=torch.channels_last)


def test_cutmix_box_size_follows_official_rule():
    gen = torch.Generator().manual_seed(0)
    lam = params.beta(1.0, 200, gen)
    centre_r = params.randint(32, (200,), gen)
    centre_c = params.randint(32, (200,), gen)
    boxes = params.box_from_lam(lam, 32, 32, centre_r, centre_c)
    for (y1, y2, x1, x2), l, r, c in zip(boxes.tolist(), lam.tolist(), centre_r.tolist(), centre_c.tolist()):
        cut = int(32 * np.sqrt(1 - l))
        assert (y1, y2) == (np.clip(r - cut // 2, 0, 32), np.clip(r + cut // 2, 0, 32))
        assert (x1, x2) == (np.clip(c - cut // 2, 0, 32), np.clip(c + cut // 2, 0, 32))


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 5), height=st.integers(1, 12), width=st.integers(1, 12), seed=st.integers(0, 999))
def test_cutout_erases_only_the_box(batch, height, width, seed):
    x = random_images(batch, 2, height, width, seed=seed) + 5.0  # never zero outside the box
    result = fastmix.cutout(x, generator=torch.Generator().manual_seed(seed))
    inside = box_mask(result.boxes, height, width).expand_as(x)
    assert bool((result.images[inside] == 0).all())
    assert torch.equal(result.images[~inside], x[~inside])
    assert torch.equal(result.lam, torch.ones(batch)) and torch.equal(result.perm, torch.arange(batch))


def test_cutout_length_and_value():
    x = random_images(3, 3, 16, 16) + 10
    result = fastmix.cutout(x, length=8, value=-1.0, generator=torch.Generator().manual_seed(2))
    heights = result.boxes[:, 1] - result.boxes[:, 0]
    assert bool((heights <= 8).all())
    assert bool((result.images == -1.0).any())


def test_saliencymix_box_at_partner_peak():
    x = random_images(3, 3, 12, 12)
    saliency = torch.rand(3, 12, 12) * 0.5
    saliency[1, 3, 8] = 1.0  # partner of sample 0 below
    saliency[2, 10, 1] = 1.0
    saliency[0, 6, 6] = 1.0
    perm = torch.tensor([1, 2, 0])
    batch_box = fastmix.saliencymix(x, perm=perm, lam=0.75, saliency=saliency)
    # cut = int(12 * 0.5) = 6 -> rows 3-3:3+3 = 0:6, cols 8-3:8+3 = 5:11, one box for the batch
    assert batch_box.boxes.tolist() == [[0, 6, 5, 11]] * 3
    assert torch.equal(batch_box.images[0, :, 0:6, 5:11], x[1, :, 0:6, 5:11])
    per_sample = fastmix.saliencymix(x, perm=perm, lam=0.75, saliency=saliency, per_sample=True)
    assert per_sample.boxes.tolist() == [[0, 6, 5, 11], [7, 12, 0, 4], [3, 9, 3, 9]]
    torch.testing.assert_close(per_sample.lam, torch.tensor([1 - 36 / 144, 1 - 20 / 144, 1 - 36 / 144]))


def test_saliencymix_uses_opencv_fine_grained_saliency():
    cv2 = pytest.importorskip("cv2")
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 24, 20), generator=gen, dtype=torch.uint8)
    ours = fastmix.image_saliency(x)
    for i in range(2):
        bgr = np.ascontiguousarray(x[i].permute(1, 2, 0).numpy()[:, :, ::-1])
        ok, theirs = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(bgr)
        assert ok
        np.testing.assert_array_equal(ours[i].numpy(), theirs)
    result = fastmix.saliencymix(x, perm=torch.tensor([1, 0]), lam=0.5)
    peak = int(ours[1].argmax())
    assert torch.equal(result.extras["saliency"][0], ours[1])
    r, c = divmod(peak, 20)
    y1, y2, x1, x2 = result.boxes[0].tolist()
    cut_r, cut_c = int(24 * 0.5 ** 0.5), int(20 * 0.5 ** 0.5)
    assert (y1, y2, x1, x2) == (max(r - cut_r // 2, 0), min(r + cut_r // 2, 24),
                                max(c - cut_c // 2, 0), min(c + cut_c // 2, 20))


def test_saliencymix_float_images_value_range():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    as_uint8 = (x * 255).round().to(torch.uint8)
    from_float = fastmix.saliencymix(x, perm=torch.tensor([1, 0]), lam=0.5)
    from_uint8 = fastmix.saliencymix(as_uint8, perm=torch.tensor([1, 0]), lam=0.5)
    assert torch.equal(from_float.boxes, from_uint8.boxes)
    stretched = fastmix.saliencymix(x * 4 - 2, perm=torch.tensor([1, 0]), lam=0.5, value_range=None)
    assert stretched.boxes.shape == (2, 4)


@pytest.mark.parametrize("bad, error", [
    (lambda: fastmix.cutmix(torch.ones(2, 3, 4, 4), boxes=torch.tensor([0, 5, 0, 2])), ValueError),
    (lambda: fastmix.cutmix(torch.ones(2, 3, 4, 4), boxes=torch.tensor([3, 1, 0, 2])), ValueError),
    (lambda: fastmix.cutmix(torch.ones(2, 3, 4, 4), boxes=torch.tensor([0.0, 1, 0, 2])), TypeError),
    (lambda: fastmix.cutmix(torch.ones(2, 3, 4, 4), boxes=torch.zeros(3, 4, dtype=torch.long)), ValueError),
    (lambda: fastmix.cutout(torch.ones(2, 3, 4, 4), length=-1), ValueError),
    (lambda: fastmix.saliencymix(torch.ones(2, 3, 4, 4), saliency=torch.ones(2, 5, 4)), ValueError),
    (lambda: fastmix.saliencymix(torch.ones(2, 3, 4, 4), saliency=torch.full((2, 4, 4), float("nan"))), ValueError),
    (lambda: fastmix.saliencymix(torch.ones(2, 4, 4, 4)), ValueError),
    (lambda: fastmix.saliencymix(torch.ones(2, 3, 4, 4), value_range=(1.0, 0.0)), ValueError),
])
def test_box_operators_bad_input(bad, error):
    with pytest.raises(error):
        bad()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_shared_box_fast_path_equals_the_masked_path(dtype, memory_format):
    """One box for the whole batch takes a copy-and-slice path; it must give what the per-pixel
    mask gives, keep dtype and memory format, and never alias or modify the input."""
    from fastmix.backends.pytorch import blend

    x = random_images(5, 3, 9, 11, dtype=dtype, seed=3, memory_format=memory_format)
    before = x.clone()
    perm = torch.tensor([2, 0, 4, 1, 3])
    boxes = torch.tensor([[1, 7, 2, 10]] * 5)
    inside = blend.box_mask(boxes, 9, 11)
    pasted = blend.box_paste(x, perm, boxes)
    filled = blend.box_fill(x, boxes, 7.0)
    assert torch.equal(pasted, torch.where(inside, x[perm], x))
    assert torch.equal(filled, torch.where(inside, torch.tensor(7.0).to(dtype), x))
    for out in (pasted, filled):
        assert out.dtype == dtype and out.stride() == x.stride()
        assert out.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    assert torch.equal(x, before)


def test_check_boxes_and_perm_fast_paths_agree_with_the_rules():
    """The NumPy fast paths of check_boxes / check_perm (unsigned comparisons on CPU tensors)
    accept exactly what the elementwise rules accept, negative and misordered values included."""
    from fastmix._checks import check_boxes, check_perm

    gen = torch.Generator().manual_seed(0)
    height, width = 7, 9
    for _ in range(400):
        # Valid boxes, then one coordinate nudged across (or along) a limit.
        y = torch.sort(torch.randint(0, height + 1, (3, 2), generator=gen), dim=1).values
        x = torch.sort(torch.randint(0, width + 1, (3, 2), generator=gen), dim=1).values
        boxes = torch.stack([y[:, 0], y[:, 1], x[:, 0], x[:, 1]], dim=1)
        row = int(torch.randint(0, 3, (1,), generator=gen))
        col = int(torch.randint(0, 4, (1,), generator=gen))
        boxes[row, col] += int(torch.randint(-3, 4, (1,), generator=gen))
        y1, y2, x1, x2 = boxes.unbind(1)
        valid = bool(((y1 >= 0) & (x1 >= 0) & (y2 <= height) & (x2 <= width) & (y2 >= y1) & (x2 >= x1)).all())
        if valid:
            assert torch.equal(check_boxes(boxes, 3, height, width), boxes)
        else:
            with pytest.raises(ValueError, match="boxes must"):
                check_boxes(boxes, 3, height, width)
        perm = torch.randint(-2, 5, (3,), generator=gen)
        for dtype in (torch.int64, torch.int32):
            if bool(((perm >= 0) & (perm < 3)).all()):
                check_perm(perm.to(dtype), 3)
            else:
                with pytest.raises(ValueError, match="perm holds indices"):
                    check_perm(perm.to(dtype), 3)
