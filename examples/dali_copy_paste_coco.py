"""A COCO instance-segmentation loader with Copy-Paste inside a DALI pipeline, on the CPU.

The data ships with scikit-image: the "coins" photograph, cut into tiles, with one instance
mask per coin (watershed segmentation) written as a COCO annotation file with polygons. The
pipeline reads it with ``fn.readers.coco(polygon_masks=True)``, rasterises the polygons into
instance masks (``fastmix.dali.polygon_masks``: DALI's own ``pixelwise_masks`` are semantic,
not per instance), decodes the JPEGs and applies ``fastmix.dali.copy_paste``, which resizes,
flips and crops every image and its partner (large-scale jittering) and pastes a random subset
of the partner's coins.

    python examples/dali_copy_paste_coco.py [--data DIR] [--batches 2] [--out copy_paste.png]

GPU: add ``device_id=0`` to the pipeline and decode with ``device="mixed"``; the masks are
moved to the GPU with ``.gpu()`` and Copy-Paste runs on DALI's CUDA stream.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np

CATEGORIES = [{"id": 1, "name": "small coin"}, {"id": 2, "name": "large coin"}]


def coin_instances():
    """The coins photograph (uint8 [303, 384]) and its labelled coins (int [303, 384], 0 = background)."""
    from scipy import ndimage as ndi
    from skimage import data, filters, segmentation

    coins = data.coins()
    markers = np.zeros_like(coins, dtype=np.int32)
    markers[coins < 30], markers[coins > 150] = 1, 2  # the scikit-image gallery's watershed markers
    foreground = segmentation.watershed(filters.sobel(coins), markers) == 2
    foreground = ndi.binary_fill_holes(foreground)
    labelled, _ = ndi.label(foreground)
    return coins, labelled


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons (x, y pixel coordinates; a pixel's centre is at +0.5) of a binary mask."""
    from skimage import measure

    contours = measure.find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
    # find_contours puts pixel centres at integer (row, col) of the padded mask: -1 for the pad, +0.5 for COCO.
    return [[float(v) for point in contour[:, ::-1] - 0.5 for v in point]
            for contour in contours if len(contour) >= 3]


def write_coins_coco(root: str, tiles: tuple[int, int] = (2, 2), min_area: int = 60) -> tuple[str, str]:
    """Write tiles of the coins photo as RGB JPEGs plus a COCO instances file; returns (image_dir, annotations)."""
    from PIL import Image

    coins, labelled = coin_instances()
    areas = np.bincount(labelled.ravel())
    large = np.median(areas[1:])
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": CATEGORIES}
    rows = np.array_split(np.arange(coins.shape[0]), tiles[0])
    cols = np.array_split(np.arange(coins.shape[1]), tiles[1])
    for r in rows:
        for c in cols:
            image_id = len(coco["images"]) + 1
            name = f"coins_{image_id:02d}.jpg"
            tile = coins[r[0]:r[-1] + 1, c[0]:c[-1] + 1]
            Image.fromarray(np.stack([tile] * 3, axis=-1)).save(os.path.join(image_dir, name), quality=95)
            coco["images"].append({"id": image_id, "file_name": name, "height": tile.shape[0], "width": tile.shape[1]})
            tile_labels = labelled[r[0]:r[-1] + 1, c[0]:c[-1] + 1]
            for coin in np.unique(tile_labels[tile_labels > 0]):
                mask = tile_labels == coin
                if mask.sum() < min_area:
                    continue
                ys, xs = np.nonzero(mask)
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "iscrowd": 0,
                    "category_id": 2 if areas[coin] >= large else 1, "segmentation": _polygons(mask),
                    "area": float(mask.sum()),
                    "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
                })
    annotations = os.path.join(root, "instances.json")
    with open(annotations, "w") as f:
        json.dump(coco, f)
    return image_dir, annotations


def build_pipeline(image_dir: str, annotations: str, *, batch_size: int = 4, output_size=(128, 128), seed: int = 0):
    import nvidia.dali.fn as fn
    from nvidia.dali import pipeline_def

    import fastmix.dali as fmd

    @pipeline_def(batch_size=batch_size, num_threads=2, device_id=None, seed=seed)
    def copy_paste_pipeline():
        jpegs, boxes, labels, polygons, vertices = fn.readers.coco(
            file_root=image_dir, annotations_file=annotations, polygon_masks=True, ltrb=True,
            random_shuffle=True, name="Reader")
        masks = fmd.polygon_masks(polygons, vertices, labels, fn.peek_image_shape(jpegs))
        images = fn.decoders.image(jpegs, device="cpu")
        out = fmd.copy_paste(images, masks, labels, boxes=boxes, output_size=output_size, scale_range=(0.5, 1.5))
        return out.images, out.masks, out.boxes, out.labels, out.perm

    return copy_paste_pipeline()


def load_batches(pipe, count: int):
    """Run the pipeline: per batch, per-image torch tensors (images HWC uint8, masks, boxes, labels) and perm."""
    import torch

    for _ in range(count):
        images, masks, boxes, labels, perm = pipe.run()
        size = len(images)
        yield {"images": [torch.from_numpy(np.array(images[i])) for i in range(size)],
               "masks": [torch.from_numpy(np.array(masks[i])) for i in range(size)],
               "boxes": [torch.from_numpy(np.array(boxes[i])) for i in range(size)],
               "labels": [torch.from_numpy(np.array(labels[i])) for i in range(size)],
               "perm": torch.tensor([int(np.array(perm[i])) for i in range(size)])}


def save_overview(batch, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(batch["images"])
    fig, axes = plt.subplots(1, count, figsize=(3 * count, 3))
    for ax, image, masks, boxes in zip(np.atleast_1d(axes), batch["images"], batch["masks"], batch["boxes"]):
        ax.imshow(image.numpy())
        if masks.shape[0]:
            ax.contour(masks.numpy().max(axis=0), levels=[0.5], colors="yellow", linewidths=0.8)
        for x1, y1, x2, y2 in boxes.tolist():
            ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, color="red", lw=0.8))
        ax.set_title(f"{masks.shape[0]} objects", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="directory for the generated COCO data (default: a temporary one)")
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="output images are size x size")
    parser.add_argument("--out", help="save a PNG of the last batch here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        image_dir, annotations = write_coins_coco(args.data or tmp)
        pipe = build_pipeline(image_dir, annotations, batch_size=args.batch_size, output_size=(args.size, args.size))
        pipe.build()
        for index, batch in enumerate(load_batches(pipe, args.batches)):
            counts = [int(m.shape[0]) for m in batch["masks"]]
            print(f"batch {index}: objects per image {counts}, partners {batch['perm'].tolist()}, "
                  f"image {tuple(batch['images'][0].shape)} {batch['images'][0].dtype}")
        if args.out:
            save_overview(batch, args.out)
            print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
