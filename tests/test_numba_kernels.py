"""numba CPU kernels (fastmix/backends/numba) against the PyTorch path, bit for bit.

Random (never all-zero) inputs of many shapes (B=1, one channel, 1-pixel and odd frames),
uint8 / float32 / float64 images, uint8 -> float outputs, NCHW and channels_last. Outputs are
written into poisoned buffers (NaN; uint8: 255, with inputs drawn from [0, 254] so 255 is never
right for paste/fill; the uint8 blend can produce 255 only from two 254s, which the data makes
unlikely and the comparison would still catch), so a skipped element fails the comparison.
Also: backend dispatch, the out= aliasing rules, bad perms, autograd through the numba path,
DataLoader workers forked after the parent ran a kernel, and the cache of a read-only install.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("numba")

from fastmix import ops  # noqa: E402
from fastmix.backends import numba as numba_backend  # noqa: E402
from fastmix.backends.numba import blend as nb  # noqa: E402
from fastmix.backends.pytorch import blend as tb  # noqa: E402
from fastmix.backends.pytorch import sage as ts  # noqa: E402

pytestmark = pytest.mark.skipif(not numba_backend.available(), reason="numba does not import here")

SHAPES = [(1, 3, 7, 5), (2, 1, 1, 1), (3, 3, 13, 17), (4, 5, 1, 9), (5, 2, 8, 1), (7, 3, 32, 31)]
# (images dtype, output dtype)
DTYPE_PAIRS = [(torch.uint8, torch.uint8), (torch.float32, torch.float32), (torch.float64, torch.float64),
               (torch.uint8, torch.float32), (torch.uint8, torch.float64)]


def images_of(shape, dtype, channels_last, seed):
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        x = torch.randint(0, 255, shape, generator=gen).to(torch.uint8)
    else:
        x = (torch.randn(shape, generator=gen) * 3).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def poisoned(like, dtype):
    out = torch.empty_like(like, dtype=dtype)
    return out.fill_(255 if dtype == torch.uint8 else float("nan"))


def boxes_of(batch, height, width, gen, shared):
    """Boxes in and around the frame: some empty, some past the edges (clipped), some whole."""
    y = torch.sort(torch.randint(-2, height + 3, (batch, 2), generator=gen), dim=1).values
    x = torch.sort(torch.randint(-2, width + 3, (batch, 2), generator=gen), dim=1).values
    boxes = torch.stack([y[:, 0], y[:, 1], x[:, 0], x[:, 1]], dim=1)
    if shared:
        boxes = boxes[:1].expand(batch, 4).clone()
    if bool((boxes == boxes[:1]).all()):
        # One box for the batch: the PyTorch path slices instead of masking there, and a slice
        # reads a negative start from the end, so keep such a box inside the frame.
        boxes[:, 0:2].clamp_(0, height)
        boxes[:, 2:4].clamp_(0, width)
    return boxes


def assert_identical(result, expected):
    assert result.dtype == expected.dtype
    assert result.stride() == expected.stride(), "the output must keep the input's memory format"
    assert torch.equal(result, expected), (result.double() - expected.double()).abs().max()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtypes", DTYPE_PAIRS, ids=lambda d: f"{d[0]}->{d[1]}".replace("torch.", ""))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "per_batch"])
@pytest.mark.parametrize("launch", ["serial", "parallel"])
def test_mixup_matches_pytorch(shape, dtypes, channels_last, per_sample, launch, monkeypatch):
    # Small batches run on the calling thread; force the parallel kernel too, so both are tested.
    monkeypatch.setattr(nb, "SERIAL_MAX_ELEMENTS", 1 << 20 if launch == "serial" else -1)
    dtype, out_dtype = dtypes
    x = images_of(shape, dtype, channels_last, seed=sum(shape))
    gen = torch.Generator().manual_seed(1)
    perm = torch.randperm(shape[0], generator=gen)
    lam = torch.rand(shape[0], generator=gen) if per_sample else torch.rand(1, generator=gen).expand(shape[0])
    lam = lam.clone()
    lam[0] = 0.5  # ties of the uint8 rounding occur for real
    expected = tb.mixup_blend(x.to(out_dtype), perm, lam)
    assert_identical(nb.mixup_blend(x, perm, lam, out_dtype, out=poisoned(expected, out_dtype)), expected)
    assert_identical(nb.mixup_blend(x, perm, lam, out_dtype), expected)


@pytest.mark.parametrize("batch, sample_shape", [(9, (3, 90, 70)), (37, (2, 5, 3)), (1, (1, 130, 129))])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("launch", ["serial", "parallel"])
def test_mixup_walk_covers_repeated_partners_and_long_samples(batch, sample_shape, dtype, launch, monkeypatch):
    """The kernels visit samples in the order of nb's partner walk: perms with repeats (a
    function, not a permutation), several chunks per sample and more work items than samples
    must all give the PyTorch path's result."""
    monkeypatch.setattr(nb, "SERIAL_MAX_ELEMENTS", 1 << 30 if launch == "serial" else -1)
    x = images_of((batch, *sample_shape), dtype, False, seed=batch)
    gen = torch.Generator().manual_seed(batch)
    perm = torch.randint(0, batch, (batch,), generator=gen)  # repeats and fixed points
    lam = torch.rand(batch, generator=gen)
    expected = tb.mixup_blend(x, perm, lam)
    assert_identical(nb.mixup_blend(x, perm, lam, out=poisoned(expected, dtype)), expected)


@pytest.mark.parametrize("seed", range(6))
def test_partner_walk_orders_every_sample_once_following_perm(seed):
    from fastmix.backends.numba import _kernels

    gen = torch.Generator().manual_seed(seed)
    batch = 1 + seed * 7
    perm = torch.randint(0, batch, (batch,), generator=gen) if seed % 2 else torch.randperm(batch, generator=gen)
    order = _kernels.partner_walk(perm.numpy())
    assert sorted(order.tolist()) == list(range(batch))
    # Each step goes to the partner unless the partner was visited already (then a new walk starts).
    visited = set()
    for here, following in zip(order[:-1].tolist(), order[1:].tolist()):
        visited.add(here)
        partner = int(perm[here])
        assert following == partner or partner in visited


def test_mixup_uint8_rounds_half_to_even_like_pytorch():
    # 1 and 2 blended at lam = 0.5 give 1.5 -> 2, 2 and 3 give 2.5 -> 2, and lam outside [0, 1] saturates.
    x = torch.tensor([1, 2, 2, 3, 250, 10], dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 2, 3, 3).contiguous()
    perm = torch.tensor([1, 0, 3, 2, 5, 4])
    lam = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.3, 1.3])
    expected = tb.mixup_blend(x, perm, lam)
    assert_identical(nb.mixup_blend(x, perm, lam), expected)
    assert expected[:4, 0, 0, 0].tolist() == [2, 2, 2, 2] and expected[4:, 0, 0, 0].tolist() == [255, 0]


# Rows of >= 128 elements (NCHW W=150; channels_last W*C = 3*47) take the kernels' long-row path
# (three copies per crossing row); the rest the short-row path (copy, then overwrite the box).
LONG_ROW_SHAPES = [(3, 3, 11, 150), (2, 3, 9, 47), (4, 1, 130, 129)]


@pytest.mark.parametrize("shape", SHAPES + LONG_ROW_SHAPES)
@pytest.mark.parametrize("dtypes", DTYPE_PAIRS, ids=lambda d: f"{d[0]}->{d[1]}".replace("torch.", ""))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shared", [False, True], ids=["per_sample", "per_batch"])
@pytest.mark.parametrize("launch", ["serial", "parallel"])
def test_box_paste_and_fill_match_pytorch(shape, dtypes, channels_last, shared, launch, monkeypatch):
    monkeypatch.setattr(nb, "SERIAL_MAX_ELEMENTS", 1 << 20 if launch == "serial" else -1)
    dtype, out_dtype = dtypes
    batch, _, height, width = shape
    x = images_of(shape, dtype, channels_last, seed=7 + sum(shape))
    gen = torch.Generator().manual_seed(2)
    # per-sample boxes with a pairing that repeats partners (the kernels' walk order must not care)
    perm = torch.randint(0, batch, (batch,), generator=gen) if not shared else torch.randperm(batch, generator=gen)
    boxes = boxes_of(batch, height, width, gen, shared)
    expected = tb.box_paste(x.to(out_dtype), perm, boxes)
    assert_identical(nb.box_paste(x, perm, boxes, out_dtype, out=poisoned(expected, out_dtype)), expected)
    for value in (0.0, 17.0, -1.5):
        if out_dtype == torch.uint8 and value < 0:
            continue
        expected = tb.box_fill(x.to(out_dtype), boxes, value)
        assert_identical(nb.box_fill(x, boxes, value, out_dtype, out=poisoned(expected, out_dtype)), expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("map_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_sage_mask_blend_matches_pytorch(shape, dtype, map_dtype, channels_last):
    batch, _, height, width = shape
    x = images_of(shape, dtype, channels_last, seed=3 + sum(shape))
    gen = torch.Generator().manual_seed(3)
    perm = torch.randperm(batch, generator=gen)
    g1 = torch.rand(batch, height, width, generator=gen, dtype=map_dtype)
    g2 = torch.rand(batch, height, width, generator=gen, dtype=map_dtype)
    g1[0, 0, 0] = 0.0  # a zero denominator where the shifted partner is outside: the eps clamp
    shifts = torch.stack([torch.randint(-height - 1, height + 2, (batch,), generator=gen),
                          torch.randint(-width - 1, width + 2, (batch,), generator=gen)], dim=1)
    shifts[0] = 0
    mask, lam = ts.sage_mask(g1, g2, shifts)
    expected = ts.sage_blend(x, perm, mask, shifts)
    mixed, got_mask, got_lam = nb.sage_mask_blend(x, perm, g1, g2, shifts, out=poisoned(x, dtype))
    assert_identical(mixed, expected)
    assert torch.equal(got_mask, mask)
    torch.testing.assert_close(got_lam, lam, rtol=1e-6, atol=1e-7)


def test_ops_dispatch_to_numba_on_cpu():
    x = images_of((4, 3, 9, 11), torch.uint8, False, seed=0)
    assert ops.resolve("auto", x, (torch.uint8, torch.uint8)) == "numba"
    assert ops.resolve("auto", x, (torch.float16,)) == "pytorch"  # numba has no CPU float16
    assert ops.resolve("auto", x) == "pytorch"  # an op without a numba kernel
    assert ops.resolve("numba", x) == "pytorch"
    with pytest.raises(TypeError, match="numba"):
        ops.resolve("numba", x, (torch.bfloat16,))
    perm, lam = torch.tensor([2, 0, 3, 1]), torch.tensor([0.1, 0.5, 0.7, 1.0])
    boxes = torch.tensor([[1, 5, 2, 9], [0, 9, 0, 11], [3, 3, 1, 4], [8, 9, 10, 11]])
    for backend in ("auto", "numba"):
        assert_identical(ops.mixup_blend(x, perm, lam, None, backend), ops.mixup_blend(x, perm, lam, None, "pytorch"))
        assert_identical(ops.box_paste(x, perm, boxes, torch.float32, backend),
                         ops.box_paste(x, perm, boxes, torch.float32, "pytorch"))
        assert_identical(ops.box_fill(x, boxes, 3.0, None, backend), ops.box_fill(x, boxes, 3.0, None, "pytorch"))
    with pytest.raises(TypeError, match="numba"):
        ops.mixup_blend(x.half(), perm, lam, None, "numba")


def test_autograd_through_the_numba_path():
    x = images_of((3, 2, 5, 6), torch.float64, False, seed=4).requires_grad_()
    perm, lam = torch.tensor([1, 2, 0]), torch.tensor([0.2, 0.9, 0.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ops.mixup_blend(t, perm, lam, None, "numba"), (x,))
    boxes = torch.tensor([[1, 4, 0, 3], [0, 5, 2, 6], [2, 3, 1, 2]])
    assert torch.autograd.gradcheck(lambda t: ops.box_paste(t, perm, boxes, None, "numba"), (x,))


def test_bad_perm_and_out_are_rejected():
    x = images_of((3, 2, 4, 4), torch.float32, False, seed=5)
    lam = torch.full((3,), 0.5)
    with pytest.raises(IndexError, match="perm"):
        nb.mixup_blend(x, torch.tensor([0, 1, 3]), lam)
    with pytest.raises(IndexError, match="perm"):
        nb.box_paste(x, torch.tensor([0, -1, 2]), torch.zeros(3, 4, dtype=torch.int64))
    # out= rules (in place, overlap, layout): tests/test_out_and_in_place.py


def test_non_dense_input_layout():
    base = images_of((4, 3, 10, 12), torch.float32, False, seed=6)
    x = base[:, :, ::2, 1::2]  # neither NCHW- nor channels_last-contiguous
    perm, lam = torch.tensor([3, 2, 1, 0]), torch.rand(4)
    assert torch.equal(nb.mixup_blend(x, perm, lam), tb.mixup_blend(x, perm, lam))
    boxes = torch.tensor([[0, 3, 1, 4]] * 4)
    assert torch.equal(nb.box_paste(x, perm, boxes), tb.box_paste(x, perm, boxes))


def _mix_in_worker(index):
    x = images_of((2, 3, 6, 6), torch.uint8, False, seed=index)
    perm, lam = torch.tensor([1, 0]), torch.tensor([0.25, 0.6])
    return torch.equal(nb.mixup_blend(x, perm, lam), tb.mixup_blend(x, perm, lam))


def test_kernels_run_in_forked_dataloader_workers():
    """The parent has launched parallel kernels already; forked workers must not abort (numba's
    GNU OpenMP layer would: _runtime asks for a fork-safe layer)."""
    assert _mix_in_worker(0)
    loader = torch.utils.data.DataLoader(_WorkerMix(), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    assert [bool(r) for r in loader] == [True] * 4


class _WorkerMix(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.tensor(_mix_in_worker(index))


def test_cache_falls_back_to_the_user_dir_for_a_read_only_install(tmp_path):
    """With the kernels' folder unwritable, the compiled code goes to the per-user cache dir and
    a second process loads it from there instead of compiling. The folder is made unwritable by
    a plain file named __pycache__ (permissions do not stop root, which CI may be)."""
    package = tmp_path / "install" / "kernels_copy"
    package.mkdir(parents=True)
    shutil.copy(Path(numba_backend.__file__).with_name("_kernels.py"), package / "_kernels.py")
    (package / "__init__.py").write_text("")
    (package / "__pycache__").write_text("not a folder")
    user_cache = tmp_path / "user-cache"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.dont_write_bytecode = True
        sys.path.insert(0, {str(package.parent)!r})
        from kernels_copy import _kernels as module
        x = np.arange(24, dtype=np.uint8).reshape(2, 12); out = np.empty_like(x)
        w = np.array([0.25, 0.5], np.float32); w1 = np.float32(1) - w
        perm = np.array([1, 0])
        module.mixup(x, perm, module.partner_walk(perm), w, w1, out)
        stats = module.mixup.stats
        print(int(out.sum()), sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(user_cache)
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (run.stdout.split() for run in runs)
    assert first[0] == second[0]
    assert first[1] == "0" and first[2] == "1", "the first process compiles"
    assert second[1] == "1" and second[2] == "0", "the second process loads the cache"
    assert list(user_cache.rglob("*.nbi")), "the cache index lives in the user cache dir"


# --- Copy-Paste steps (fastmix/backends/numba/copy_paste.py) against the oracle --------------

from fastmix.backends.numba import copy_paste as ncp  # noqa: E402
from fastmix.backends.pytorch import copy_paste as tcp  # noqa: E402


def random_views(gen, batch, height, width, count):
    """Views with down/up scaling, crops past the frame, flips, identity views, odd sizes."""
    source = torch.randint(0, batch, (count,), generator=gen)
    sizes = torch.stack([torch.randint(max(1, height // 2), height + 1, (batch,), generator=gen),
                         torch.randint(max(1, width // 2), width + 1, (batch,), generator=gen)], dim=1)
    scaled = torch.stack([torch.randint(1, 2 * height + 1, (count,), generator=gen),
                          torch.randint(1, 2 * width + 1, (count,), generator=gen)], dim=1)
    offset = torch.stack([torch.randint(0, height + 1, (count,), generator=gen),
                          torch.randint(0, width + 1, (count,), generator=gen)], dim=1)
    flip = torch.rand(count, generator=gen) < 0.5
    scaled[0], offset[0], flip[0] = sizes[source[0]], 0, False  # an identity view
    return tcp.pack_views(source, sizes, scaled, offset, flip)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_copy_paste_resample_matches_oracle(seed, dtype):
    gen = torch.Generator().manual_seed(seed)
    batch, slots, height, width = 3, 4, 13 + seed, 17 + 2 * seed
    views = random_views(gen, batch, height, width, 2 * batch)
    if dtype == torch.uint8:
        images = torch.randint(0, 256, (batch, 3, height, width), generator=gen, dtype=torch.uint8)
    else:
        images = torch.randn(batch, 3, height, width, generator=gen)
    for out_h, out_w in ((height, width), (height - 3, width + 4)):
        assert torch.equal(ncp.lsj_resample_images(images, views, out_h, out_w),
                           tcp.lsj_resample_images(images, views, out_h, out_w))
    masks = torch.rand(batch, slots, height, width, generator=gen) > 0.7
    masks[0, 1] = False  # an empty mask
    active = torch.rand(2 * batch, slots, generator=gen) > 0.3
    for mask_input in (masks, masks.to(torch.uint8) * 7):
        got = ncp.lsj_resample_masks(mask_input, views, active, height, width)
        expected = tcp.lsj_resample_masks(mask_input != 0, views, active, height, width)
        assert torch.equal(got, expected)
        # The boxes kept from the resample pass equal a fresh computation.
        boxes, areas = ncp.instance_boxes_areas(got)
        want_boxes, want_areas = tcp.instance_boxes_areas(expected)
        assert torch.equal(boxes, want_boxes) and torch.equal(areas, want_areas)
        # Occlusion of the receiving half by the pasted half reads only the rows of the kept boxes.
        alpha, updated = ncp.occlusion_update(got[:batch], got[batch:])
        want_alpha, want_updated = tcp.occlusion_update(expected[:batch], expected[batch:])
        assert torch.equal(alpha, want_alpha) and torch.equal(updated, want_updated)


@pytest.mark.parametrize("seed", range(3))
def test_copy_paste_occlusion_boxes_and_blend_match_oracle(seed):
    gen = torch.Generator().manual_seed(seed)
    receiving = torch.rand(3, 5, 11, 19, generator=gen) > 0.6
    pasted = torch.rand(3, 5, 11, 19, generator=gen) > 0.9
    alpha, updated = ncp.occlusion_update(receiving, pasted)
    want_alpha, want_updated = tcp.occlusion_update(receiving, pasted)
    assert torch.equal(alpha, want_alpha) and torch.equal(updated, want_updated)
    for masks in (updated, updated.clone(), receiving.to(torch.uint8) * 3):  # kept boxes, then fresh scans
        boxes, areas = ncp.instance_boxes_areas(masks)
        want_boxes, want_areas = tcp.instance_boxes_areas(masks != 0)
        assert torch.equal(boxes, want_boxes) and torch.equal(areas, want_areas)
    updated[0, 0, 0, 0] = not bool(updated[0, 0, 0, 0])  # an edit makes the kept boxes stale
    assert torch.equal(ncp.instance_boxes_areas(updated)[1], tcp.instance_boxes_areas(updated)[1])
    r, p = torch.randn(2, 3, 6, 7, generator=gen), torch.randn(2, 3, 6, 7, generator=gen)
    a = torch.rand(2, 6, 7, generator=gen)
    assert torch.equal(ncp.copy_paste_blend(r, p, a), tcp.copy_paste_blend(r, p, a))


@pytest.mark.parametrize("jitter", [True, False], ids=["lsj", "no_jitter"])
def test_copy_paste_operator_numba_equals_pytorch(jitter):
    from fastmix.copy_paste import InstanceBatch, copy_paste, draw_copy_paste_params

    gen = torch.Generator().manual_seed(5)
    size, images, masks, labels = 48, [], [], []
    for i, count in enumerate((3, 0, 5, 2)):
        images.append(torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8))
        m = torch.zeros(count, size, size, dtype=torch.bool)
        for n in range(count):
            y, x = torch.randint(0, size - 8, (2,), generator=gen).tolist()
            h, w = torch.randint(2, 20, (2,), generator=gen).tolist()
            m[n, y:y + h, x:x + w] = True
        masks.append(m)
        labels.append(torch.arange(count) + 10 * i)
    batch = InstanceBatch.from_lists(images, masks, labels=labels)
    options = {} if jitter else {"scale_range": (1.0, 1.0), "flip_prob": 0.0}
    params = draw_copy_paste_params(batch.counts, batch.image_sizes, (size, size), max_instances=batch.max_instances,
                                    generator=torch.Generator().manual_seed(1), **options)
    ours = copy_paste(batch, params=params, backend="numba")
    oracle = copy_paste(batch, params=params, backend="pytorch")
    assert torch.equal(ours.images, oracle.images)
    for got, want in ((ours.masks, oracle.masks), (ours.boxes, oracle.boxes), (ours.labels, oracle.labels)):
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(ours.kept, oracle.kept) and torch.equal(ours.pasted, oracle.pasted)


# --- SAGE shift scores -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (4, 16, 13)])
def test_sage_scores_match_pytorch(dtype, shape):
    batch, height, width = shape
    gen = torch.Generator().manual_seed(sum(shape))
    g1 = torch.rand(shape, generator=gen, dtype=dtype)
    g2 = torch.rand(shape, generator=gen, dtype=dtype)
    if height * width > 1:
        g1[0, 0, 0] = 0.0  # zero saliency: the eps clamp
    g1 = g1 / g1.sum(dim=(1, 2), keepdim=True) * 0.3
    g2 = g2 / g2.sum(dim=(1, 2), keepdim=True) * 0.7
    shared = ts.all_shifts(height, width)
    per_sample = shared[torch.randint(0, shared.shape[0], (batch, 9), generator=gen)]
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    for shifts in (shared, per_sample):
        scores, best = ops.sage_scores(g1, g2, shifts, 2 ** 20, "numba")
        want_scores, want_best = ops.sage_scores(g1, g2, shifts, 2 ** 20, "pytorch")
        assert scores.dtype == want_scores.dtype
        torch.testing.assert_close(scores, want_scores, **tol)
        # The chosen shift is the same unless two candidates tie to float rounding.
        picked = want_scores.gather(1, best[:, None])[:, 0]
        torch.testing.assert_close(picked, want_scores.amax(dim=1), **tol)


def test_sage_mix_numba_equals_pytorch_on_cpu():
    import fastmix

    gen = torch.Generator().manual_seed(9)
    x = torch.randn(6, 3, 12, 12, generator=gen)
    saliency = torch.rand(6, 12, 12, generator=gen)
    perm = torch.randperm(6, generator=gen)
    ours = fastmix.sage_mix(x, saliency=saliency, perm=perm, mass=0.4, backend="numba", search="exhaustive")
    oracle = fastmix.sage_mix(x, saliency=saliency, perm=perm, mass=0.4, backend="pytorch", search="exhaustive")
    if torch.equal(ours.shifts, oracle.shifts):
        # The fused numba saliency prep sums in another order than torch (G1, G2 agree to float
        # rounding), so the mask and the images do too; given the same maps the blend itself is
        # bit-identical (test_sage_mask_blend_matches_pytorch).
        torch.testing.assert_close(ours.images, oracle.images, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.mask, oracle.mask, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours.lam, oracle.lam, rtol=1e-6, atol=1e-7)
    else:  # a float-rounding tie between candidates: both picks must score the same
        torch.testing.assert_close(ours.extras["scores"].amax(1), oracle.extras["scores"].amax(1), rtol=1e-5, atol=1e-7)


# --- SaliencyMix's fine-grained saliency ----------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 3, 17, 23), (2, 1, 5, 4), (2, 3, 1, 9), (1, 3, 64, 48), (2, 3, 2, 1),
                                   (1, 1, 1, 1), (2, 3, 130, 7)])
def test_fine_grained_saliency_matches_pytorch_and_opencv(shape):
    from fastmix.backends.numba import saliency as nsal
    from fastmix.backends.pytorch import fine_grained_saliency as tsal

    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    if shape[-1] > 4 and shape[-2] > 4:  # smooth images too: larger, more varied saliency values
        x = torch.nn.functional.avg_pool2d(x.float(), 5, 1, 2).round().to(torch.uint8)
    got = nsal.fine_grained_saliency(x)
    assert torch.equal(got, tsal.fine_grained_saliency(x))
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "saliency"):
        pytest.skip("opencv-contrib is not installed")
    numpy_image = x[0].permute(1, 2, 0).numpy()
    bgr = numpy_image[:, :, ::-1].copy() if shape[1] == 3 else numpy_image[:, :, 0].copy()
    ok, expected = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(bgr)
    assert ok and torch.equal(got[0], torch.from_numpy(expected))


def test_fastmix_disable_numba_falls_back_to_pytorch(monkeypatch):
    x = images_of((2, 3, 4, 4), torch.uint8, False, seed=0)
    monkeypatch.setenv("FASTMIX_DISABLE_NUMBA", "1")
    numba_backend.available.cache_clear()
    try:
        assert not numba_backend.available()
        assert ops.resolve("auto", x, (torch.uint8, torch.uint8)) == "pytorch"
        with pytest.raises(RuntimeError, match="numba"):
            ops.resolve("numba", x, (torch.uint8, torch.uint8))
    finally:
        monkeypatch.delenv("FASTMIX_DISABLE_NUMBA")
        numba_backend.available.cache_clear()
    assert numba_backend.available()



@pytest.mark.parametrize("lam_value", [-0.5, 1.75, -1e-7])
def test_uint8_blend_outside_unit_weights_saturates_like_the_pytorch_path(lam_value):
    """Weights in [0, 1] take the cheaper rounding; others (a backend call may pass any lam) the
    saturating one: both equal torch's round().clamp(0, 255)."""
    x = images_of((4, 3, 9, 70), torch.uint8, False, seed=8)
    perm = torch.tensor([1, 2, 3, 0])
    lam = torch.tensor([lam_value, 0.25, 1.0, 0.0])
    assert_identical(nb.mixup_blend(x, perm, lam), tb.mixup_blend(x, perm, lam))
