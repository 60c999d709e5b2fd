"""DALI's dynamic mode (``nvidia.dali.experimental.dynamic``) reading, decoding and resizing,
fastmix mixing the batches, and a training loop consuming them, with no pipeline definition.

Dynamic mode runs DALI operators eagerly on ``Batch`` objects, so plain PyTorch code sits between
them: ``Batch.torch()`` hands a decoded batch to fastmix as one tensor (DLPack, no copy when the
batch is contiguous), and fastmix's operators mix it like any other batch:

* ``--op cutmix`` (default), ``mixup``, ``cutout``, ``saliencymix``: on the HWC uint8 batch
  (a channels_last NCHW view), then normalised to float for the model;
* ``--op sage``: on the normalised float batch, with the model-free saliency.

All the random draws come from one ``torch.Generator`` (the reader has its own seed), so a run
is reproducible. Data: the scikit-image photo folder of ``examples/dali_classification.py``.

    python examples/dali_dynamic_mode.py [--op cutmix] [--epochs 2] [--batch-size 8] [--size 32]

GPU: ``--device gpu`` decodes on the GPU (``device="gpu"``), and fastmix's CUDA kernels mix on
torch's current stream, which is set as DALI's current stream first (``ndd.set_current_stream``)
so that both libraries order their work on one stream.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

if __package__ in (None, ""):  # run as a script: make `examples` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples.dali_classification import CLASSES, MEAN, STD, tiny_cnn, train_step, write_image_folder  # noqa: E402

OPS = ("cutmix", "mixup", "cutout", "saliencymix", "sage")


def mix(op: str, images, labels, generator):
    """images: [B, H, W, C] uint8 from DALI. Returns (normalised float NCHW images, soft targets)."""
    import torch

    import fastmix

    x = images.permute(0, 3, 1, 2)  # channels_last NCHW view of DALI's batch: no copy
    mean = torch.tensor(MEAN, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, -1, 1, 1)
    if op == "sage":
        x = (x.float() - mean) / std
        result = fastmix.sage_mix(x, saliency=fastmix.image_saliency(x, value_range=None), generator=generator)
        return result.images, result.targets(labels, len(CLASSES))
    if op == "saliencymix":
        result = fastmix.saliencymix(x, generator=generator)
    elif op == "cutout":
        result = fastmix.cutout(x, generator=generator)
    else:
        result = getattr(fastmix, op)(x, generator=generator)
    return (result.images.float() - mean) / std, result.targets(labels, len(CLASSES))


def batches(root: str, *, batch_size: int, size: int, seed: int, device: str = "cpu"):
    """One epoch of (uint8 [B, size, size, 3] images, int64 [B] labels) torch batches, read, decoded
    and resized by DALI's dynamic mode."""
    import nvidia.dali.experimental.dynamic as ndd

    reader = ndd.readers.File(file_root=root, random_shuffle=True, seed=seed)
    for jpegs, labels in reader.next_epoch(batch_size=batch_size):
        images = ndd.resize(ndd.decoders.image(jpegs, device=device), size=[size, size]).torch()
        yield images, labels.torch().reshape(-1).long().to(images.device)


def train(root: str, op: str = "cutmix", *, epochs: int = 2, batch_size: int = 8, size: int = 32, seed: int = 0,
          device: str = "cpu"):
    """Train the tiny CNN on mixed batches; returns the mean loss of each epoch."""
    import torch

    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    torch.manual_seed(seed)
    torch_device = torch.device("cuda" if device == "gpu" else "cpu")
    if device == "gpu":
        import nvidia.dali.experimental.dynamic as ndd

        ndd.set_current_stream(torch.cuda.current_stream())  # one stream for DALI and fastmix
    model = tiny_cnn(len(CLASSES)).to(torch_device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        total, steps = 0.0, 0
        for images, labels in batches(root, batch_size=batch_size, size=size, seed=seed + epoch, device=device):
            if images.shape[0] < batch_size:  # the last, partial batch
                continue
            inputs, targets = mix(op, images, labels, generator)
            total, steps = total + train_step(model, optimizer, inputs, targets), steps + 1
        losses.append(total / max(steps, 1))
        print(f"epoch {epoch}: {steps} batches of {batch_size} {op}-mixed {size}x{size} images, "
              f"mean loss {losses[-1]:.4f}")
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", choices=OPS, default="cutmix")
    parser.add_argument("--data", help="directory for the generated image folder (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_image_folder(args.data or tmp)
        return train(root, args.op, epochs=args.epochs, batch_size=args.batch_size, size=args.size,
                     device=args.device)


if __name__ == "__main__":
    main()
