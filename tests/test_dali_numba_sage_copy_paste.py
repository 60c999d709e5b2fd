"""fastmix.dali.sage_mix's compiled CPU path (DALI numba_function, fastmix.dali.numba_sage).

The numba path draws perm, the mass and the random candidate shifts with the same DALI random
operators, in the same order, as the python-function path, so one seed gives both the same
parameters; the images agree to float rounding (the smoothing and the normalising sums add in
another order). Both are also checked against fastmix.sage_mix (the PyTorch operator) called
with the parameters the pipeline reports. numba_function compiles when a pipeline is built
(seconds each), so the cases are few and each checks much.
"""
import threading

import numpy as np
import pytest
import torch

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

import fastmix
import fastmix.dali as fmd
from fastmix.dali import numba_ops, numba_sage

pytestmark = pytest.mark.skipif(not numba_ops.available(), reason="numba or DALI's numba plugin is unavailable")

MEAN, STD = [120.0, 110.0, 100.0], [60.0, 50.0, 70.0]


def float_batches(shape, batch, seed, layout):
    """Random float32 images (normal noise plus a smooth blob, so the saliency is not flat)."""
    rng = np.random.default_rng(seed)

    def source():
        height, width = (shape[1], shape[2]) if layout == "CHW" else (shape[0], shape[1])
        out = []
        for _ in range(batch):
            image = rng.normal(size=shape).astype(np.float32)
            cy, cx = rng.integers(0, height), rng.integers(0, width)
            yy, xx = np.mgrid[:height, :width]
            blob = (3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)).astype(np.float32)
            out.append(image + (blob[None] if layout == "CHW" else blob[..., None]))
        return out

    return source


def sage_pipeline(impl, shape, layout="CHW", batch=4, seed=7, source_seed=0, uint8_chw=False, **options):
    @pipeline_def(batch_size=batch, num_threads=1, device_id=None, seed=seed, prefetch_queue_depth=1)
    def pipe():
        if uint8_chw:  # the usual path to normalised CHW float
            rng = np.random.default_rng(source_seed)
            x = fn.external_source(source=lambda: [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(batch)],
                                   batch=True, layout="HWC", dtype=types.UINT8)
            x = fn.crop_mirror_normalize(x, dtype=types.FLOAT, mean=MEAN, std=STD, output_layout="CHW")
        else:
            x = fn.external_source(source=float_batches(shape, batch, source_seed, layout), batch=True, layout=layout,
                                   dtype=types.FLOAT)
        mix = fmd.sage_mix(x, impl=impl, **options)
        return x, mix.images, mix.lam, mix.perm, mix.shifts, mix.mass

    p = pipe()
    p.build()
    return p


def stacked(tensor_list):
    return torch.stack([torch.from_numpy(np.array(tensor_list[i])) for i in range(len(tensor_list))])


def run_batches(pipe, iterations):
    return [[stacked(out) for out in pipe.run()] for _ in range(iterations)]


def to_nchw(x, layout):
    return x if layout == "CHW" else x.permute(0, 3, 1, 2)


CASES = [
    # (shape, layout, options): search="auto" picks random up to 64 px and coarse-to-fine above
    ((12, 16, 3), "CHW-from-uint8", {"rand_pos": 0.05, "per_sample_mass": True}),
    ((20, 18, 3), "HWC", {"per_sample_shifts": True, "per_sample_mass": True, "alpha": 0.0}),
    ((3, 70, 66), "CHW", {"kernel_size": 3, "sigma": 0.8}),
    ((1, 14, 11), "CHW", {"search": "exhaustive", "kernel_size": 1}),
]


@pytest.mark.parametrize("shape, layout, options", CASES, ids=["random", "random-per-sample-hwc", "coarse-to-fine",
                                                               "exhaustive-grey"])
def test_numba_path_equals_python_path_and_pytorch(shape, layout, options):
    uint8_chw = layout == "CHW-from-uint8"
    layout = "CHW" if uint8_chw else layout
    numba = run_batches(sage_pipeline("numba", shape, layout, uint8_chw=uint8_chw, **options), 2)
    python = run_batches(sage_pipeline("python", shape, layout, uint8_chw=uint8_chw, **options), 2)
    for got, want in zip(numba, python):
        x, mixed, lam, perm, shifts, mass = got
        assert torch.equal(x, want[0])
        assert torch.equal(perm, want[3]) and torch.equal(mass, want[5])  # the same DALI draws
        assert torch.equal(shifts, want[4])  # the same candidates, the same best shift
        torch.testing.assert_close(lam, want[2], rtol=0, atol=1e-6)
        torch.testing.assert_close(mixed, want[1], rtol=0, atol=1e-5)
        assert not torch.equal(mixed, x)
        # PyTorch operator with the reported parameters: saliency, mask and blend
        nchw = to_nchw(x, layout)
        saliency = fastmix.image_saliency(nchw, None)
        kernel = {k: options[k] for k in ("kernel_size", "sigma") if k in options}
        expected = fastmix.sage_mix(nchw, saliency=saliency, perm=perm, mass=mass, shifts=shifts[:, None, :], **kernel)
        torch.testing.assert_close(to_nchw(mixed, layout), expected.images, rtol=0, atol=1e-5)
        torch.testing.assert_close(lam, expected.lam, rtol=0, atol=1e-6)
        if options.get("alpha") == 0.0:
            assert torch.equal(mass, torch.full_like(mass, 0.5))
        search = options.get("search", "auto")
        if search == "exhaustive" or max(nchw.shape[2:]) > 64:  # a deterministic search: the oracle's own shift
            chosen = fastmix.sage_mix(nchw, saliency=saliency, perm=perm, mass=mass,
                                      search="exhaustive" if search == "exhaustive" else "coarse_to_fine", **kernel)
            assert torch.equal(shifts, chosen.shifts)


def candidate_pipeline(use_numba, seed, height=20, width=24, rand_pos=0.05, search="random"):
    @pipeline_def(batch_size=3, num_threads=1, device_id=None, seed=seed)
    def pipe():
        x = fn.zeros(shape=[height, width, 3], dtype=types.FLOAT)
        return numba_sage.candidate_shifts(x, "HWC", search, rand_pos, use_numba)

    p = pipe()
    p.build()
    return p


def test_candidate_shifts_are_distinct_valid_and_fixed_by_the_seed():
    height, width = 20, 24
    count = int((2 * height - 1) * (2 * width - 1) * 0.05)
    compiled = stacked(candidate_pipeline(True, 4).run()[0])
    assert compiled.shape == (3, count, 2) and compiled.dtype == torch.int64
    for sample in compiled:
        assert len({tuple(s) for s in sample.tolist()}) == count  # without replacement
        assert (sample[:, 0].abs() < height).all() and (sample[:, 1].abs() < width).all()
    assert not torch.equal(compiled[0], compiled[1])  # each sample its own draw
    # the Python fallback (no numba) draws the same shifts from the same numbers
    assert torch.equal(stacked(candidate_pipeline(False, 4).run()[0]), compiled)
    assert not torch.equal(stacked(candidate_pipeline(True, 5).run()[0]), compiled)
    # search="auto" above 64 px is coarse-to-fine: no candidates
    assert stacked(candidate_pipeline(True, 4, 70, 30, search="auto").run()[0]).shape == (3, 0, 2)


def test_floyd_draw_is_a_uniform_subset():
    """Floyd's algorithm: every one of the P shifts equally likely to be among the K drawn."""
    rng = np.random.default_rng(0)
    height, width, count, trials = 2, 3, 4, 6000  # P = 15
    hits = np.zeros((2 * height - 1, 2 * width - 1))
    out = np.empty((count, 2), np.int64)
    for _ in range(trials):
        numba_sage.floyd_shifts(rng.random(count), height, width, out)
        assert len({tuple(r) for r in out.tolist()}) == count
        hits[out[:, 0] + height - 1, out[:, 1] + width - 1] += 1
    expected = trials * count / hits.size
    assert np.abs(hits - expected).max() < 5 * np.sqrt(expected)


def test_batch_of_one_and_two_pipelines_in_one_process():
    """B = 1 (perm = [0]: the sample mixes with itself) and two numba pipelines run from two
    threads at once give the batches each gives alone (no shared state, no python lock)."""
    single = sage_pipeline("numba", (3, 16, 16), batch=1)
    x, mixed, lam, perm, shifts, mass = run_batches(single, 1)[0]
    assert perm.tolist() == [0]
    python = run_batches(sage_pipeline("python", (3, 16, 16), batch=1), 1)[0]
    torch.testing.assert_close(mixed, python[1], rtol=0, atol=1e-5)
    assert torch.equal(shifts, python[4])

    alone = [run_batches(sage_pipeline("numba", (3, 24, 20), seed=s, source_seed=s), 3) for s in (1, 2)]
    pipes = [sage_pipeline("numba", (3, 24, 20), seed=s, source_seed=s) for s in (1, 2)]
    results = [None, None]

    def work(i):
        results[i] = run_batches(pipes[i], 3)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, alone):
        for batch_got, batch_want in zip(got, want):
            assert all(torch.equal(a, b) for a, b in zip(batch_got, batch_want))


def test_numba_path_errors_name_the_operator():
    with pytest.raises(ValueError, match="fastmix.dali.sage_mix: impl must be one of"):
        sage_pipeline("fast", (3, 8, 8))
    with pytest.raises(ValueError, match="fastmix.dali.sage_mix: impl='numba' needs CPU float32"):
        sage_pipeline("numba", (3, 8, 8), value_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="fastmix.dali.sage_mix: rand_pos must be in"):
        sage_pipeline("numba", (3, 8, 8), rand_pos=0.0)
    with pytest.raises(ValueError, match="fastmix.dali.sage_mix: kernel_size"):
        sage_pipeline("numba", (3, 8, 8), kernel_size=4)
    # What the compiled kernel cannot refuse stops DALI at the guard, whose traceback names the call:
    # two channels (saliency needs RGB or grey), and K = int(9 * 0.05) = 0 random candidates.
    for shape, options in (((2, 8, 8), {}), ((3, 2, 2), {"rand_pos": 0.05, "kernel_size": 1})):
        pipe = sage_pipeline("numba", shape, **options)
        with pytest.raises(RuntimeError, match=r"(?s)sage_mix.*guard.*reshape"):
            pipe.run()
    # the python path says it in words
    pipe = sage_pipeline("python", (3, 2, 2), rand_pos=0.05, kernel_size=1)
    with pytest.raises(RuntimeError, match="gives K = int.*= 0"):
        pipe.run()


# ------------------------------------------------------------------------------------------------
# Copy-Paste (fastmix.dali.numba_copy_paste)


def instance_lists(seed, sizes, counts, chw_float=False):
    rng = np.random.default_rng(seed)
    images, masks, labels = [], [], []
    for (h, w), count in zip(sizes, counts):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        images.append(np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32) / 255 if chw_float else image)
        m = np.zeros((count, h, w), np.uint8)
        for k in range(count):  # random rectangles and blobs, some overlapping, values 0/1 or 0/255
            y, x = int(rng.integers(0, h - 5)), int(rng.integers(0, w - 5))
            m[k, y:y + int(rng.integers(3, h - y + 1)), x:x + int(rng.integers(3, w - x + 1))] = 255 if k % 2 else 1
            m[k] &= (rng.random((h, w)) < 0.9).astype(np.uint8) * 255
        masks.append(m)
        labels.append(rng.integers(1, 80, count).astype(np.int32))
    return images, masks, labels


def copy_paste_pipeline(data, *, impl="numba", seed=3, chw_float=False, **options):
    images, masks, labels = data

    @pipeline_def(batch_size=len(images), num_threads=1, device_id=None, seed=seed, prefetch_queue_depth=1)
    def pipe():
        x = fn.external_source(source=lambda: images, batch=True, layout="CHW" if chw_float else "HWC",
                               dtype=types.FLOAT if chw_float else types.UINT8)
        m = fn.external_source(source=lambda: masks, batch=True)
        lab = fn.external_source(source=lambda: labels, batch=True)
        out = fmd.copy_paste(x, m, lab, impl=impl, **options)
        return out.images, out.masks, out.boxes, out.labels, out.perm, out.jitter, out.selected

    p = pipe()
    p.build()
    return p


def samples_of(outs):
    return [[torch.from_numpy(np.array(out[i])) for i in range(len(out))] for out in outs]


def replay_copy_paste(data, outs, chw_float, **options):
    """fastmix.copy_paste (PyTorch operator) with the CopyPasteParams the pipeline reports."""
    from fastmix.copy_paste import CopyPasteParams, InstanceBatch, JitterParams, copy_paste

    images, masks, labels = data
    _, _, _, _, perm, jitter, selected = outs
    batch_size = len(images)
    jitter = torch.stack(jitter)
    slots = max(1, max(len(lab) for lab in labels))
    chosen = torch.zeros(batch_size, slots, dtype=torch.bool)
    for i, row in enumerate(selected):
        assert row.numel() == len(labels[int(perm[i])])
        chosen[i, :row.numel()] = row.bool()
    params = CopyPasteParams(perm=torch.stack(perm).long(),
                             receiving=JitterParams(scale=jitter[:, 0], offset=jitter[:, 2:4].long(),
                                                    flip=jitter[:, 6].bool()),
                             pasted=JitterParams(scale=jitter[:, 1], offset=jitter[:, 4:6].long(),
                                                 flip=jitter[:, 7].bool()),
                             selected=chosen[:, :max(len(lab) for lab in labels)])
    chw = [torch.from_numpy(a) if chw_float else torch.from_numpy(a).permute(2, 0, 1) for a in images]
    batch = InstanceBatch.from_lists(chw, [torch.from_numpy(m) for m in masks], None,
                                     [torch.from_numpy(lab).long() for lab in labels])
    return copy_paste(batch, params=params, **options)


CP_CASES = [
    # sizes, counts (an image without objects), chw_float, options
    ([(20, 24), (16, 16), (24, 20), (18, 22)], [2, 3, 0, 1], False,
     {"output_size": (16, 18), "scale_range": (0.5, 1.5)}),
    ([(21, 17)] * 3, [4, 1, 2], True, {"output_size": (12, 20), "flip_prob": 0.8, "paste_fraction": 0.6,
                                       "bbox_occluded_thr": 2, "mask_occluded_thr": 30}),
    ([(15, 13)], [3], False, {"output_size": 14}),  # B = 1: perm = [0], nothing pasted
    ([(12, 12)] * 2, [0, 0], False, {"output_size": (10, 10)}),  # no object anywhere
]


@pytest.mark.parametrize("sizes, counts, chw_float, options", CP_CASES,
                         ids=["hwc-uint8-mixed-sizes", "chw-float-fraction", "batch-of-one", "no-objects"])
def test_copy_paste_numba_equals_pytorch_on_its_parameters(sizes, counts, chw_float, options):
    data = instance_lists(len(sizes), sizes, counts, chw_float)
    pipe = copy_paste_pipeline(data, chw_float=chw_float, **options)
    for _ in range(2):
        outs = samples_of(pipe.run())
        images, masks, boxes, labels, perm, _, _ = outs
        replay_options = {k: v for k, v in options.items() if k not in ("scale_range", "flip_prob", "paste_fraction")}
        expected = replay_copy_paste(data, outs, chw_float, **replay_options)
        assert torch.equal(torch.stack(perm).long(), expected.perm)
        want = expected.images if chw_float else expected.images.permute(0, 2, 3, 1)
        assert torch.equal(torch.stack(images), want)  # bit for bit
        for i in range(len(sizes)):
            assert masks[i].dtype == torch.uint8 and torch.equal(masks[i], expected.masks[i])
            assert torch.equal(boxes[i], expected.boxes[i]) and torch.equal(labels[i], expected.labels[i])
        if len(sizes) == 1:
            assert perm[0].item() == 0 and masks[0].shape[0] <= counts[0]
        if sum(counts) == 0:
            assert all(m.shape == (0, *masks[0].shape[1:]) for m in masks)


def test_copy_paste_numba_follows_the_seed_and_runs_beside_another_pipeline():
    data = instance_lists(0, [(20, 24), (16, 16), (24, 20)], [2, 3, 1])
    options = {"output_size": (16, 16), "scale_range": (0.8, 1.2)}
    alone = [[samples_of(p.run()) for _ in range(2)] for p in (copy_paste_pipeline(data, seed=s, **options)
                                                               for s in (9, 9, 10))]
    assert all(all(torch.equal(u, v) for u, v in zip(a, b)) for a, b in zip(alone[0][0], alone[1][0]))
    assert not all(all(torch.equal(u, v) for u, v in zip(a, b)) for a, b in zip(alone[0][0], alone[2][0]))
    pipes = [copy_paste_pipeline(data, seed=s, **options) for s in (9, 10)]
    results = [None, None]

    def work(i):
        results[i] = [samples_of(pipes[i].run()) for _ in range(2)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, (alone[0], alone[2])):
        for batch_got, batch_want in zip(got, want):
            assert all(all(torch.equal(u, v) for u, v in zip(a, b)) for a, b in zip(batch_got, batch_want))


def test_copy_paste_numba_errors_name_the_operator():
    data = instance_lists(1, [(12, 12)] * 2, [1, 1])
    with pytest.raises(ValueError, match="fastmix.dali.copy_paste: impl must be one of"):
        copy_paste_pipeline(data, impl="fast", output_size=8)
    with pytest.raises(ValueError, match="fastmix.dali.copy_paste: impl='numba' needs"):
        copy_paste_pipeline(data, output_size=8, blend="gaussian")
    with pytest.raises(ValueError, match="fastmix.dali.copy_paste: impl='numba' needs"):
        copy_paste_pipeline(data)  # no output_size
    images, masks, labels = data
    pipe = copy_paste_pipeline((images, [masks[0][:, :10], masks[1]], labels), output_size=8)  # masks not image-sized
    with pytest.raises(RuntimeError, match=r"(?s)copy_paste.*_guard.*reshape"):
        pipe.run()


@pytest.mark.filterwarnings("ignore:Checkpointing enabled in a pipeline with external source")  # constant data
def test_copy_paste_numba_checkpoint_restore_gives_the_same_batches():
    """Every draw is a DALI random operator, so a checkpoint restores them."""
    images, masks, labels = instance_lists(2, [(20, 24), (16, 16), (24, 20)], [2, 3, 1])

    def make(**kwargs):
        @pipeline_def(batch_size=3, num_threads=1, device_id=None, seed=4, enable_checkpointing=True, **kwargs)
        def pipe():
            x = fn.external_source(source=lambda: images, batch=True, layout="HWC", dtype=types.UINT8)
            m = fn.external_source(source=lambda: masks, batch=True)
            lab = fn.external_source(source=lambda: labels, batch=True)
            out = fmd.copy_paste(x, m, lab, output_size=(16, 16), scale_range=(0.5, 1.5))
            return out.images, out.masks, out.jitter, out.selected

        p = pipe()
        p.build()
        return p

    pipe = make()
    samples_of(pipe.run())
    checkpoint = pipe.checkpoint()
    expected = [samples_of(pipe.run()) for _ in range(2)]
    restored = make(checkpoint=checkpoint)
    got = [samples_of(restored.run()) for _ in range(2)]
    for batch_got, batch_want in zip(got, expected):
        assert all(all(torch.equal(u, v) for u, v in zip(a, b)) for a, b in zip(batch_got, batch_want))
    assert not all(torch.equal(u, v) for u, v in zip(expected[0][2], expected[1][2]))  # new draws each batch
