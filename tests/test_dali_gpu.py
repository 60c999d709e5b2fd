"""fastmix.dali GPU pipelines (device_id=0): the operators run fastmix's CUDA kernels on DALI's stream.

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
        return (x, mix.images, mix.lam, mix.perm, mix.targets, *params)

    pipe = pipe()
    pipe.build()
    return pipe


def assert_images_close(actual, expected):
    if expected.dtype == torch.uint8:  # the GPU kernels may round a .5 blend the other way
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
        assert_images_close(out, expected.images if float_chw else expected.images.permute(0, 2, 3, 1))
        labels = torch.tensor([int(label[0]) for label in LABELS])
        torch.testing.assert_close(stacked(targets, "cpu"), fastmix.mix_targets(labels, perm_t, lam_t, CLASSES))


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

    @pipeline_def(batch_size=BATCH, num_threads=2, device_id=0, seed=0)
    def pipe():
        x = fn.external_source(source=image_source(), batch=True, layout="HWC").gpu()
        return x, call_torch(record, {"images": x}, ("images",), device="gpu")["images"]

    p = pipe()
    p.build()
    for _ in range(ITERATIONS):
        x, y = p.run()
        assert all(torch.equal(b, a + 1) for a, b in zip(samples(x), samples(y)))
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
