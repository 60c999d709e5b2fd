"""fastmix.dali operators as first-class parts of a DALI pipeline (CPU pipelines, device_id=None):
serialization, two pipelines in one process, checkpoints, chaining, and layouts read off the graph.

The pipelines read a small image folder with fn.readers.file + fn.decoders.image + fn.resize, as
a training loader does.
"""
import threading

import numpy as np
import pytest
import torch

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def
from nvidia.dali.pipeline import Pipeline

import fastmix
import fastmix.dali as fmd
from examples.dali_classification import CLASSES, write_image_folder
from fastmix.dali.layouts import infer_layout

BATCH, SIZE = 4, 24


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(str(tmp_path_factory.mktemp("folder")), per_class=3, size=32)


def samples(tensor_list):
    return [torch.from_numpy(np.array(tensor_list[i])) for i in range(len(tensor_list))]


def stacked(tensor_list):
    return torch.stack(samples(tensor_list))


def batches(pipe, count):
    return [[stacked(out) for out in pipe.run()] for _ in range(count)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))


def serializable_pipeline(root, seed=7, **kwargs):
    """Read, decode, resize, then fastmix's DALI-operator mixing, chained with DALI operators."""

    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=None, seed=seed, **kwargs)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="Reader")
        images = fn.resize(fn.decoders.image(jpegs), size=[SIZE, SIZE])
        mixed = fmd.mixup(images, labels, num_classes=len(CLASSES), per_sample=True, impl="dali")
        cut = fmd.cutmix(mixed.images, labels, num_classes=len(CLASSES))
        erased = fmd.cutout(cut.images, length=8)
        chw = fn.crop_mirror_normalize(erased.images, dtype=types.FLOAT, mean=[127.5] * 3, std=[64.0] * 3)
        return chw, mixed.lam, mixed.perm, cut.boxes, cut.targets, erased.boxes

    return pipe()


def test_serialized_pipeline_gives_the_same_batches(folder):
    pipe = serializable_pipeline(folder)
    pipe.build()
    serialized = pipe.serialize()
    expected = batches(pipe, 3)
    clone = Pipeline.deserialize(serialized_pipeline=serialized, batch_size=BATCH, num_threads=2, device_id=None)
    clone.build()
    got = batches(clone, 3)
    assert_same_batches(expected, got)
    assert not torch.equal(expected[0][1], expected[1][1])  # lam is drawn anew for every batch


def test_the_pipeline_seed_fixes_every_draw(folder):
    first, again, other = (serializable_pipeline(folder, seed=s) for s in (3, 3, 4))
    for p in (first, again, other):
        p.build()
    a, b, c = batches(first, 2), batches(again, 2), batches(other, 2)
    assert_same_batches(a, b)
    assert not torch.equal(a[0][1], c[0][1]) and not torch.equal(a[0][3], c[0][3])


def test_two_pipelines_in_one_process_run_concurrently_and_give_their_own_batches(folder):
    def make(seed):
        @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=seed)
        def pipe():
            jpegs, labels = fn.readers.file(file_root=folder, random_shuffle=True)
            images = fn.resize(fn.decoders.image(jpegs), size=[SIZE, SIZE])
            mixed = fmd.cutmix(fmd.mixup(images, impl="dali").images, per_sample=True)
            return mixed.images, mixed.boxes, fmd.saliencymix(images).images

        p = pipe()
        p.build()
        return p

    reference = {seed: batches(make(seed), 4) for seed in (1, 2)}
    pipes = {seed: make(seed) for seed in (1, 2)}
    results, errors = {}, []

    def worker(seed):
        try:
            results[seed] = batches(pipes[seed], 4)
        except Exception as error:  # reported below: a thread's exception is otherwise lost
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in pipes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and set(results) == {1, 2}
    for seed in (1, 2):
        assert_same_batches(reference[seed], results[seed])
    assert not torch.equal(reference[1][0][0], reference[2][0][0])


def test_checkpoint_restore_gives_the_same_batches(folder):
    pipe = serializable_pipeline(folder, enable_checkpointing=True)
    pipe.build()
    batches(pipe, 2)
    checkpoint = pipe.checkpoint()
    expected = batches(pipe, 3)
    restored = serializable_pipeline(folder, enable_checkpointing=True, checkpoint=checkpoint)
    restored.build()
    assert_same_batches(expected, batches(restored, 3))


def test_checkpoint_restore_covers_the_python_function_operators(folder):
    def make(**kwargs):
        @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=5, enable_checkpointing=True, **kwargs)
        def pipe():
            jpegs, labels = fn.readers.file(file_root=folder, random_shuffle=True, name="Reader")
            images = fn.crop_mirror_normalize(fn.resize(fn.decoders.image(jpegs), size=[16, 16]), dtype=types.FLOAT,
                                              mean=[127.5] * 3, std=[64.0] * 3)
            sal = fmd.saliencymix(images, labels, num_classes=len(CLASSES))
            sage = fmd.sage_mix(sal.images, rand_pos=0.05)
            return sage.images, sal.boxes, sage.shifts, sal.targets

        p = pipe()
        p.build()
        return p

    pipe = make()
    batches(pipe, 1)
    checkpoint = pipe.checkpoint()
    expected = batches(pipe, 2)
    assert_same_batches(expected, batches(make(checkpoint=checkpoint), 2))


@pytest.mark.parametrize("chw_float", [False, True], ids=["HWC-uint8", "CHW-float"])
def test_chained_fastmix_operators_equal_the_pytorch_chain(folder, chw_float):
    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=9)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=folder, random_shuffle=True)
        x = fn.resize(fn.decoders.image(jpegs), size=[SIZE, SIZE])
        if chw_float:
            x = fn.crop_mirror_normalize(x, dtype=types.FLOAT, mean=[127.5] * 3, std=[64.0] * 3)
        a = fmd.mixup(x, per_sample=True)
        b = fmd.cutmix(a.images, per_sample=True)
        c = fmd.saliencymix(b.images, per_sample=True)
        d = fmd.cutout(c.images)
        return x, a.images, a.lam, a.perm, b.images, b.boxes, b.perm, c.images, c.boxes, c.perm, d.images, d.boxes

    p = pipe()
    p.build()
    outputs = p.run()
    layout = "CHW" if chw_float else "HWC"
    assert [o.layout() for o in (outputs[0], outputs[1], outputs[4], outputs[7], outputs[10])] == [layout] * 5
    x, a, lam, perm_a, b, boxes_b, perm_b, c, boxes_c, perm_c, d, boxes_d = (stacked(o) for o in outputs)

    def nchw(t):
        return t if chw_float else t.permute(0, 3, 1, 2)

    expected = fastmix.mixup(nchw(x), perm=perm_a, lam=lam).images
    assert torch.equal(nchw(a), expected)
    expected = fastmix.cutmix(expected, perm=perm_b, boxes=boxes_b).images
    assert torch.equal(nchw(b), expected)
    expected = fastmix.cutmix(expected, perm=perm_c, boxes=boxes_c).images  # SaliencyMix's paste
    assert torch.equal(nchw(c), expected)
    expected = fastmix.cutout(expected, boxes=boxes_d).images
    assert torch.equal(nchw(d), expected)
    assert not torch.equal(nchw(d), nchw(x))


def test_fastmix_operators_chain_inside_conditionals(folder):
    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=2, enable_conditionals=True)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=folder, random_shuffle=True)
        x = fn.resize(fn.decoders.image(jpegs), size=[SIZE, SIZE])
        if fn.random.coin_flip(probability=0.5):
            x = fn.flip(x, horizontal=1)
        mixed = fmd.cutout(fmd.cutmix(x).images).images
        return mixed, fn.crop_mirror_normalize(mixed, dtype=types.FLOAT)

    p = pipe()
    p.build()
    mixed, normalised = p.run()
    assert mixed.layout() == "HWC" and normalised.layout() == "CHW"


def test_layouts_are_read_off_the_graph():
    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None)
    def pipe():
        jpegs, _ = fn.readers.file(file_root="/nonexistent")
        decoded = fn.decoders.image(jpegs)
        chw = fn.crop_mirror_normalize(fn.resize(decoded, size=[8, 8]), dtype=types.FLOAT)
        found = {
            "decoded": infer_layout(decoded), "chw": infer_layout(chw),
            "hwc_cmn": infer_layout(fn.crop_mirror_normalize(decoded, output_layout="HWC")),
            "transposed": infer_layout(fn.transpose(decoded, perm=[2, 0, 1])),
            "relabelled": infer_layout(fn.reshape(decoded, layout="CHW")),
            "arithmetic": infer_layout(fn.cast(decoded, dtype=types.FLOAT) * 0.5 + 1.0),
            "source": infer_layout(fn.external_source(source=lambda: None, layout="HWC")),
            "unlabelled": infer_layout(fn.external_source(source=lambda: None)),
            "reader": infer_layout(jpegs),
        }
        assert found == {"decoded": "HWC", "chw": "CHW", "hwc_cmn": "HWC", "transposed": "CHW",
                         "relabelled": "CHW", "arithmetic": "HWC", "source": "HWC", "unlabelled": None,
                         "reader": None}
        return decoded

    pipe()  # the graph is built (and checked) here; nothing runs


def test_a_batch_lying_back_to_back_is_viewed_not_stacked():
    from fastmix.dali._batch import batch_tensor

    storage = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    view = batch_tensor(list(storage.unbind(0)))
    assert view.data_ptr() == storage.data_ptr() and torch.equal(view, storage)
    apart = [storage[0].clone(), storage[1].clone()]
    copy = batch_tensor(apart)
    assert torch.equal(copy, storage) and copy.data_ptr() not in {a.data_ptr() for a in apart}
    assert torch.equal(batch_tensor([storage[1], storage[0]]), storage.flip(0))  # out of order: stacked


def test_the_python_operators_see_dalis_cpu_batch_without_a_copy_and_one_torch_thread(folder):
    from fastmix.dali._batch import batch_tensor
    from fastmix.dali._bridge import call_torch

    seen = []

    def record(images):
        batch = batch_tensor(images)
        seen.append((batch.data_ptr() == images[0].data_ptr(), torch.get_num_threads()))
        return {"images": batch + 1}

    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=None, seed=0)
    def pipe():
        jpegs, _ = fn.readers.file(file_root=folder)
        x = fn.resize(fn.decoders.image(jpegs), size=[SIZE, SIZE])
        return x, call_torch(record, {"images": x}, ("images",), device="cpu")["images"]

    p = pipe()
    p.build()
    for _ in range(2):
        x, y = p.run()
        assert all(torch.equal(b, a + 1) for a, b in zip(samples(x), samples(y)))
    assert seen and all(viewed and threads == 1 for viewed, threads in seen)


def test_integer_reader_labels_without_num_classes_are_a_build_time_error(folder):
    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=0)
    def pipe():
        jpegs, labels = fn.readers.file(file_root=folder)
        return fmd.cutmix(fn.resize(fn.decoders.image(jpegs), size=[SIZE, SIZE]), labels).targets

    with pytest.raises(ValueError, match="fastmix.dali.cutmix: integer class labels need num_classes"):
        pipe()


# ------------------------------------------------------------------------------------------------
# SaliencyMix's compiled saliency kernel (numba_function) against the PyTorch oracle


def test_numba_saliency_kernel_equals_the_pytorch_oracle():
    """The per-image kernels DALI's numba_function calls (fastmix.backends.numba._kernels), on
    HWC and CHW samples, and the glue's peak finder."""
    from fastmix.backends.numba import _kernels
    from fastmix.backends.pytorch.fine_grained_saliency import fine_grained_saliency
    from fastmix.dali.numba_saliency import peak_finder

    peak = peak_finder()
    rng = np.random.default_rng(0)
    scale = torch.tensor(1 / 255, dtype=torch.float32)
    checked = 0
    for height, width in [(1, 1), (1, 5), (5, 1), (2, 2), (3, 7), (16, 12), (33, 40), (60, 130)]:
        yy, xx = np.mgrid[0:height, 0:width]
        images = {"random": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                  "smooth": np.stack([(yy * 7 + xx * 3) % 256, (xx * 5) % 256, (yy * 11) % 256], -1).astype(np.uint8),
                  "grey": rng.integers(0, 256, (height, width, 1), dtype=np.uint8)}
        for image in images.values():
            expected = fine_grained_saliency(torch.from_numpy(image).permute(2, 0, 1)[None])[0]
            for chw in (False, True):
                source = np.ascontiguousarray(image.transpose(2, 0, 1)) if chw else image
                out = np.full((height, width), -7, np.int32)  # poisoned
                (_kernels.grey_chw if chw else _kernels.grey_hwc)(source, out)
                _kernels.fine_grained_map(out)
                assert torch.equal(torch.from_numpy(out.astype(np.float32)) * scale, expected)
                assert peak(out) == divmod(int(expected.flatten().argmax()), width)
                checked += 1
    assert checked == 8 * 3 * 2


@pytest.mark.parametrize("chw, per_sample", [(False, False), (False, True), (True, True)])
def test_saliencymix_numba_and_python_give_the_same_batches(chw, per_sample):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (20, 28, 3), dtype=np.uint8) for _ in range(6)]
    labels = [np.array([i % 3], np.int32) for i in range(6)]

    def run_impl(impl):
        @pipeline_def(batch_size=6, num_threads=2, device_id=None, seed=3)
        def pipe():
            x = fn.external_source(source=lambda: images, batch=True, layout="HWC", dtype=types.UINT8)
            if chw:
                x = fn.transpose(x, perm=[2, 0, 1])
            lab = fn.external_source(source=lambda: labels, batch=True)
            mix = fmd.saliencymix(x, lab, num_classes=3, per_sample=per_sample, impl=impl)
            return x, mix.images, mix.lam, mix.perm, mix.boxes, mix.targets

        p = pipe()
        p.build()
        return [[stacked(o) for o in p.run()] for _ in range(2)], p.run()[1].layout()

    (numba_batches, numba_layout), (python_batches, python_layout) = run_impl("numba"), run_impl("python")
    assert numba_layout == python_layout == ("CHW" if chw else "HWC")
    assert_same_batches(numba_batches, python_batches)
    boxes = torch.cat([batch[4] for batch in numba_batches])
    assert ((boxes[:, 1] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 2])).any()  # something was pasted
    x, mixed, _, perm, boxes, _ = numba_batches[0]
    nchw = x if chw else x.permute(0, 3, 1, 2)
    expected = fastmix.cutmix(nchw, perm=perm, boxes=boxes).images
    assert torch.equal(mixed, expected if chw else expected.permute(0, 2, 3, 1))


def test_saliencymix_impl_is_checked():
    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=1)
    def pipe(impl, with_saliency=False):
        x = fn.external_source(source=lambda: None, batch=True, layout="HWC", dtype=types.UINT8)
        saliency = fn.external_source(source=lambda: None, batch=True) if with_saliency else None
        return fmd.saliencymix(x, saliency=saliency, impl=impl).images

    with pytest.raises(ValueError, match="fastmix.dali.saliencymix: impl must be one of"):
        pipe("dali")
    with pytest.raises(ValueError, match="impl='numba' needs model-free saliency"):
        pipe("numba", True)
    pipe("auto", True)  # a saliency input: the python function
