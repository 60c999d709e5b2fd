"""fastmix.dali GPU pipelines (device_id=0): Mixup, CutMix and CutOut as DALI's GPU operators,
SaliencyMix, SAGE and Copy-Paste as fastmix's CUDA kernels on DALI's stream.

Skipped, with the reason shown, without a CUDA device (the gpu marker, see conftest.py) or
without NVIDIA DALI. Each GPU pipeline's images are checked against fastmix's operator on CUDA
tensors with the parameters the pipeline reports, over several batches (a kernel launched on
the wrong stream would read unfinished inputs or be overwritten before DALI's copy).
"""
import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install nvidia-dali-cuda130)")

import nvidia.dali.fn as fn  # noqa: E402
import nvidia.dali.types as types  # noqa: E402
from nvidia.dali import pipeline_def  # noqa: E402
from nvidia.dali.ops import PythonFunction  # noqa: E402

import fastmix  # noqa: E402
import fastmix.dali as fmd  # noqa: E402
from fastmix.copy_paste import InstanceBatch, copy_paste  # noqa: E402
from fastmix.dali._bridge import call_torch  # noqa: E402

pytestmark = pytest.mark.gpu

BATCH, HEIGHT, WIDTH, CLASSES, ITERATIONS = 8, 32, 48, 10, 3
MEAN, STD = [120.0, 110.0, 100.0], [60.0, 50.0, 70.0]


def image_source(seed=0):
    rng = np.random.default_rng(seed)

    def next_batch():
        return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(BATCH)]

    return next_batch


LABELS = [np.array([i % CLASSES], dtype=np.int32) for i in range(BATCH)]


def samples(tensor_list):
    if hasattr(tensor_list, "as_cpu"):
        tensor_list = tensor_list.as_cpu()
    return [torch.from_numpy(np.array(tensor_list[i])) for i in range(len(tensor_list))]


def stacked(tensor_list, device="cuda"):
    return torch.stack(samples(tensor_list)).to(device)


def gpu_pipeline(operator, *, float_chw=False, seed=21, **options):
    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=0, seed=seed)
    def pipe():
        x = fn.external_source(source=image_source(seed), batch=True, layout="HWC").gpu()
        if float_chw:
            x = fn.crop_mirror_normalize(x, dtype=types.FLOAT, mean=MEAN, std=STD, output_layout="CHW")
        labels = fn.external_source(source=lambda: LABELS, batch=True)
        mix = operator(x, labels, num_classes=CLASSES, **options)
        params = [node for node in (mix.boxes, mix.shifts, mix.mass) if node is not None]
        perm = mix.perm if mix.perm is not None else fn.cast(fn.zeros(dtype=types.INT32) - 1, dtype=types.INT64)
        return (x, mix.images, mix.lam, perm, mix.targets, *params)

    pipe = pipe()
    pipe.build()
    return pipe


def assert_images_close(actual, expected):
    if expected.dtype == torch.uint8:  # GPU code may fuse a multiply-add and round a .5 blend the other way
        assert (actual.int() - expected.int()).abs().max() <= 1
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


CASES = {
    "mixup": (fmd.mixup, False, {"per_sample": True}),
    "cutmix": (fmd.cutmix, False, {"per_sample": True}),
    "cutout": (fmd.cutout, False, {"length": 10}),
    "saliencymix": (fmd.saliencymix, False, {"per_sample": True}),
    "sage_mix": (fmd.sage_mix, True, {"rand_pos": 0.02}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gpu_pipeline_matches_fastmix_on_cuda(name):
    operator, float_chw, options = CASES[name]
    pipe = gpu_pipeline(operator, float_chw=float_chw, **options)
    for _ in range(ITERATIONS):
        x, mixed, lam, perm, targets, *params = pipe.run()
        assert isinstance(mixed, type(x))  # the outputs stay on the GPU (TensorListGPU)
        x_t = stacked(x)
        nchw = x_t if float_chw else x_t.permute(0, 3, 1, 2)
        lam_t, perm_t = stacked(lam, "cpu"), stacked(perm, "cpu")
        assert mixed.layout() == ("CHW" if float_chw else "HWC")
        if name == "cutout":
            assert (perm_t == -1).all()  # CutOut has no perm output
            perm_t = torch.arange(BATCH)
        if name == "mixup":
            expected = fastmix.mixup(nchw, perm=perm_t, lam=lam_t)
        elif name in ("cutmix", "saliencymix"):
            expected = fastmix.cutmix(nchw, perm=perm_t, boxes=stacked(params[0], "cpu"))
        elif name == "cutout":
            expected = fastmix.cutout(nchw, boxes=stacked(params[0], "cpu"))
        else:
            shifts, mass = stacked(params[0], "cpu"), stacked(params[1], "cpu")
            expected = fastmix.sage_mix(nchw, saliency=fastmix.image_saliency(nchw, None), perm=perm_t, mass=mass,
                                        shifts=shifts[:, None, :])
        out = stacked(mixed)
        want = expected.images if float_chw else expected.images.permute(0, 2, 3, 1)
        if name in ("cutmix", "cutout", "saliencymix"):  # copies and fills: exact
            assert torch.equal(out, want)
        else:
            assert_images_close(out, want)
        labels = torch.tensor([int(label[0]) for label in LABELS])
        torch.testing.assert_close(stacked(targets, "cpu"), fastmix.mix_targets(labels, perm_t, lam_t, CLASSES))


def test_gpu_pipeline_of_dali_operators_serializes_and_gives_the_same_batches():
    from nvidia.dali.pipeline import Pipeline

    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=0, seed=3)
    def pipe():
        noise = fn.random.uniform(range=[0.0, 255.0], shape=[HEIGHT, WIDTH, 3])  # serializable images
        x = fn.reshape(fn.cast(noise, dtype=types.UINT8), layout="HWC").gpu()
        mixed = fmd.cutout(fmd.cutmix(fmd.mixup(x).images, per_sample=True).images)
        return mixed.images, mixed.boxes

    p = pipe()
    p.build()
    serialized = p.serialize()  # no python function in the graph
    clone = Pipeline.deserialize(serialized_pipeline=serialized, batch_size=BATCH, num_threads=2, device_id=0)
    clone.build()
    for _ in range(ITERATIONS):
        for a, b in zip(p.run(), clone.run()):
            assert all(torch.equal(u, v) for u, v in zip(samples(a), samples(b)))


def run_without_a_sync(pipe):
    """A few batches under torch's sync debug mode "error": a host synchronisation raises."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(ITERATIONS):
            pipe.run()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_saliencymix_on_the_gpu_never_waits_for_the_device():
    """perm and lam are consumed on the device: a host synchronisation in the batch function
    (a .cpu(), .item() or bool() of a CUDA tensor) raises under torch's sync debug mode."""
    run_without_a_sync(gpu_pipeline(fmd.saliencymix, per_sample=True))


@pytest.mark.parametrize("search", ["exhaustive", "random"])
def test_sage_mix_on_the_gpu_never_waits_for_the_device(search):
    """perm and the mass are consumed on the device (a device-side assert checks perm); the random
    search's candidate shifts are drawn by DALI on the CPU and reach the GPU operator as an input,
    so no seed is read on the host either: the batch function never synchronises."""
    pipe = gpu_pipeline(fmd.sage_mix, float_chw=True, search=search, rand_pos=0.02)
    pipe.run()  # warm-up: kernels compile, pinned buffers are allocated
    run_without_a_sync(pipe)


def test_sage_mix_on_the_gpu_draws_what_the_cpu_numba_path_draws():
    """The same seed gives a GPU pipeline (python function on DALI's stream) and a CPU pipeline
    (compiled numba_function) the same perm, mass and candidate shifts, so the same chosen shifts;
    the images agree to float rounding."""
    options = {"rand_pos": 0.02, "per_sample_shifts": True, "per_sample_mass": True}
    rng = np.random.default_rng(4)
    batches = [[rng.normal(size=(3, HEIGHT, WIDTH)).astype(np.float32) for _ in range(BATCH)]
               for _ in range(ITERATIONS)]

    def build(device_id, impl):
        @pipeline_def(batch_size=BATCH, num_threads=2, device_id=device_id, seed=21)
        def pipe():
            x = fn.external_source(source=batches, cycle=True, batch=True, layout="CHW", dtype=types.FLOAT)
            mix = fmd.sage_mix(x.gpu() if device_id is not None else x, impl=impl, **options)
            return mix.images, mix.perm, mix.shifts, mix.mass

        p = pipe()
        p.build()
        return p

    on_gpu, on_cpu = build(0, "python"), build(None, "numba")
    for _ in range(ITERATIONS):
        gpu_out, cpu_out = on_gpu.run(), on_cpu.run()
        for index in (1, 2, 3):  # perm, shifts, mass
            assert torch.equal(stacked(gpu_out[index], "cpu"), stacked(cpu_out[index], "cpu"))
        assert_images_close(stacked(gpu_out[0], "cpu"), stacked(cpu_out[0], "cpu"))


def run_plus_one(record):
    """A GPU pipeline whose python function `record` returns images + 1, checked over a few batches."""
    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=0, seed=0)
    def pipe():
        x = fn.external_source(source=image_source(), batch=True, layout="HWC").gpu()
        return x, call_torch(record, {"images": x}, ("images",), device="gpu")["images"]

    p = pipe()
    p.build()
    for _ in range(ITERATIONS):
        x, y = p.run()
        assert all(torch.equal(b, a + 1) for a, b in zip(samples(x), samples(y)))


def test_the_gpu_batch_reaches_the_kernels_without_a_stack_copy():
    from fastmix.dali._batch import batch_tensor

    seen = []

    def record(images):
        batch = batch_tensor(images)
        seen.append(batch.data_ptr() == images[0].data_ptr() and batch.shape[0] == len(images))
        return {"images": batch + 1}

    run_plus_one(record)
    assert seen and all(seen)  # DALI's GPU batches are contiguous: viewed, not stacked


def test_gpu_pipeline_is_reproducible_from_its_seed():
    first, again = gpu_pipeline(fmd.cutmix, per_sample=True), gpu_pipeline(fmd.cutmix, per_sample=True)
    for _ in range(2):
        for a, b in zip(first.run(), again.run()):
            assert all(torch.equal(u, v) for u, v in zip(samples(a), samples(b)))


def test_the_batch_function_runs_on_dalis_stream_and_keeps_the_data_on_the_gpu():
    seen = []

    def record(images):
        seen.append((torch.cuda.current_stream().cuda_stream, PythonFunction.current_stream().ptr,
                     all(t.is_cuda for t in images)))
        return {"images": [t + 1 for t in images]}

    run_plus_one(record)
    assert seen and all(torch_stream == dali_stream != 0 and on_gpu for torch_stream, dali_stream, on_gpu in seen)


def test_gpu_copy_paste_matches_fastmix_on_cuda():
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(BATCH):
        m = np.zeros((2, HEIGHT, WIDTH), np.uint8)
        m[0, 2:12, 3:15], m[1, 15:30, 20:40] = 1, 1
        masks.append(m)
    labels = [np.array([1, 2], np.int32)] * BATCH
    images = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(BATCH)]

    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=0, seed=5)
    def pipe():
        x = fn.external_source(source=lambda: images, batch=True, layout="HWC").gpu()
        m = fn.external_source(source=lambda: masks, batch=True).gpu()
        lab = fn.external_source(source=lambda: labels, batch=True)
        out = fmd.copy_paste(x, m, lab, scale_range=(0.5, 1.5))
        return out.images, out.masks, out.perm, out.seed

    p = pipe()
    p.build()
    out_images, out_masks, perm, seed = p.run()
    batch = InstanceBatch.from_lists([torch.from_numpy(a).permute(2, 0, 1).cuda() for a in images],
                                     [torch.from_numpy(m).cuda() for m in masks], None,
                                     [torch.from_numpy(lab).long().cuda() for lab in labels])
    expected = copy_paste(batch, perm=stacked(perm, "cpu"),
                          generator=torch.Generator().manual_seed(int(stacked(seed, "cpu")[0])),
                          scale_range=(0.5, 1.5))
    assert_images_close(stacked(out_images), expected.images.permute(0, 2, 3, 1))
    for got, want in zip(samples(out_masks), expected.masks):
        assert torch.equal(got, want.cpu())
