"""Copy-Paste, PyTorch path: the rules on hand-built masks, the jitter geometry, the parameters
and the data model. Small images; the kernels run on injected parameters."""
import pytest
import torch
import torch.nn.functional as F

from fastmix.backends.pytorch import copy_paste as K
from fastmix.copy_paste import (CopyPasteParams, InstanceBatch, JitterParams, copy_paste, draw_copy_paste_params,
                                lsj_scaled_size, masks_to_boxes)

NO_JITTER = dict(scale_range=(1.0, 1.0), flip_prob=0.0)


def rect_mask(height, width, y1, y2, x1, x2):
    m = torch.zeros(height, width, dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def make_batch(masks_per_image, size=64, dtype=torch.uint8, seed=0):
    """Batch of random images; masks_per_image: per image a list of [H, W] bool masks."""
    gen = torch.Generator().manual_seed(seed)
    images, masks, labels = [], [], []
    for i, image_masks in enumerate(masks_per_image):
        if dtype == torch.uint8:
            images.append(torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8))
        else:
            images.append(torch.rand((3, size, size), generator=gen).to(dtype))
        masks.append(torch.stack(image_masks) if image_masks else torch.zeros(0, size, size, dtype=torch.bool))
        labels.append(torch.arange(len(image_masks), dtype=torch.int64) + 100 * (i + 1))
    return InstanceBatch.from_lists(images, masks, labels=labels)


def identity_params(perm, selected):
    batch = len(perm)
    jitter = JitterParams(scale=torch.ones(batch, dtype=torch.float64), offset=torch.zeros(batch, 2, dtype=torch.int64),
                          flip=torch.zeros(batch, dtype=torch.bool))
    return CopyPasteParams(perm=torch.tensor(perm), receiving=jitter, pasted=jitter,
                           selected=torch.tensor(selected, dtype=torch.bool))


def paste_into_first(receiving_masks, source_masks, size=64, **kwargs):
    """Image 0 receives every object of image 1; image 1 receives nothing."""
    batch = make_batch([receiving_masks, source_masks], size=size)
    slots = batch.max_instances
    selected = [[n < len(source_masks) for n in range(slots)], [False] * slots]
    return batch, copy_paste(batch, params=identity_params([1, 0], selected), backend="pytorch", **kwargs)


# ---------------------------------------------------------------- rules on hand-built masks


def test_untouched_object_is_kept_and_pasted_object_appended():
    a = rect_mask(64, 64, 2, 11, 3, 13)
    p = rect_mask(64, 64, 40, 50, 40, 52)
    batch, out = paste_into_first([a], [p])
    assert torch.equal(out.masks[0], torch.stack([a, p]))
    assert out.boxes[0].tolist() == [[3, 2, 13, 11], [40, 40, 52, 50]]
    assert out.labels[0].tolist() == [100, 200]
    assert out.kept[0, 0] and out.pasted[0, 0]
    # image 1 received nothing and kept its object
    assert torch.equal(out.masks[1], p[None]) and out.labels[1].tolist() == [200]


def test_fully_covered_object_is_dropped():
    a = rect_mask(64, 64, 20, 31, 20, 31)
    p = rect_mask(64, 64, 15, 36, 15, 36)
    _, out = paste_into_first([a], [p])
    assert not out.kept[0, 0]
    assert torch.equal(out.masks[0], p[None]) and out.labels[0].tolist() == [200]


def test_small_object_whose_box_moved_is_dropped():
    a = rect_mask(64, 64, 10, 25, 10, 25)          # 225 px <= 300
    p = rect_mask(64, 64, 0, 64, 13, 64)           # covers the right 12 columns: x2 moves by 12 > 10
    _, out = paste_into_first([a], [p])
    assert not out.kept[0, 0]
    assert out.labels[0].tolist() == [200]


def test_large_object_whose_box_moved_is_kept_with_recomputed_box():
    a = rect_mask(64, 64, 5, 35, 5, 35)            # 900 px
    p = rect_mask(64, 64, 0, 64, 23, 64)           # removes 12 columns, 540 px remain > 300
    _, out = paste_into_first([a], [p])
    assert out.kept[0, 0]
    assert out.boxes[0][0].tolist() == [5, 5, 23, 35]
    assert torch.equal(out.masks[0][0], a & ~p)


def test_small_object_whose_box_moved_little_is_kept():
    a = rect_mask(64, 64, 10, 25, 10, 25)
    p = rect_mask(64, 64, 0, 64, 20, 64)           # x2 moves by 5 <= 10
    _, out = paste_into_first([a], [p])
    assert out.kept[0, 0] and out.boxes[0][0].tolist() == [10, 10, 20, 25]


def test_hole_in_the_middle_keeps_the_box_and_the_object():
    a = rect_mask(64, 64, 10, 25, 10, 25)
    p = rect_mask(64, 64, 12, 23, 12, 23)          # 104 px left, box unchanged
    _, out = paste_into_first([a], [p])
    assert out.kept[0, 0] and out.boxes[0][0].tolist() == [10, 10, 25, 25]
    assert int(out.masks[0][0].sum()) == 225 - 121


@pytest.mark.parametrize("option", [dict(bbox_occluded_thr=12), dict(mask_occluded_thr=44)])
def test_thresholds_are_configurable(option):
    a = rect_mask(64, 64, 10, 25, 10, 25)
    p = rect_mask(64, 64, 0, 64, 13, 64)           # moved 12, 45 px left
    _, default = paste_into_first([a], [p])
    _, relaxed = paste_into_first([a], [p], **option)
    assert not default.kept[0, 0] and relaxed.kept[0, 0]


def test_mmdet_per_object_rule_not_tf_batch_wide_quirk():
    occluded = rect_mask(64, 64, 10, 25, 10, 25)    # dropped: moved 12, small
    small_untouched = rect_mask(64, 64, 50, 55, 2, 7)
    p = rect_mask(64, 64, 0, 40, 13, 64)
    _, out = paste_into_first([occluded, small_untouched], [p])
    # TF's reduce_any would drop every object <= 300 px once one is occluded; mmdet keeps it.
    assert out.kept[0].tolist() == [False, True]


def test_one_pixel_objects():
    covered = rect_mask(32, 32, 5, 6, 7, 8)
    elsewhere = rect_mask(32, 32, 20, 21, 30, 31)
    pasted = rect_mask(32, 32, 5, 6, 7, 8)
    _, out = paste_into_first([covered, elsewhere], [pasted], size=32)
    assert out.kept[0].tolist() == [False, True]
    assert out.boxes[0].tolist() == [[30, 20, 31, 21], [7, 5, 8, 6]]
    assert out.labels[0].tolist() == [101, 200]


def test_empty_source_leaves_the_receiver_unchanged():
    a = rect_mask(32, 32, 3, 9, 3, 9)
    batch = make_batch([[a], []], size=32)
    out = copy_paste(batch, params=identity_params([1, 0], [[False], [True]]), backend="pytorch")
    assert torch.equal(out.images[0], batch.images[0])
    assert torch.equal(out.masks[0], a[None]) and out.labels[0].tolist() == [100]
    assert out.alpha[0].sum() == 0
    # image 1 (no objects of its own) received image 0's object
    assert torch.equal(out.masks[1], a[None]) and out.labels[1].tolist() == [100]


def test_zero_instances_in_the_whole_batch():
    batch = make_batch([[], [], []], size=16)
    out = copy_paste(batch, generator=torch.Generator().manual_seed(0), output_size=16, backend="pytorch")
    assert batch.max_instances == 0
    assert [m.shape for m in out.masks] == [(0, 16, 16)] * 3
    assert [b.shape for b in out.boxes] == [(0, 4)] * 3
    assert out.padded().counts.tolist() == [0, 0, 0]


def test_hard_blend_takes_pasted_pixels_exactly():
    p = rect_mask(32, 32, 4, 20, 6, 18)
    for dtype in (torch.uint8, torch.float32):
        batch = make_batch([[], [p]], size=32, dtype=dtype)
        out = copy_paste(batch, params=identity_params([1, 0], [[True], [False]]), backend="pytorch")
        expected = torch.where(p, batch.images[1], batch.images[0])
        assert out.images.dtype == dtype
        assert torch.equal(out.images[0], expected)
        assert torch.equal(out.alpha[0], p.float())


def test_gaussian_blend_is_soft_but_masks_use_the_hard_alpha():
    a = rect_mask(32, 32, 0, 32, 0, 32)
    p = rect_mask(32, 32, 8, 24, 8, 24)
    batch = make_batch([[a], [p]], size=32, dtype=torch.float32)
    params = identity_params([1, 0], [[True], [False]])
    hard = copy_paste(batch, params=params, backend="pytorch")
    soft = copy_paste(batch, params=params, blend="gaussian", blend_sigma=2.0, backend="pytorch")
    alpha = soft.alpha[0]
    assert bool(((alpha > 0) & (alpha < 1)).any()) and alpha.min() >= 0 and alpha.max() <= 1
    assert alpha[16, 16] == pytest.approx(1.0, abs=1e-6) and alpha[0, 0] == 0
    expected = batch.images[0] * (1 - alpha) + batch.images[1] * alpha
    torch.testing.assert_close(soft.images[0], expected, rtol=0, atol=1e-6)
    assert all(torch.equal(x, y) for x, y in zip(hard.masks, soft.masks))


def test_input_is_not_modified_and_dtypes_are_kept():
    a = rect_mask(32, 32, 2, 20, 2, 20)
    p = rect_mask(32, 32, 10, 30, 10, 30)
    batch = make_batch([[a], [p]], size=32, dtype=torch.float16)
    batch.masks = batch.masks.to(torch.uint8)
    before = [t.clone() for t in (batch.images, batch.masks, batch.boxes, batch.labels)]
    out = copy_paste(batch, generator=torch.Generator().manual_seed(3), backend="pytorch")
    for old, new in zip(before, (batch.images, batch.masks, batch.boxes, batch.labels)):
        assert torch.equal(old, new)
    assert out.images.dtype == torch.float16 and all(m.dtype == torch.uint8 for m in out.masks)


def test_channels_last_is_kept():
    batch = make_batch([[rect_mask(16, 16, 1, 5, 1, 5)], [rect_mask(16, 16, 8, 12, 8, 12)]], size=16,
                       dtype=torch.float32)
    batch.images = batch.images.contiguous(memory_format=torch.channels_last)
    out = copy_paste(batch, generator=torch.Generator().manual_seed(0), backend="pytorch")
    assert out.images.is_contiguous(memory_format=torch.channels_last)


def test_cropped_away_source_object_is_not_appended():
    top_left = rect_mask(64, 64, 0, 10, 0, 10)
    bottom_right = rect_mask(64, 64, 50, 60, 50, 60)
    batch = make_batch([[], [top_left, bottom_right]], size=64)
    # s = 2 with a 32x32 output keeps the 64x64 size: the window at (32, 32) is the bottom-right quarter.
    def jitter(offsets):
        return JitterParams(scale=torch.full((2,), 2.0, dtype=torch.float64), offset=torch.tensor(offsets),
                            flip=torch.zeros(2, dtype=torch.bool))
    params = CopyPasteParams(perm=torch.tensor([1, 0]), receiving=jitter([[0, 0], [0, 0]]),
                             pasted=jitter([[32, 32], [0, 0]]), selected=torch.tensor([[True, True], [False, False]]))
    out = copy_paste(batch, params=params, output_size=32, backend="pytorch")
    assert out.pasted[0].tolist() == [False, True]
    assert out.boxes[0].tolist() == [[18, 18, 28, 28]]
    assert out.labels[0].tolist() == [201]


def test_replaying_params_reproduces_the_output():
    batch = make_batch([[rect_mask(48, 48, 1, 30, 2, 20)], [rect_mask(48, 48, 10, 40, 10, 40)],
                        [rect_mask(48, 48, 0, 5, 0, 5), rect_mask(48, 48, 20, 30, 5, 45)]], size=48)
    first = copy_paste(batch, generator=torch.Generator().manual_seed(11), backend="pytorch")
    again = copy_paste(batch, params=first.params, backend="pytorch")
    same_seed = copy_paste(batch, generator=torch.Generator().manual_seed(11), backend="pytorch")
    for other in (again, same_seed):
        assert torch.equal(first.images, other.images)
        for name in ("masks", "boxes", "labels"):
            assert all(torch.equal(x, y) for x, y in zip(getattr(first, name), getattr(other, name)))


def test_auto_backend_on_cpu_matches_the_oracle():
    batch = make_batch([[rect_mask(32, 32, 1, 20, 2, 20)], [rect_mask(32, 32, 10, 30, 10, 30)]], size=32)
    oracle = copy_paste(batch, generator=torch.Generator().manual_seed(5), backend="pytorch")
    ops = copy_paste(batch, params=oracle.params, backend="auto")
    assert torch.equal(oracle.images, ops.images)
    assert all(torch.equal(x, y) for x, y in zip(oracle.masks, ops.masks))


def test_result_padded_form_matches_the_lists():
    batch = make_batch([[rect_mask(32, 32, 1, 20, 2, 20)], [rect_mask(32, 32, 10, 30, 10, 30)]], size=32)
    out = copy_paste(batch, generator=torch.Generator().manual_seed(1), backend="pytorch")
    padded = out.padded()
    assert padded.counts.tolist() == out.counts.tolist()
    _, masks, boxes, labels = padded.to_lists()
    assert all(torch.equal(x, y) for x, y in zip(masks, out.masks))
    assert all(torch.equal(x, y) for x, y in zip(labels, out.labels))


# ---------------------------------------------------------------- jitter geometry (oracle kernels)


def views_for(batch_size, image_size, scaled, offset=(0, 0), flip=False):
    n = batch_size
    return K.pack_views(torch.arange(n), torch.tensor([image_size] * n), torch.tensor([scaled] * n),
                        torch.tensor([offset] * n), torch.full((n,), flip))


def test_lsj_scaled_size_follows_tensorflow():
    sizes = torch.tensor([[100, 200], [100, 200], [64, 64]])
    scaled = lsj_scaled_size(torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64), sizes, (64, 64))
    assert scaled.tolist() == [[32, 64], [16, 32], [128, 128]]


def test_identity_view_copies_images_and_masks():
    images = torch.rand(2, 3, 9, 13)
    masks = torch.rand(2, 4, 9, 13) > 0.5
    views = views_for(2, (9, 13), (9, 13))
    assert torch.equal(K.lsj_resample_images(images, views, 9, 13), images)
    assert torch.equal(K.lsj_resample_masks(masks, views, torch.ones(2, 4, dtype=torch.bool), 9, 13), masks)


def test_flip_view_mirrors_the_columns():
    images = torch.rand(1, 3, 7, 10)
    masks = torch.rand(1, 2, 7, 10) > 0.5
    views = views_for(1, (7, 10), (7, 10), flip=True)
    assert torch.equal(K.lsj_resample_images(images, views, 7, 10), images.flip(-1))
    assert torch.equal(K.lsj_resample_masks(masks, views, torch.ones(1, 2, dtype=torch.bool), 7, 10), masks.flip(-1))


def test_upsampling_matches_torch_interpolate_and_nearest_duplicates_pixels():
    images = torch.rand(2, 3, 8, 12)
    masks = torch.rand(2, 3, 8, 12) > 0.5
    views = views_for(2, (8, 12), (16, 24))
    expected = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(K.lsj_resample_images(images, views, 16, 24), expected, rtol=0, atol=1e-6)
    nearest = K.lsj_resample_masks(masks, views, torch.ones(2, 3, dtype=torch.bool), 16, 24)
    assert torch.equal(nearest, masks.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_downsampling_matches_torch_interpolate_and_pixel_centre_nearest():
    images = torch.rand(1, 3, 16, 20)
    masks = torch.rand(1, 2, 16, 20) > 0.5
    views = views_for(1, (16, 20), (8, 10))
    expected = F.interpolate(images, size=(8, 10), mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(K.lsj_resample_images(images, views, 8, 10), expected, rtol=0, atol=1e-6)
    nearest = K.lsj_resample_masks(masks, views, torch.ones(1, 2, dtype=torch.bool), 8, 10)
    assert torch.equal(nearest, masks[:, :, 1::2, 1::2])


def test_crop_window_and_zero_padding():
    images = torch.rand(1, 3, 8, 8) + 1.0
    up = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
    cropped = K.lsj_resample_images(images, views_for(1, (8, 8), (16, 16), offset=(3, 5)), 8, 8)
    torch.testing.assert_close(cropped, up[:, :, 3:11, 5:13], rtol=0, atol=1e-6)
    padded = K.lsj_resample_images(images, views_for(1, (8, 8), (4, 6)), 8, 8)
    assert (padded[:, :, 4:] == 0).all() and (padded[:, :, :, 6:] == 0).all() and (padded[:, :, :4, :6] > 0).all()
    masks = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    pm = K.lsj_resample_masks(masks, views_for(1, (8, 8), (4, 6)), torch.ones(1, 1, dtype=torch.bool), 8, 8)
    assert int(pm.sum()) == 24 and pm[0, 0, :4, :6].all()


def test_inactive_slots_come_out_empty():
    masks = torch.ones(1, 3, 5, 5, dtype=torch.bool)
    out = K.lsj_resample_masks(masks, views_for(1, (5, 5), (5, 5)), torch.tensor([[True, False, True]]), 5, 5)
    assert out[0, 0].all() and not out[0, 1].any() and out[0, 2].all()


def test_box_convention_is_exclusive_and_empty_masks_are_zero():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 4, 7] = True
    masks[1, 2:6, 3:11] = True
    boxes, areas = K.instance_boxes_areas(masks)
    assert boxes.tolist() == [[7, 4, 8, 5], [3, 2, 11, 6], [0, 0, 0, 0]]
    assert areas.tolist() == [1, 32, 0]
    assert torch.equal(masks_to_boxes(masks.to(torch.uint8)), boxes)


# ---------------------------------------------------------------- parameters


def test_draws_are_reproducible_and_in_range():
    counts = torch.tensor([3, 0, 5, 2])
    sizes = torch.tensor([[40, 60], [50, 50], [30, 90], [64, 64]])
    kwargs = dict(scale_range=(0.5, 1.5), max_num_pasted=4)
    a = draw_copy_paste_params(counts, sizes, (48, 48), generator=torch.Generator().manual_seed(0), **kwargs)
    b = draw_copy_paste_params(counts, sizes, (48, 48), generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(a.perm, b.perm) and torch.equal(a.selected, b.selected)
    assert torch.equal(a.receiving.scale, b.receiving.scale) and torch.equal(a.pasted.offset, b.pasted.offset)
    for jitter, sizes_of in ((a.receiving, sizes), (a.pasted, sizes[a.perm])):
        assert ((jitter.scale >= 0.5) & (jitter.scale <= 1.5)).all()
        max_offset = (lsj_scaled_size(jitter.scale, sizes_of, (48, 48)) - 48).clamp_min(0)
        assert ((jitter.offset >= 0) & (jitter.offset <= max_offset)).all()
    available = counts[a.perm]
    assert (a.selected.sum(1) <= torch.clamp(available, max=4)).all()
    assert not (a.selected & (torch.arange(5)[None] >= available[:, None])).any()


def test_paste_count_is_uniform_over_zero_to_n():
    gen = torch.Generator().manual_seed(0)
    params = draw_copy_paste_params(torch.full((400,), 3), torch.full((400, 2), 8), (8, 8), generator=gen)
    histogram = torch.bincount(params.selected.sum(1), minlength=4)
    assert histogram.tolist() == pytest.approx([100] * 4, abs=35)
    assert params.receiving.flip.float().mean() == pytest.approx(0.5, abs=0.1)


def test_paste_fraction_and_max_num_pasted():
    counts, sizes = torch.tensor([10, 7]), torch.full((2, 2), 8)
    frac = draw_copy_paste_params(counts, sizes, (8, 8), paste_fraction=0.5, perm=[1, 0],
                                  generator=torch.Generator().manual_seed(0))
    assert frac.selected.sum(1).tolist() == [3, 5]
    capped = draw_copy_paste_params(counts, sizes, (8, 8), paste_fraction=1.0, max_num_pasted=4, perm=[1, 0],
                                    generator=torch.Generator().manual_seed(0))
    assert capped.selected.sum(1).tolist() == [4, 4]
    none = draw_copy_paste_params(counts, sizes, (8, 8), max_num_pasted=0, generator=torch.Generator().manual_seed(0))
    assert not none.selected.any()


def test_injected_perm_is_used():
    batch = make_batch([[rect_mask(16, 16, 0, 4, 0, 4)], [rect_mask(16, 16, 5, 9, 5, 9)],
                        [rect_mask(16, 16, 10, 14, 10, 14)]], size=16)
    out = copy_paste(batch, perm=[2, 2, 0], generator=torch.Generator().manual_seed(0), backend="pytorch")
    assert out.perm.tolist() == [2, 2, 0] and out.params.perm.tolist() == [2, 2, 0]


@pytest.mark.parametrize("change, message", [
    (dict(offset=torch.tensor([[0, 1], [0, 0]])), "offset"),
    (dict(scale=torch.tensor([1.0, -1.0], dtype=torch.float64)), "scale"),
    (dict(flip=torch.tensor([0, 1])), "flip"),
])
def test_bad_injected_jitter_is_rejected(change, message):
    batch = make_batch([[rect_mask(16, 16, 0, 4, 0, 4)], [rect_mask(16, 16, 5, 9, 5, 9)]], size=16)
    good = identity_params([1, 0], [[True], [False]])
    fields = dict(scale=good.receiving.scale, offset=good.receiving.offset, flip=good.receiving.flip)
    fields.update(change)
    bad = CopyPasteParams(perm=good.perm, receiving=JitterParams(**fields), pasted=good.pasted, selected=good.selected)
    with pytest.raises(ValueError, match=message):
        copy_paste(batch, params=bad, backend="pytorch")


def test_bad_selection_and_conflicting_arguments_are_rejected():
    batch = make_batch([[rect_mask(16, 16, 0, 4, 0, 4), rect_mask(16, 16, 5, 9, 5, 9)], []], size=16)
    beyond = identity_params([1, 0], [[True, False], [True, True]])      # image 1 has no objects
    with pytest.raises(ValueError, match="beyond"):
        copy_paste(batch, params=beyond, backend="pytorch")
    with pytest.raises(ValueError, match="selected"):
        copy_paste(batch, params=identity_params([1, 0], [[True], [False]]), backend="pytorch")
    with pytest.raises(ValueError, match="perm"):
        copy_paste(batch, params=identity_params([1, 0], [[False, False]] * 2), perm=[1, 0], backend="pytorch")


@pytest.mark.parametrize("kwargs, error", [
    (dict(scale_range=(0.0, 1.0)), ValueError), (dict(scale_range=(2.0, 1.0)), ValueError),
    (dict(flip_prob=1.5), ValueError), (dict(paste_fraction=2.0), ValueError), (dict(max_num_pasted=-1), ValueError),
    (dict(blend="soft"), ValueError), (dict(blend="gaussian", blend_kernel_size=4), ValueError),
    (dict(backend="tpu"), ValueError), (dict(backend="cupy"), ValueError), (dict(output_size=(0, 4)), ValueError),
    (dict(bbox_occluded_thr=-1), ValueError), (dict(perm=[0, 0, 1]), ValueError),
])
def test_bad_options_are_rejected(kwargs, error):
    batch = make_batch([[rect_mask(16, 16, 0, 4, 0, 4)], []], size=16)
    with pytest.raises(error):
        copy_paste(batch, **kwargs)


def test_images_of_different_sizes_need_an_output_size():
    images = [torch.zeros(3, 10, 12, dtype=torch.uint8), torch.zeros(3, 14, 9, dtype=torch.uint8)]
    masks = [torch.ones(1, 10, 12, dtype=torch.bool), torch.ones(1, 14, 9, dtype=torch.bool)]
    batch = InstanceBatch.from_lists(images, masks, labels=[torch.tensor([1]), torch.tensor([2])])
    with pytest.raises(ValueError, match="output_size"):
        copy_paste(batch, backend="pytorch")
    out = copy_paste(batch, output_size=(16, 16), generator=torch.Generator().manual_seed(0), backend="pytorch")
    assert out.images.shape == (2, 3, 16, 16)


# ---------------------------------------------------------------- data model


def test_lists_round_trip_with_different_image_sizes():
    images = [torch.rand(3, 10, 12), torch.rand(3, 14, 9)]
    masks = [torch.zeros(2, 10, 12, dtype=torch.bool), torch.zeros(0, 14, 9, dtype=torch.bool)]
    masks[0][0, 1:4, 2:6] = True
    masks[0][1, 5, 5] = True
    labels = [torch.tensor([3, 4]), torch.zeros(0, dtype=torch.int64)]
    batch = InstanceBatch.from_lists(images, masks, labels=labels)
    assert batch.images.shape == (2, 3, 14, 12) and batch.masks.shape == (2, 2, 14, 12)
    assert batch.counts.tolist() == [2, 0] and batch.image_sizes.tolist() == [[10, 12], [14, 9]]
    assert batch.boxes[0].tolist() == [[2, 1, 6, 4], [5, 5, 6, 6]]      # derived from the masks
    back_images, back_masks, back_boxes, back_labels = batch.to_lists()
    for a, b in zip(back_images + back_masks + back_labels, images + masks + labels):
        assert torch.equal(a, b)
    assert back_boxes[1].shape == (0, 4)


def test_boxes_given_are_kept_in_the_data_model():
    masks = [torch.ones(1, 4, 4, dtype=torch.bool)]
    batch = InstanceBatch.from_lists([torch.zeros(3, 4, 4)], masks, boxes=[torch.tensor([[0.5, 0, 4, 4]])],
                                     labels=[torch.tensor([1])])
    assert batch.boxes.dtype == torch.float32 and batch.boxes[0, 0].tolist() == [0.5, 0, 4, 4]


@pytest.mark.parametrize("case, error, message", [
    ("boxes_count", ValueError, "boxes"), ("labels_count", ValueError, "labels"),
    ("mask_dtype", TypeError, "bool or uint8"), ("label_dtype", TypeError, "integer"),
    ("box_dtype", TypeError, "float"), ("image_dtype", TypeError, "dtype"),
    ("mask_size", ValueError, "masks"), ("list_length", ValueError, "entries"), ("no_labels", ValueError, "labels"),
])
def test_bad_lists_get_a_clear_error(case, error, message):
    images = [torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)]
    masks = [torch.ones(2, 8, 8, dtype=torch.bool), torch.ones(1, 8, 8, dtype=torch.bool)]
    boxes = [torch.zeros(2, 4), torch.zeros(1, 4)]
    labels = [torch.tensor([1, 2]), torch.tensor([3])]
    if case == "boxes_count":
        boxes[0] = torch.zeros(3, 4)
    elif case == "labels_count":
        labels[1] = torch.tensor([3, 4])
    elif case == "mask_dtype":
        masks[0] = masks[0].float()
    elif case == "label_dtype":
        labels[0] = labels[0].float()
    elif case == "box_dtype":
        boxes[1] = boxes[1].bool()
    elif case == "image_dtype":
        images = [im.to(torch.int32) for im in images]
    elif case == "mask_size":
        masks[1] = torch.ones(1, 8, 7, dtype=torch.bool)
    elif case == "list_length":
        masks = masks[:1]
    elif case == "no_labels":
        labels = None
    with pytest.raises(error, match=message):
        InstanceBatch.from_lists(images, masks, boxes=boxes, labels=labels)


def test_bad_padded_batch_gets_a_clear_error():
    images = torch.zeros(2, 3, 8, 8)
    masks = torch.zeros(2, 3, 8, 8, dtype=torch.bool)
    boxes, labels = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="counts"):
        InstanceBatch(images, masks, boxes, labels, counts=[1, 4])
    with pytest.raises(ValueError, match="boxes"):
        InstanceBatch(images, masks, torch.zeros(2, 2, 4), labels, counts=[1, 1])
    with pytest.raises(TypeError, match="masks"):
        InstanceBatch(images, masks.float(), boxes, labels, counts=[1, 1])
    with pytest.raises(ValueError, match="image_sizes"):
        InstanceBatch(images, masks, boxes, labels, counts=[1, 1], image_sizes=[[8, 9], [8, 8]])
    with pytest.raises(TypeError, match="InstanceBatch"):
        copy_paste(images)
