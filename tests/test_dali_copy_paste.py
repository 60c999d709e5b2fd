"""fastmix.dali.copy_paste and polygon_masks in CPU-only DALI pipelines (device_id=None).

Copy-Paste is replayed with fastmix.copy_paste.copy_paste on the pairing and the generator seed
the pipeline reports; the rasteriser is checked against scikit-image and against the masks the
COCO polygons were traced from.
"""
import numpy as np
import pytest
import torch

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

import fastmix.dali as fmd
from fastmix.copy_paste import InstanceBatch, copy_paste
from fastmix.dali.polygons import rasterize_polygons

SIZES = [(20, 24), (16, 16), (24, 20)]


def instance_data(seed=0):
    rng = np.random.default_rng(seed)
    images, masks, labels, boxes = [], [], [], []
    for index, (h, w) in enumerate(SIZES):
        images.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        count = index + 1 if index < 2 else 0  # the last image has no objects
        m = np.zeros((count, h, w), np.uint8)
        b = np.zeros((count, 4), np.float32)
        for k in range(count):
            y, x = int(rng.integers(0, h - 7)), int(rng.integers(0, w - 6))
            m[k, y:y + 7, x:x + 6] = 1
            b[k] = (x, y, x + 6, y + 7)
        masks.append(m)
        boxes.append(b)
        labels.append(np.arange(1, count + 1, dtype=np.int32))
    return images, masks, labels, boxes


def copy_paste_pipeline(data, *, seed=3, chw_float=False, with_boxes=False, **options):
    images, masks, labels, boxes = data

    @pipeline_def(batch_size=len(images), num_threads=1, device_id=None, seed=seed, prefetch_queue_depth=1)
    def pipe():
        x = fn.external_source(source=lambda: images, batch=True, layout="HWC")
        if chw_float:
            x = fn.transpose(fn.cast(x, dtype=types.FLOAT), perm=[2, 0, 1], output_layout="CHW")
        m = fn.external_source(source=lambda: masks, batch=True)
        lab = fn.external_source(source=lambda: labels, batch=True)
        box = fn.external_source(source=lambda: boxes, batch=True) if with_boxes else None
        out = fmd.copy_paste(x, m, lab, boxes=box, impl="python", **options)  # replayed by its seed
        return out.images, out.masks, out.boxes, out.labels, out.perm, out.seed

    return pipe()


def run(pipe):
    pipe.build()
    outs = pipe.run()
    return [[torch.from_numpy(np.array(out[i])) for i in range(len(out))] for out in outs]


def replay(data, perm, seed, *, chw_float=False, **options):
    images, masks, labels, _ = data
    chw = [torch.from_numpy(a).permute(2, 0, 1) for a in images]
    if chw_float:
        chw = [c.float() for c in chw]
    batch = InstanceBatch.from_lists(chw, [torch.from_numpy(m) for m in masks], None,
                                     [torch.from_numpy(lab).long() for lab in labels])
    return copy_paste(batch, perm=perm, generator=torch.Generator().manual_seed(seed), **options)


@pytest.mark.parametrize("chw_float", [False, True], ids=["HWC-uint8", "CHW-float"])
def test_copy_paste_matches_pytorch_on_the_reported_parameters(chw_float):
    data = instance_data()
    options = {"output_size": (16, 18), "scale_range": (0.5, 1.5), "blend": "gaussian" if chw_float else "hard"}
    images, masks, boxes, labels, perm, seed = run(copy_paste_pipeline(data, chw_float=chw_float, with_boxes=True,
                                                                       **options))
    perm_t = torch.stack(perm)
    assert len({int(s) for s in seed}) == 1
    expected = replay(data, perm_t, int(seed[0]), chw_float=chw_float, **options)
    assert torch.equal(perm_t, expected.perm)
    out_images = torch.stack(images)
    assert out_images.shape == ((3, 3, 16, 18) if chw_float else (3, 16, 18, 3))
    assert torch.equal(out_images, expected.images if chw_float else expected.images.permute(0, 2, 3, 1))
    for i in range(3):
        assert torch.equal(masks[i], expected.masks[i]) and masks[i].dtype == torch.uint8
        assert torch.equal(boxes[i], expected.boxes[i]) and torch.equal(labels[i], expected.labels[i])
    assert sum(m.shape[0] for m in masks) > 0


def test_copy_paste_same_seed_same_batch_and_missing_output_size_error():
    data = instance_data(1)
    first = run(copy_paste_pipeline(data, seed=9, output_size=(16, 16)))
    again = run(copy_paste_pipeline(data, seed=9, output_size=(16, 16)))
    for a, b in zip(first, again):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(RuntimeError, match="images differ in size: pass output_size"):
        run(copy_paste_pipeline(data))


def random_polygon(rng, height, width, points=7):
    """A star-shaped polygon (x, y) around a random centre, vertices away from pixel centres."""
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    angles = np.sort(rng.uniform(0, 2 * np.pi, points))
    radius = rng.uniform(0.2, 0.45, points) * min(height, width)
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1) + 0.013


def test_rasterize_polygons_matches_scikit_image():
    from skimage.draw import polygon2mask

    rng = np.random.default_rng(0)
    height, width = 23, 31
    polys = [random_polygon(rng, height, width) for _ in range(5)]
    vertices = torch.from_numpy(np.concatenate(polys)).float()
    starts = np.cumsum([0] + [len(p) for p in polys])
    owners = [0, 0, 1, 2, 2]  # objects 0 and 2 have two polygons each; object 3 has none
    polygons = torch.tensor([[o, starts[k], starts[k + 1]] for k, o in enumerate(owners)], dtype=torch.int32)
    masks = rasterize_polygons(polygons, vertices, 4, height, width)
    assert masks.dtype == torch.uint8 and masks.shape == (4, height, width)
    expected = np.zeros((4, height, width), bool)
    for k, owner in enumerate(owners):  # scikit-image samples at integer (row, col): shift by half a pixel
        xy = vertices[starts[k]:starts[k + 1]].double().numpy()
        expected[owner] |= polygon2mask((height, width), np.stack([xy[:, 1] - 0.5, xy[:, 0] - 0.5], axis=1))
    assert torch.equal(masks.bool(), torch.from_numpy(expected))
    assert masks[3].sum() == 0 and masks[0].sum() > 0
    with pytest.raises(ValueError, match="belongs to object 4"):
        rasterize_polygons(torch.tensor([[4, 0, 3]]), vertices, 4, height, width)


def test_polygon_masks_from_the_coco_reader_match_the_traced_masks(tmp_path):
    from examples.dali_copy_paste_coco import coin_instances, write_coins_coco

    image_dir, annotations = write_coins_coco(str(tmp_path))
    coins, labelled = coin_instances()

    @pipeline_def(batch_size=4, num_threads=1, device_id=None, seed=0)
    def pipe():
        jpegs, _, labels, polygons, vertices, ids = fn.readers.coco(
            file_root=image_dir, annotations_file=annotations, polygon_masks=True, ltrb=True, image_ids=True)
        return fmd.polygon_masks(polygons, vertices, labels, fn.peek_image_shape(jpegs)), ids

    masks, ids = run(pipe())
    rows, cols = np.array_split(np.arange(coins.shape[0]), 2), np.array_split(np.arange(coins.shape[1]), 2)
    tiles = [(r, c) for r in rows for c in cols]
    for image_masks, image_id in zip(masks, ids):
        r, c = tiles[int(image_id) - 1]
        tile = labelled[r[0]:r[-1] + 1, c[0]:c[-1] + 1]
        assert image_masks.shape[1:] == tile.shape and image_masks.shape[0] > 0
        for mask in image_masks.bool().numpy():  # every object is (almost exactly) one traced coin
            coin = np.bincount(tile[mask]).argmax()
            traced = tile == coin
            assert (mask & traced).sum() / (mask | traced).sum() > 0.97


def test_polygon_masks_inputs_must_be_on_the_cpu():
    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(source=lambda: [np.zeros((2, 3), np.int32)], batch=True)
        return fmd.polygon_masks(x, x, x.gpu(), x)

    with pytest.raises(ValueError, match="polygon_masks runs on the CPU; labels is on the gpu"):
        pipe()
