"""The torch ops of Copy-Paste and fine-grained saliency (CPU: opcheck, dispatch to the oracle),
the COCO helpers and the example script."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch.library import opcheck

from fastmix.ops import copy_paste as ops
from fastmix.backends.pytorch import copy_paste as K
from fastmix.backends.pytorch.fine_grained_saliency import fine_grained_saliency
from fastmix.copy_paste import instances_to_coco, load_coco_instances

REPO = Path(__file__).resolve().parents[1]


def small_views():
    return K.pack_views(torch.tensor([0, 1, 1]), torch.tensor([[6, 7], [5, 8]]), torch.tensor([[9, 10], [4, 6], [5, 8]]),
                        torch.tensor([[2, 1], [0, 0], [0, 0]]), torch.tensor([False, True, True]))


def op_cases():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 3, 6, 8, generator=gen) > 0.6
    images = torch.rand(2, 3, 6, 8, generator=gen)
    active = torch.tensor([[True, True, False], [True, False, True], [False, False, True]])
    return [
        (ops.lsj_resample_images, (images, small_views(), 7, 8)),
        (ops.lsj_resample_images, ((images * 255).to(torch.uint8), small_views(), 5, 5)),
        (ops.lsj_resample_masks, (masks, small_views(), active, 7, 8)),
        (ops.occlusion_update, (masks, masks.flip(0)[:, :2])),
        (ops.copy_paste_blend, (images, images.flip(0), torch.rand(2, 6, 8, generator=gen))),
        (ops.instance_boxes_areas, (masks,)),
        (ops.fine_grained_saliency, (torch.randint(0, 256, (2, 3, 12, 14), generator=gen, dtype=torch.uint8),)),
        (ops.fine_grained_saliency, (torch.randint(0, 256, (1, 9, 5), generator=gen, dtype=torch.uint8),)),
    ]


@pytest.mark.parametrize("index", range(len(op_cases())))
def test_ops_pass_opcheck_on_cpu(index):
    op, args = op_cases()[index]
    opcheck(op, args)


def test_ops_on_cpu_run_the_oracle():
    for op, args in op_cases():
        oracle = {
            ops.lsj_resample_images: K.lsj_resample_images, ops.lsj_resample_masks: K.lsj_resample_masks,
            ops.occlusion_update: K.occlusion_update, ops.copy_paste_blend: K.copy_paste_blend,
            ops.instance_boxes_areas: K.instance_boxes_areas, ops.fine_grained_saliency: fine_grained_saliency,
        }[op]
        got, expected = op(*args), oracle(*args)
        got = got if isinstance(got, tuple) else (got,)
        expected = expected if isinstance(expected, tuple) else (expected,)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_ops_are_registered_in_the_fastmix_namespace_and_check_their_backend():
    masks = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    for name in ("lsj_resample_images", "lsj_resample_masks", "occlusion_update", "copy_paste_blend",
                 "instance_boxes_areas", "fine_grained_saliency"):
        assert "str backend=\"auto\"" in str(getattr(torch.ops.fastmix, name).default._schema)
    with pytest.raises(ValueError, match="backend"):
        ops.instance_boxes_areas(masks, backend="triton")
    with pytest.raises(ValueError, match="CUDA"):
        ops.instance_boxes_areas(masks, backend="cupy")
    assert torch.equal(ops.instance_boxes_areas(masks, backend="pytorch")[1], torch.zeros(1, 2, dtype=torch.int64))


@pytest.mark.parametrize("call, error", [
    (lambda: ops.lsj_resample_images(torch.zeros(1, 3, 4, 4, dtype=torch.int32), small_views(), 4, 4), TypeError),
    (lambda: ops.lsj_resample_images(torch.zeros(2, 3, 4, 4), small_views()[:, :5], 4, 4), ValueError),
    (lambda: ops.lsj_resample_masks(torch.zeros(2, 3, 4, 4, dtype=torch.bool), small_views(),
                                    torch.ones(3, 2, dtype=torch.bool), 4, 4), ValueError),
    (lambda: ops.occlusion_update(torch.zeros(2, 3, 4, 4, dtype=torch.bool), torch.zeros(2, 1, 4, 5, dtype=torch.bool)),
     ValueError),
    (lambda: ops.copy_paste_blend(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), torch.zeros(2, 4)), ValueError),
    (lambda: ops.instance_boxes_areas(torch.zeros(2, 4, 4)), TypeError),
    (lambda: ops.fine_grained_saliency(torch.zeros(1, 2, 4, 4, dtype=torch.uint8)), ValueError),
    (lambda: ops.fine_grained_saliency(torch.zeros(1, 3, 4, 4)), TypeError),
])
def test_ops_reject_bad_input(call, error):
    with pytest.raises(error):
        call()


def test_fake_tensors_give_the_output_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        images = torch.empty(2, 3, 6, 8)
        views = torch.empty(4, K.VIEW_FIELDS, dtype=torch.int32)
        assert ops.lsj_resample_images(images, views, 5, 7).shape == (4, 3, 5, 7)
        boxes, areas = ops.instance_boxes_areas(torch.empty(2, 3, 6, 8, dtype=torch.bool))
        assert boxes.shape == (2, 3, 4) and areas.dtype == torch.int64
        assert ops.fine_grained_saliency(torch.empty(2, 1, 6, 8, dtype=torch.uint8)).shape == (2, 6, 8)


def test_coco_round_trip(tmp_path):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 20, 24), generator=gen, dtype=torch.uint8),
              torch.randint(0, 256, (3, 16, 30), generator=gen, dtype=torch.uint8)]
    masks = [torch.zeros(2, 20, 24, dtype=torch.bool), torch.zeros(1, 16, 30, dtype=torch.bool)]
    masks[0][0, 2:9, 3:12] = True
    masks[0][1, 10:19, 1:5] = True
    masks[1][0, 4:6, 20:29] = True
    labels = [torch.tensor([1, 2]), torch.tensor([2])]
    names = ["a.png", "b.png"]
    for name, image in zip(names, images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / name)
    categories = [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}]
    coco = instances_to_coco(masks, labels, names, categories)
    coco["annotations"].append({**coco["annotations"][0], "id": 99, "iscrowd": 1})  # skipped when loading
    (tmp_path / "instances.json").write_text(json.dumps(coco))

    batch, records = load_coco_instances(str(tmp_path / "instances.json"), str(tmp_path))
    assert [r["file_name"] for r in records] == names
    back_images, back_masks, back_boxes, back_labels = batch.to_lists()
    for got, want in zip(back_images + back_masks + back_labels, images + masks + labels):
        assert torch.equal(got, want)
    assert back_boxes[0].tolist() == [[3, 2, 12, 9], [1, 10, 5, 19]]
    assert coco["annotations"][0]["area"] == 63.0 and coco["annotations"][0]["bbox"] == [3, 2, 9, 7]


def test_coco_helpers_reject_inconsistent_input():
    with pytest.raises(ValueError, match="one entry per image"):
        instances_to_coco([torch.zeros(1, 4, 4, dtype=torch.bool)], [], ["a.png"], [])
    with pytest.raises(TypeError, match="bool or uint8"):
        instances_to_coco([torch.zeros(1, 4, 4)], [torch.tensor([1])], ["a.png"], [])


def test_example_writes_coco_and_a_visualisation(tmp_path):
    spec = importlib.util.spec_from_file_location("copy_paste_coco", REPO / "examples" / "copy_paste_coco.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    summary = example.main(["--out", str(tmp_path), "--size", "128"])
    assert (tmp_path / "copy_paste.png").stat().st_size > 0
    written = json.loads((tmp_path / "copy_paste_instances.json").read_text())
    assert len(written["images"]) == summary["images"] and len(written["annotations"]) == summary["objects_out"]
    assert summary["objects_in"] > 10  # the coins photo segments into many instances


def test_benchmark_checks_fastmix_against_the_reference(tmp_path):
    from benchmarks import bench_copy_paste

    out = tmp_path / "bench.json"
    report = bench_copy_paste.main(["--batch", "2", "--size", "40", "--instances", "4", "--repeats", "1",
                                    "--devices", "cpu", "--json", str(out)])
    fastmix_row = report["rows"][1]
    assert fastmix_row["masks_boxes_labels_identical"] and fastmix_row["max_image_diff"] <= 1
    assert json.loads(out.read_text())["case"]["size"] == 40
