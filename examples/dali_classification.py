"""Image-folder classification with SAGE or CutMix inside a DALI pipeline, feeding a training loop.

The data ships with scikit-image: random crops of four of its photographs (astronaut, cat,
coffee, rocket), one class each, written as JPEG and PNG files into class subfolders. The
pipeline reads them with ``fn.readers.file``, decodes, resizes, and mixes in the pipeline:

* ``--op cutmix``: ``fastmix.dali.cutmix`` on the decoded HWC uint8 images, then
  ``fn.crop_mirror_normalize`` to CHW float;
* ``--op sage`` (default): ``fn.crop_mirror_normalize`` first, then ``fastmix.dali.sage_mix``
  on the CHW float images, with the model-free fine-grained saliency computed in the pipeline.

``DALIGenericIterator`` hands the mixed images, soft targets, lam and partner indices to a tiny
CNN trained on the CPU.

    python examples/dali_classification.py [--op sage|cutmix] [--data DIR] [--epochs 2]

GPU: use ``device_id=0`` and ``fn.decoders.image(..., device="mixed")``; the same fastmix.dali
calls then run fastmix's GPU kernels on DALI's CUDA stream.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

CLASSES = ("astronaut", "chelsea", "coffee", "rocket")
MEAN, STD = [127.5] * 3, [64.0] * 3


def write_image_folder(root: str, per_class: int = 8, size: int = 64, seed: int = 0) -> str:
    """root/<class>/<n>.jpg|png: random crops (60-100% of each side, random flips) of scikit-image photos."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(seed)
    for name in CLASSES:
        photo = getattr(data, name)()
        folder = os.path.join(root, name)
        os.makedirs(folder, exist_ok=True)
        for n in range(per_class):
            h, w = (int(side * rng.uniform(0.6, 1.0)) for side in photo.shape[:2])
            y, x = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w + 1)
            crop = Image.fromarray(photo[y:y + h, x:x + w]).resize((size, size), Image.BILINEAR)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop.save(os.path.join(folder, f"{n:03d}.{'jpg' if n % 2 == 0 else 'png'}"))
    return root


def build_pipeline(root: str, op: str = "sage", *, batch_size: int = 8, size: int = 32, seed: int = 0,
                   device_id=None):
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    import fastmix.dali as fmd

    if op not in ("sage", "cutmix"):
        raise ValueError(f"op must be 'sage' or 'cutmix', got {op!r}")

    @pipeline_def(batch_size=batch_size, num_threads=2, device_id=device_id, seed=seed)
    def train_pipeline():
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="Reader")
        images = fn.decoders.image(jpegs, device="cpu" if device_id is None else "mixed")
        images = fn.resize(images, size=[size, size])                       # HWC uint8
        if op == "cutmix":
            mix = fmd.cutmix(images, labels, num_classes=len(CLASSES))
            images = fn.crop_mirror_normalize(mix.images, dtype=types.FLOAT, mean=MEAN, std=STD)
        else:
            images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, mean=MEAN, std=STD)  # CHW float
            mix = fmd.sage_mix(images, labels, num_classes=len(CLASSES))
            images = mix.images
        return images, mix.targets, mix.lam, mix.perm

    return train_pipeline()


def tiny_cnn(num_classes: int):
    import torch.nn as nn

    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, num_classes))


def train_step(model, optimizer, images, targets) -> float:
    """One SGD step on soft targets (cross-entropy); returns the loss."""
    import fastmix

    loss = fastmix.soft_target_loss(model(images), targets, loss="ce")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def train(root: str, op: str = "sage", *, epochs: int = 2, batch_size: int = 8, size: int = 32, seed: int = 0):
    """Train the tiny CNN for `epochs` on the mixed batches; returns the mean loss of each epoch."""
    import torch
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    torch.manual_seed(seed)
    pipe = build_pipeline(root, op, batch_size=batch_size, size=size, seed=seed)
    loader = DALIGenericIterator([pipe], ["images", "targets", "lam", "perm"], reader_name="Reader",
                                 last_batch_policy=LastBatchPolicy.DROP, auto_reset=True)
    model = tiny_cnn(len(CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for epoch in range(epochs):
        total, steps = 0.0, 0
        for (batch,) in loader:
            total, steps = total + train_step(model, optimizer, batch["images"], batch["targets"]), steps + 1
        losses.append(total / max(steps, 1))
        print(f"epoch {epoch}: {steps} batches of {batch['images'].shape[0]} {tuple(batch['images'].shape[1:])}, "
              f"mean loss {losses[-1]:.4f}, last lam {[round(v, 3) for v in batch['lam'].tolist()]}")
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=("sage", "cutmix"), default="sage")
    parser.add_argument("--data", help="directory for the generated image folder (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_image_folder(args.data or tmp)
        train(root, args.op, epochs=args.epochs, batch_size=args.batch_size, size=args.size)


if __name__ == "__main__":
    main()
