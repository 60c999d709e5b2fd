"""CuPy kernels on a CUDA device against the PyTorch path, on injected parameters.

Masks, boxes, areas and labels must be identical; images agree to float rounding (the kernels
use the oracle's operation order, so they are expected to be equal, but only rounding-level
agreement is required). Skipped, visibly, without CUDA (tests/conftest.py).
"""
import numpy as np
import pytest
import torch
from torch.library import opcheck

from fastmix.ops import copy_paste as ops
from fastmix.backends.pytorch import copy_paste as K
from fastmix.backends.pytorch.fine_grained_saliency import fine_grained_saliency
from fastmix.copy_paste import InstanceBatch, copy_paste, draw_copy_paste_params

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def instance_batch(batch=4, size=(96, 80), instances=6, seed=0, dtype=torch.uint8, ragged=True):
    gen = torch.Generator().manual_seed(seed)
    images, masks, labels = [], [], []
    for i in range(batch):
        h, w = (size[0] - 7 * i, size[1] + 5 * i) if ragged else size
        if dtype == torch.uint8:
            images.append(torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8))
        else:
            images.append(torch.rand((3, h, w), generator=gen).to(dtype))
        count = (instances + i) % (instances + 1)  # includes an image with no objects
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        m = torch.zeros(count, h, w, dtype=torch.bool)
        for n in range(count):
            cy, cx = torch.randint(0, h, (1,), generator=gen).item(), torch.randint(0, w, (1,), generator=gen).item()
            ry, rx = torch.randint(1, h // 3, (2,), generator=gen).tolist()
            m[n] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        masks.append(m)
        labels.append(torch.randint(0, 80, (count,), generator=gen))
    return InstanceBatch.from_lists([x.to(CUDA) for x in images], [x.to(CUDA) for x in masks],
                                    labels=[x.to(CUDA) for x in labels])


def assert_same_result(cupy_out, torch_out, image_atol):
    for name in ("masks", "boxes", "labels"):
        for a, b in zip(getattr(cupy_out, name), getattr(torch_out, name)):
            assert torch.equal(a, b), name
    assert torch.equal(cupy_out.kept, torch_out.kept) and torch.equal(cupy_out.pasted, torch_out.pasted)
    diff = (cupy_out.images.double() - torch_out.images.double()).abs().max().item()
    assert diff <= image_atol, diff


@pytest.mark.parametrize("blend", ["hard", "gaussian"])
@pytest.mark.parametrize("seed", range(3))
def test_copy_paste_cupy_equals_pytorch_uint8(blend, seed):
    batch = instance_batch(seed=seed)
    params = draw_copy_paste_params(batch.counts, batch.image_sizes, (72, 88), max_instances=batch.max_instances,
                                    generator=torch.Generator().manual_seed(seed))
    options = dict(output_size=(72, 88), params=params, blend=blend, mask_occluded_thr=50)
    assert_same_result(copy_paste(batch, backend="cupy", **options), copy_paste(batch, backend="pytorch", **options),
                       image_atol=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_copy_paste_cupy_equals_pytorch_float(dtype):
    batch = instance_batch(dtype=dtype, ragged=False, seed=4)
    first = copy_paste(batch, backend="cupy", generator=torch.Generator().manual_seed(1))
    again = copy_paste(batch, backend="pytorch", params=first.params)
    assert_same_result(first, again, image_atol=1e-5 if dtype == torch.float32 else 1e-3)


def test_copy_paste_on_cpu_and_gpu_agree():
    batch = instance_batch(seed=5)
    cpu = InstanceBatch(batch.images.cpu(), batch.masks.cpu(), batch.boxes.cpu(), batch.labels.cpu(), batch.counts,
                        batch.image_sizes)
    gpu_out = copy_paste(batch, output_size=64, generator=torch.Generator().manual_seed(2))
    cpu_out = copy_paste(cpu, output_size=64, params=gpu_out.params)
    for name in ("masks", "boxes", "labels"):
        assert all(torch.equal(a.cpu(), b) for a, b in zip(getattr(gpu_out, name), getattr(cpu_out, name)))
    assert (gpu_out.images.cpu().int() - cpu_out.images.int()).abs().max() <= 1


def test_each_kernel_equals_its_oracle_on_a_side_stream():
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(3, 3, 50, 61, generator=gen) * 255).to(CUDA)
    masks = (torch.rand(3, 5, 50, 61, generator=gen) > 0.8).to(CUDA)
    views = K.pack_views(torch.tensor([0, 2, 1, 1]), torch.tensor([[50, 61], [41, 61], [50, 33]]),
                         torch.tensor([[100, 122], [20, 30], [50, 33], [77, 40]]),
                         torch.tensor([[30, 2], [0, 0], [0, 0], [10, 0]]), torch.tensor([True, False, True, False]))
    views = views.to(CUDA)
    active = (torch.rand(4, 5, generator=gen) > 0.3).to(CUDA)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got_images = ops.lsj_resample_images(images, views, 45, 52)
        got_masks = ops.lsj_resample_masks(masks, views, active, 45, 52)
        alpha, updated = ops.occlusion_update(got_masks[:2], got_masks[2:])
        boxes, areas = ops.instance_boxes_areas(got_masks)
        blended = ops.copy_paste_blend(got_images[:2], got_images[2:], alpha.float())
    stream.synchronize()
    torch.testing.assert_close(got_images, K.lsj_resample_images(images, views, 45, 52), rtol=0, atol=1e-4)
    assert torch.equal(got_masks, K.lsj_resample_masks(masks, views, active, 45, 52))
    want_alpha, want_updated = K.occlusion_update(got_masks[:2], got_masks[2:])
    assert torch.equal(alpha, want_alpha) and torch.equal(updated, want_updated)
    want_boxes, want_areas = K.instance_boxes_areas(got_masks)
    assert torch.equal(boxes, want_boxes) and torch.equal(areas, want_areas)
    torch.testing.assert_close(blended, K.copy_paste_blend(got_images[:2], got_images[2:], alpha.float()),
                               rtol=0, atol=1e-4)


def test_kernels_do_not_synchronise_with_the_host():
    batch = instance_batch(seed=6, ragged=False)
    views = K.pack_views(torch.arange(4), batch.image_sizes, batch.image_sizes, torch.zeros(4, 2),
                         torch.zeros(4, dtype=torch.bool)).to(CUDA)
    active = batch.active()
    ops.instance_boxes_areas(batch.masks)  # compile and load the module outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        masks = ops.lsj_resample_masks(batch.masks, views, active, 64, 64)
        ops.instance_boxes_areas(masks)
        ops.occlusion_update(masks[:2], masks[2:])
        ops.lsj_resample_images(batch.images, views, 64, 64)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_large_masks_boxes_cover_many_row_bands():
    masks = torch.zeros(2, 3, 1000, 1500, dtype=torch.bool, device=CUDA)
    masks[0, 0, 0, 0] = True
    masks[0, 1, 999, 1499] = True
    masks[1, 2, 100:900:7, 3:1400:11] = True
    boxes, areas = ops.instance_boxes_areas(masks)
    want_boxes, want_areas = K.instance_boxes_areas(masks)
    assert torch.equal(boxes, want_boxes) and torch.equal(areas, want_areas)


@pytest.mark.parametrize("shape", [(4, 3, 64, 80), (2, 1, 129, 257), (1, 3, 1, 1), (3, 3, 300, 200)])
def test_fine_grained_saliency_kernel_is_bit_exact(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    images = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    got = ops.fine_grained_saliency(images.to(CUDA))
    assert got.device.type == "cuda"
    assert torch.equal(got.cpu(), fine_grained_saliency(images))


def test_fine_grained_saliency_kernel_equals_opencv_on_a_photo():
    cv2 = pytest.importorskip("cv2", reason="opencv-contrib-python-headless provides the reference saliency")
    from skimage import data

    rgb = data.astronaut()
    got = ops.fine_grained_saliency(torch.from_numpy(rgb).permute(2, 0, 1)[None].to(CUDA))
    _, opencv = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert np.array_equal(got[0].cpu().numpy(), opencv)


def test_ops_pass_opcheck_on_cuda():
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(2, 3, 16, 20, generator=gen) > 0.6).to(CUDA)
    images = torch.rand(2, 3, 16, 20, generator=gen).to(CUDA)
    views = K.pack_views(torch.tensor([0, 1]), torch.tensor([[16, 20], [16, 20]]), torch.tensor([[20, 24], [8, 10]]),
                         torch.tensor([[2, 1], [0, 0]]), torch.tensor([False, True])).to(CUDA)
    active = torch.ones(2, 3, dtype=torch.bool, device=CUDA)
    opcheck(ops.lsj_resample_images, (images, views, 16, 20))
    opcheck(ops.lsj_resample_masks, (masks, views, active, 16, 20))
    opcheck(ops.occlusion_update, (masks, masks.flip(0)))
    opcheck(ops.copy_paste_blend, (images, images.flip(0), torch.rand(2, 16, 20, device=CUDA)))
    opcheck(ops.instance_boxes_areas, (masks,))
    opcheck(ops.fine_grained_saliency, ((images * 255).to(torch.uint8),))
