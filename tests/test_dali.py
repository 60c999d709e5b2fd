"""fastmix.dali classification operators in CPU-only DALI pipelines (device_id=None).

Every operator's outputs are checked against fastmix's PyTorch operator called with the
parameters the pipeline reports (perm, lam, boxes, shifts, mass), and against mix_targets for
the soft targets. DALI is a test dependency: these tests fail, not skip, without it.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

import fastmix
import fastmix.dali as fmd
from fastmix.backends.pytorch.sage import all_shifts

BATCH, HEIGHT, WIDTH, CLASSES = 4, 12, 16, 5
MEAN, STD = [120.0, 110.0, 100.0], [60.0, 50.0, 70.0]


def hwc_images(seed=0, shapes=None):
    rng = np.random.default_rng(seed)
    shapes = shapes or [(HEIGHT, WIDTH, 3)] * BATCH
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


LABELS = [np.array([label], dtype=np.int32) for label in (0, 3, 1, 4)]


def as_torch(tensor_list):
    """A DALI TensorList -> one stacked torch tensor (uniform samples) or a list of tensors."""
    samples = [torch.from_numpy(np.array(tensor_list[i])) for i in range(len(tensor_list))]
    if len({tuple(s.shape) for s in samples}) == 1:
        return torch.stack(samples)
    return samples


def run(pipe, iterations=1):
    pipe.build()
    return [[as_torch(out) for out in pipe.run()] for _ in range(iterations)]


def nchw(pipeline_input, chw_float):
    """The operator's input batch, as returned by the pipeline, as a torch NCHW tensor."""
    return pipeline_input if chw_float else pipeline_input.permute(0, 3, 1, 2)


def source_images(images, chw_float):
    x = fn.external_source(source=lambda: images, batch=True, layout="HWC", dtype=types.UINT8)
    if chw_float:  # the usual DALI path to CHW float
        x = fn.crop_mirror_normalize(x, dtype=types.FLOAT, mean=MEAN, std=STD, output_layout="CHW")
    return x


def mix_pipeline(operator, images, *, chw_float=False, seed=11, with_saliency=None, **options):
    """A pipeline returning (input images, mixed images, lam, perm, targets, params...) of one operator."""

    @pipeline_def(batch_size=len(images), num_threads=1, device_id=None, seed=seed, prefetch_queue_depth=1)
    def pipe():
        x = source_images(images, chw_float)
        labels = fn.external_source(source=lambda: LABELS[:len(images)], batch=True)
        extra = {}
        if with_saliency is not None:
            extra["saliency"] = fn.external_source(source=lambda: with_saliency, batch=True)
        mix = operator(x, labels, num_classes=CLASSES, label_smoothing=0.1, **extra, **options)
        params = [node for node in (mix.boxes, mix.shifts, mix.mass) if node is not None]
        perm = mix.perm if mix.perm is not None else fn.cast(fn.zeros(dtype=types.INT32) - 1, dtype=types.INT64)
        return (x, mix.images, mix.lam, perm, mix.targets, *params)

    return pipe()


def to_output_layout(nchw, chw_float):
    return nchw if chw_float else nchw.permute(0, 2, 3, 1)


def check_targets(targets, perm, lam):
    labels = torch.tensor([int(label[0]) for label in LABELS])
    expected = fastmix.mix_targets(labels, perm, lam, CLASSES, 0.1)
    torch.testing.assert_close(targets, expected, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Import behaviour


def test_import_fastmix_does_not_import_dali():
    code = "import sys, fastmix; assert not any(m.startswith('nvidia.dali') for m in sys.modules), 'imported DALI'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_import_fastmix_dali_without_dali_names_the_package():
    code = ("import sys\nsys.modules['nvidia.dali'] = None\n"
            "try:\n    import fastmix.dali\nexcept ImportError as e:\n    print(e)\n"
            "else:\n    raise SystemExit('imported')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pip install nvidia-dali-cuda130" in proc.stdout


# ------------------------------------------------------------------------------------------------
# Each operator against the PyTorch path on the reported parameters


@pytest.mark.parametrize("chw_float, per_sample, impl", [
    (False, False, "dali"), (False, True, "dali"), (True, False, "dali"), (True, True, "dali"),
    (False, True, "numba"), (True, False, "numba")])  # numba_function compiles for seconds per pipeline
def test_mixup_matches_pytorch(chw_float, per_sample, impl):
    images = hwc_images()
    (out,) = run(mix_pipeline(fmd.mixup, images, chw_float=chw_float, per_sample=per_sample, alpha=0.4, impl=impl))
    x, mixed, lam, perm, targets = out
    assert lam.dtype == torch.float32 and perm.dtype == torch.int64 and sorted(perm.tolist()) == list(range(BATCH))
    assert (lam != lam[0]).any() == per_sample
    expected = fastmix.mixup(nchw(x, chw_float), perm=perm, lam=lam)
    assert torch.equal(mixed, to_output_layout(expected.images, chw_float))
    check_targets(targets, perm, lam)


@pytest.mark.parametrize("chw_float", [False, True], ids=["HWC-uint8", "CHW-float"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix_matches_pytorch(chw_float, per_sample):
    images = hwc_images(1)
    (out,) = run(mix_pipeline(fmd.cutmix, images, chw_float=chw_float, per_sample=per_sample))
    x, mixed, lam, perm, targets, boxes = out
    assert boxes.shape == (BATCH, 4) and boxes.dtype == torch.int64
    assert bool((boxes != boxes[0]).any()) == per_sample
    expected = fastmix.cutmix(nchw(x, chw_float), perm=perm, boxes=boxes)
    assert torch.equal(mixed, to_output_layout(expected.images, chw_float))
    assert torch.equal(lam, expected.lam)
    check_targets(targets, perm, lam)


@pytest.mark.parametrize("chw_float", [False, True], ids=["HWC-uint8", "CHW-float"])
def test_cutout_matches_pytorch(chw_float):
    images = hwc_images(2)
    (out,) = run(mix_pipeline(fmd.cutout, images, chw_float=chw_float, length=6, value=7.0))
    x, erased, lam, perm, targets, boxes = out
    assert torch.equal(lam, torch.ones(BATCH)) and (perm == -1).all()  # CutOut has no perm output
    assert torch.equal(boxes[:, 1] - boxes[:, 0] <= 6, torch.ones(BATCH, dtype=torch.bool))
    assert (boxes[:, 1] > boxes[:, 0]).any() and (boxes[:, 3] > boxes[:, 2]).any()
    expected = fastmix.cutout(nchw(x, chw_float), boxes=boxes, value=7.0)
    assert not torch.equal(expected.images, nchw(x, chw_float))
    assert torch.equal(erased, to_output_layout(expected.images, chw_float))
    check_targets(targets, torch.arange(BATCH), lam)


def test_cutout_accepts_images_of_different_sizes():
    images = hwc_images(3, shapes=[(12, 16, 3), (10, 9, 3), (14, 12, 3), (8, 8, 3)])
    (out,) = run(mix_pipeline(fmd.cutout, images, length=4))
    x, erased, lam, perm, targets, boxes = out
    assert isinstance(erased, list) and [tuple(e.shape) for e in erased] == [a.shape for a in images]
    for image, result, box in zip(images, erased, boxes):
        height, width = image.shape[:2]
        assert 0 <= box[0] <= box[1] <= height and 0 <= box[2] <= box[3] <= width
        chw = torch.from_numpy(image).permute(2, 0, 1)[None]
        expected = fastmix.cutout(chw, boxes=box[None]).images[0].permute(1, 2, 0)
        assert torch.equal(result, expected)
    check_targets(targets, torch.arange(BATCH), lam)


@pytest.mark.parametrize("chw_float", [False, True], ids=["HWC-uint8", "CHW-float"])
def test_saliencymix_pastes_the_box_around_the_partners_saliency_peak(chw_float):
    images = hwc_images(4)
    (out,) = run(mix_pipeline(fmd.saliencymix, images, chw_float=chw_float, alpha=1.0))
    x, mixed, lam, perm, targets, boxes = out
    x = nchw(x, chw_float)
    expected = fastmix.cutmix(x, perm=perm, boxes=boxes)  # the same box paste, on the reported boxes
    assert torch.equal(mixed, to_output_layout(expected.images, chw_float))
    assert torch.equal(lam, expected.lam)
    saliency = fastmix.image_saliency(x[perm[:1]], value_range=None)[0]
    row, col = divmod(int(saliency.flatten().argmax()), WIDTH)
    y1, y2, x1, x2 = boxes[0].tolist()
    assert (y1 <= row <= y2 and x1 <= col <= x2) and (boxes == boxes[0]).all()
    check_targets(targets, perm, lam)


def test_saliencymix_uses_a_saliency_input():
    images = hwc_images(5)
    peaks = [(6, 8), (5, 9), (7, 7), (6, 6)]
    maps = []
    for row, col in peaks:
        m = np.zeros((HEIGHT, WIDTH, 1), dtype=np.float32)
        m[row, col] = 1.0
        maps.append(m)
    (out,) = run(mix_pipeline(fmd.saliencymix, images, per_sample=True, alpha=8.0, with_saliency=maps))
    x, mixed, lam, perm, _, boxes = out
    for i in range(BATCH):  # each box is centred on the peak of its partner's map (unless clipped)
        row, col = peaks[int(perm[i])]
        y1, y2, x1, x2 = boxes[i].tolist()
        assert y1 <= row < y2 and x1 <= col < x2
        if 0 < y1 and y2 < HEIGHT:
            assert (y1 + y2) / 2 == row
        if 0 < x1 and x2 < WIDTH:
            assert (x1 + x2) / 2 == col
    expected = fastmix.cutmix(nchw(x, False), perm=perm, boxes=boxes)
    assert torch.equal(mixed, to_output_layout(expected.images, False))


@pytest.mark.parametrize("external_saliency", [False, True], ids=["model-free", "saliency-input"])
def test_sage_mix_matches_pytorch(external_saliency):
    images = hwc_images(6)
    maps = None
    if external_saliency:
        maps = [np.random.default_rng(i).random((HEIGHT, WIDTH)).astype(np.float32) for i in range(BATCH)]
    (out,) = run(mix_pipeline(fmd.sage_mix, images, chw_float=True, with_saliency=maps, rand_pos=0.05,
                              per_sample_mass=True))
    x, mixed, lam, perm, targets, shifts, mass = out
    assert shifts.shape == (BATCH, 2) and mass.shape == (BATCH,)
    saliency = torch.from_numpy(np.stack(maps)) if external_saliency else fastmix.image_saliency(x, None)
    expected = fastmix.sage_mix(x, saliency=saliency, perm=perm, mass=mass, shifts=shifts[:, None, :])
    torch.testing.assert_close(mixed, expected.images, rtol=0, atol=1e-6)
    torch.testing.assert_close(lam, expected.lam, rtol=0, atol=1e-7)
    # The chosen shift is the best one among all shifts the pipeline could have drawn.
    exhaustive = fastmix.sage_mix(x, saliency=saliency, perm=perm, mass=mass, search="exhaustive")
    best = exhaustive.extras["scores"].max(dim=1).values
    chosen = fastmix.sage_mix(x, saliency=saliency, perm=perm, mass=mass, shifts=shifts[:, None, :])
    assert (chosen.extras["scores"][:, 0] <= best + 1e-6).all()
    check_targets(targets, perm, lam)


def test_sage_mix_exhaustive_search_and_uint8_error():
    images = hwc_images(7)
    (out,) = run(mix_pipeline(fmd.sage_mix, images, chw_float=True, search="exhaustive", kernel_size=1))
    x, mixed, lam, perm, _, shifts, mass = out
    expected = fastmix.sage_mix(x, saliency=fastmix.image_saliency(x, None), perm=perm, mass=mass, kernel_size=1,
                                shifts=all_shifts(HEIGHT, WIDTH))
    assert torch.equal(shifts, expected.shifts)
    torch.testing.assert_close(mixed, expected.images, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="needs float images"):
        run(mix_pipeline(fmd.sage_mix, images, chw_float=False))


# ------------------------------------------------------------------------------------------------
# Seeding, layouts, errors, iterator, conditionals


def test_same_seed_same_batches_and_other_seed_other_batches():
    images = hwc_images(8)
    first = run(mix_pipeline(fmd.cutmix, images, seed=5, per_sample=True), iterations=2)
    again = run(mix_pipeline(fmd.cutmix, images, seed=5, per_sample=True), iterations=2)
    other = run(mix_pipeline(fmd.cutmix, images, seed=6, per_sample=True), iterations=2)
    for a, b in zip(first, again):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(first[0][5], first[1][5])  # the boxes change from batch to batch
    assert not all(torch.equal(u, v) for u, v in zip(first[0], other[0]))


def test_no_fixed_points_gives_a_derangement():
    (out,) = run(mix_pipeline(fmd.mixup, hwc_images(9), no_fixed_points=True, impl="dali"))
    perm = out[3]
    assert (perm != torch.arange(BATCH)).all()


@pytest.mark.parametrize("name, chw_float", [(name, chw) for name in ("mixup", "cutmix", "cutout", "saliencymix")
                                              for chw in (False, True)] + [("sage_mix", True)])
def test_every_images_output_keeps_the_layout(name, chw_float):  # SAGE mixes float images only

    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=1)
    def pipe():
        x = source_images(hwc_images(), chw_float)
        mixed = getattr(fmd, name)(x).images
        # a DALI operator that needs the layout consumes the output directly
        return mixed, fn.crop(mixed, crop=[4, 4])

    out, cropped = pipe_outputs(pipe())
    expected_layout = "CHW" if chw_float else "HWC"
    assert out.layout() == cropped.layout() == expected_layout
    assert np.array(out[0]).dtype == (np.float32 if chw_float else np.uint8)
    assert np.array(cropped[0]).shape == ((3, 4, 4) if chw_float else (4, 4, 3))


def pipe_outputs(pipe):
    pipe.build()
    return pipe.run()


def test_layout_argument_labels_images_the_graph_does_not_and_is_checked():
    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=1)
    def unlabelled(layout):
        x = fn.external_source(source=lambda: hwc_images(), batch=True)  # no layout
        mix = fmd.saliencymix(x, layout=layout)
        return fmd.cutmix(mix.images).images  # the declared layout travels on

    (out,) = pipe_outputs(unlabelled("HWC"))
    assert out.layout() == "HWC"
    with pytest.raises(ValueError, match=r"fastmix.dali.saliencymix: layout must be one of \('HWC', 'CHW'\)"):
        unlabelled("NCHW")

    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=1)
    def contradicting():
        return fmd.cutout(source_images(hwc_images(), True), layout="HWC").images

    with pytest.raises(ValueError, match="fastmix.dali.cutout: layout='HWC' but the images were produced with layout 'CHW'"):
        contradicting()


def test_the_python_operators_check_the_declared_layout_at_run_time():
    from fastmix.dali.classification import _images

    samples = [torch.from_numpy(a) for a in hwc_images()]
    layout_bytes = [torch.tensor(list(b"HWC"), dtype=torch.uint8)] * BATCH
    assert _images(samples, layout_bytes, "HWC", "op").nchw.shape == (BATCH, 3, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="op: the graph gave the images layout 'CHW' but they have 'HWC'"):
        _images(samples, layout_bytes, "CHW", "op")


@pytest.mark.parametrize("layout, message", [("", "cannot tell the layout of the images"),
                                             ("WHC", "supports images with layout HWC or CHW")])
@pytest.mark.parametrize("name", ["cutmix", "cutout", "saliencymix", "sage_mix"])
def test_missing_or_unsupported_layout_is_a_build_time_error_naming_the_operator(layout, message, name):
    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=1)
    def pipe():
        x = fn.external_source(source=lambda: hwc_images(), batch=True, layout=layout)
        return getattr(fmd, name)(x).images

    with pytest.raises(ValueError, match=f"fastmix.dali.{name}.*{message}"):
        pipe()  # raised while the graph is built, before the pipeline runs


def test_images_of_different_sizes_are_a_clear_error_where_samples_are_mixed():
    images = hwc_images(shapes=[(12, 16, 3), (12, 16, 3), (10, 16, 3), (12, 16, 3)])
    # DALI's arithmetic raises; its message shows the fastmix call that built it
    with pytest.raises(RuntimeError, match=r"(?s)in mixup.*Can't broadcast shapes"):
        run(mix_pipeline(fmd.mixup, images, impl="dali"))
    with pytest.raises(RuntimeError, match=r"(?s)in mixup.*uniform_guard.*reshape"):
        run(mix_pipeline(fmd.mixup, images, impl="numba"))
    with pytest.raises(RuntimeError, match=r"(?s)in saliencymix.*uniform_guard.*reshape"):
        run(mix_pipeline(fmd.saliencymix, images, impl="numba"))
    with pytest.raises(RuntimeError, match=r"every image must have the same shape; this batch has shapes"):
        run(mix_pipeline(fmd.saliencymix, images, impl="python"))


def test_soft_label_inputs():
    soft = [np.eye(CLASSES, dtype=np.float32)[i] * 0.8 + 0.04 for i in (1, 2, 3, 0)]

    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=3)
    def pipe():
        x = source_images(hwc_images(), False)
        labels = fn.external_source(source=lambda: soft, batch=True)
        mix = fmd.mixup(x, labels, per_sample=True, impl="dali")
        return mix.targets, mix.lam, mix.perm

    ((targets, lam, perm),) = run(pipe())
    torch.testing.assert_close(targets, fastmix.mix_targets(torch.from_numpy(np.stack(soft)), perm, lam), rtol=0,
                               atol=1e-6)


def test_generic_iterator_and_conditionals():
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    images = hwc_images(10)

    def two_batches():  # a finite source: the iterator stops after two batches
        for _ in range(2):
            yield images

    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=4, enable_conditionals=True)
    def pipe():
        x = fn.external_source(source=two_batches, batch=True, layout="HWC")
        labels = fn.external_source(source=lambda: LABELS, batch=True)
        if fn.random.coin_flip(probability=0.5):  # a per-sample DALI conditional before mixing
            x = fn.flip(x, horizontal=1)
        mix = fmd.cutmix(x, labels, num_classes=CLASSES)
        return mix.images, mix.targets, mix.lam

    iterator = DALIGenericIterator([pipe()], ["images", "targets", "lam"])
    batches = list(iterator)
    assert len(batches) == 2
    batch = batches[0][0]
    assert batch["images"].shape == (BATCH, HEIGHT, WIDTH, 3) and batch["images"].dtype == torch.uint8
    assert batch["targets"].shape == (BATCH, CLASSES) and batch["targets"].dtype == torch.float32
    torch.testing.assert_close(batch["targets"].sum(1), torch.ones(BATCH))


def test_inputs_must_be_dali_nodes():
    with pytest.raises(TypeError, match="DataNode"):
        fmd.mixup(torch.zeros(2, 3, 4, 4))


def test_mixup_impl_is_checked_and_auto_falls_back_to_dali_operators():
    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=1)
    def pipe(impl):
        x = fn.external_source(source=lambda: hwc_images(), batch=True, layout="HWC")  # dtype not given
        return fmd.mixup(x, impl=impl).images

    with pytest.raises(ValueError, match="fastmix.dali.mixup: impl must be one of"):
        pipe("torch")
    with pytest.raises(ValueError, match="impl='numba' needs CPU images of a dtype the graph tells"):
        pipe("numba")
    (out,) = pipe_outputs(pipe("auto"))  # the dtype is unknown: DALI operators
    assert out.layout() == "HWC" and np.array(out[0]).dtype == np.uint8


def test_fastmix_disable_numba_turns_the_dali_numba_kernels_off(monkeypatch):
    from fastmix.backends import numba as numba_backend
    from fastmix.dali import numba_ops

    @pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, seed=1)
    def pipe(impl):
        x = fn.external_source(source=lambda: hwc_images(), batch=True, layout="HWC", dtype=types.UINT8)
        return fmd.mixup(x, impl=impl).images

    monkeypatch.setenv("FASTMIX_DISABLE_NUMBA", "1")
    numba_backend.available.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"FASTMIX_DISABLE_NUMBA unset \(available: False\)"):
            pipe("numba")
        p = pipe("auto")  # DALI operators: the pipeline serializes (a numba_function would not)
        p.build()
        assert p.serialize()
    finally:
        monkeypatch.delenv("FASTMIX_DISABLE_NUMBA")
        numba_backend.available.cache_clear()
    assert numba_backend.available() == numba_ops.available()


def test_sage_mix_above_64_pixels_searches_coarse_to_fine_without_a_generator():
    images = hwc_images(12, shapes=[(72, 80, 3)] * BATCH)
    (out,) = run(mix_pipeline(fmd.sage_mix, images, chw_float=True, per_sample_mass=True))
    x, mixed, lam, perm, targets, shifts, mass = out
    expected = fastmix.sage_mix(x, saliency=fastmix.image_saliency(x, None), perm=perm, mass=mass,
                                search="coarse_to_fine")
    assert expected.extras["search"] == "coarse_to_fine"
    assert torch.equal(shifts, expected.shifts)
    torch.testing.assert_close(mixed, expected.images, rtol=0, atol=1e-6)
    assert not torch.equal(mixed, x)
