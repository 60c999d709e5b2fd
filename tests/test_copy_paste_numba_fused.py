"""The fused numba Copy-Paste steps (fastmix/backends/numba/copy_paste.py: `lsj_paste_images`,
`paste_instance_masks`) against the PyTorch oracle, bit for bit, through the operator and step
by step.

The fused steps never store the oracle's float32 views, jittered or occluded mask batches, so
they are compared with the oracle's composition of those steps on random (never all-zero)
data: B=1, odd and non-square frames, output sizes other than the input's, jitter and no
jitter, uint8 / float32 / float16 images (float16 takes the unfused path), bool / uint8 masks,
NCHW and channels_last, hard and Gaussian blends, images without objects. Every torch.empty
the numba side allocates is poisoned (uint8 255 with inputs in [0, 254], float NaN, bool True),
so an element a kernel skips fails the comparison.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("numba")

from fastmix.backends import numba as numba_backend  # noqa: E402
from fastmix.backends.pytorch import copy_paste as tcp  # noqa: E402
from fastmix.copy_paste import InstanceBatch, copy_paste, draw_copy_paste_params  # noqa: E402

pytestmark = pytest.mark.skipif(not numba_backend.available(), reason="numba does not import here")

_REAL_EMPTY = torch.empty


def _poisoned_empty(*args, **kwargs):
    out = _REAL_EMPTY(*args, **kwargs)
    if out.dtype == torch.bool:
        return out.fill_(True)
    if out.dtype.is_floating_point:
        return out.fill_(float("nan"))
    return out.fill_(torch.iinfo(out.dtype).max if out.dtype == torch.uint8 else -7)


def _batch(gen, counts, height, width, image_dtype, mask_dtype, channels=3):
    images, masks, labels = [], [], []
    for i, count in enumerate(counts):
        if image_dtype == torch.uint8:
            images.append(torch.randint(0, 255, (channels, height, width), generator=gen, dtype=torch.uint8))
        else:
            images.append((torch.rand(channels, height, width, generator=gen) * 255).to(image_dtype))
        m = torch.zeros(count, height, width, dtype=torch.bool)
        for n in range(count):
            y = torch.randint(0, height, (1,), generator=gen).item()
            x = torch.randint(0, width, (1,), generator=gen).item()
            h = torch.randint(1, height + 1, (1,), generator=gen).item()
            w = torch.randint(1, width + 1, (1,), generator=gen).item()
            m[n, y:y + h, x:x + w] = torch.rand(min(h, height - y), min(w, width - x), generator=gen) > 0.2
        masks.append(m.to(mask_dtype))
        labels.append(torch.arange(count) + 10 * i)
    return InstanceBatch.from_lists(images, masks, labels=labels)


def random_views(gen, batch, height, width, count):
    """Views with down/up scaling, crops past the frame, flips, an identity view, odd sizes."""
    source = torch.randint(0, batch, (count,), generator=gen)
    sizes = torch.stack([torch.randint(max(1, height // 2), height + 1, (batch,), generator=gen),
                         torch.randint(max(1, width // 2), width + 1, (batch,), generator=gen)], dim=1)
    scaled = torch.stack([torch.randint(1, 2 * height + 1, (count,), generator=gen),
                          torch.randint(1, 2 * width + 1, (count,), generator=gen)], dim=1)
    offset = torch.stack([torch.randint(0, height + 1, (count,), generator=gen),
                          torch.randint(0, width + 1, (count,), generator=gen)], dim=1)
    flip = torch.rand(count, generator=gen) < 0.5
    scaled[0], offset[0], flip[0] = sizes[source[0]], 0, False
    return tcp.pack_views(source, sizes, scaled, offset, flip)


CASES = [
    # counts, height, width, output size, image dtype, mask dtype, channels_last, blend, jitter
    ((3, 0, 5, 2), 24, 31, None, torch.uint8, torch.bool, False, "hard", True),
    ((3, 0, 5, 2), 24, 31, None, torch.uint8, torch.bool, False, "hard", False),
    ((4,), 17, 9, None, torch.uint8, torch.uint8, False, "hard", True),  # B=1: pastes nothing
    ((2, 6), 19, 23, (15, 27), torch.uint8, torch.uint8, True, "gaussian", True),
    ((5, 1, 3), 16, 16, None, torch.float32, torch.bool, False, "gaussian", False),
    ((5, 1, 3), 16, 16, (21, 13), torch.float32, torch.bool, True, "hard", True),
    ((2, 3), 12, 14, None, torch.float16, torch.bool, False, "hard", True),
    ((0, 0), 8, 8, None, torch.uint8, torch.bool, False, "hard", True),  # no objects at all
    ((7, 7, 7, 7), 33, 29, None, torch.uint8, torch.bool, False, "hard", False),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("seed", range(2))
def test_operator_numba_equals_oracle(case, seed, monkeypatch):
    counts, height, width, size, image_dtype, mask_dtype, channels_last, blend, jitter = case
    gen = torch.Generator().manual_seed(seed)
    batch = _batch(gen, counts, height, width, image_dtype, mask_dtype)
    if channels_last:
        batch = InstanceBatch(batch.images.contiguous(memory_format=torch.channels_last), batch.masks, batch.boxes,
                              batch.labels, batch.counts, batch.image_sizes)
    out_size = size or (height, width)
    options = {} if jitter else {"scale_range": (1.0, 1.0), "flip_prob": 0.0}
    params = draw_copy_paste_params(batch.counts, batch.image_sizes, out_size, max_instances=batch.max_instances,
                                    generator=torch.Generator().manual_seed(seed + 1), **options)
    kwargs = dict(params=params, output_size=size, blend=blend, bbox_occluded_thr=2, mask_occluded_thr=20)
    oracle = copy_paste(batch, backend="pytorch", **kwargs)
    images_before, masks_before = batch.images.clone(), batch.masks.clone()
    monkeypatch.setattr(torch, "empty", _poisoned_empty)
    ours = copy_paste(batch, backend="numba", **kwargs)
    monkeypatch.undo()
    assert torch.equal(batch.images, images_before) and torch.equal(batch.masks, masks_before)
    assert ours.images.dtype == oracle.images.dtype and ours.images.stride() == oracle.images.stride()
    assert torch.equal(ours.images, oracle.images)
    assert torch.equal(ours.alpha, oracle.alpha)
    assert torch.equal(ours.kept, oracle.kept) and torch.equal(ours.pasted, oracle.pasted)
    assert len(ours.masks) == len(oracle.masks) == len(counts)
    for got, want in ((ours.masks, oracle.masks), (ours.boxes, oracle.boxes), (ours.labels, oracle.labels)):
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and torch.equal(a, b)
    if len(counts) > 1 and sum(counts):
        assert int(ours.pasted.sum()) + int(ours.kept.sum()) > 0  # the case did some work


@pytest.mark.parametrize("seed", range(3))
def test_fused_steps_equal_the_oracle_composition(seed):
    """Step level, with views that scale, crop past the frame and flip (random_views of the
    kernel tests) and active slots that skip objects."""
    from fastmix.backends.numba import copy_paste as ncp

    gen = torch.Generator().manual_seed(seed)
    batch, slots, height, width = 3, 4, 13 + seed, 17 + 2 * seed
    views = random_views(gen, batch, height, width, 2 * batch)
    masks = torch.rand(batch, slots, height, width, generator=gen) > 0.6
    active = torch.rand(2 * batch, slots, generator=gen) > 0.3
    for out_h, out_w in ((height, width), (height - 3, width + 4)):
        jittered = tcp.lsj_resample_masks(masks, views, active, out_h, out_w)
        before, _ = tcp.instance_boxes_areas(jittered[:batch])
        alpha, updated = tcp.occlusion_update(jittered[:batch], jittered[batch:])
        after, after_areas = tcp.instance_boxes_areas(updated)
        kept = tcp.receiving_keep(before, after, after_areas, active[:batch], 1, 5)
        pasted_boxes, pasted_areas = tcp.instance_boxes_areas(jittered[batch:])
        pasted = active[batch:] & (pasted_areas > 0)
        got = ncp.paste_instance_masks(masks, views, active, out_h, out_w, 1, 5, torch.bool)
        assert torch.equal(got[0], alpha) and torch.equal(got[1], kept) and torch.equal(got[2], pasted)
        assert torch.equal(got[4], after) and torch.equal(got[5], pasted_boxes)
        for i, m in enumerate(got[3]):
            assert torch.equal(m, torch.cat([updated[i][kept[i]], jittered[batch + i][pasted[i]]]))
        for dtype in (torch.uint8, torch.float32):
            images = (torch.randint(0, 255, (batch, 2, height, width), generator=gen, dtype=torch.uint8)
                      if dtype == torch.uint8 else torch.randn(batch, 2, height, width, generator=gen))
            for a in (alpha.float(), torch.rand(batch, out_h, out_w, generator=gen)):
                views_f = tcp.lsj_resample_images(images, views, out_h, out_w)
                want = tcp.copy_paste_blend(views_f[:batch], views_f[batch:], a)
                if dtype == torch.uint8:
                    want = want.round().clamp(0, 255).to(torch.uint8)
                assert torch.equal(ncp.lsj_paste_images(images, views, a, out_h, out_w), want)
    assert ncp.paste_instance_masks(masks, views, active, height, width, 1, 5, torch.int64) is None
    assert ncp.lsj_paste_images(images.double(), views, alpha.float(), height, width) is None
