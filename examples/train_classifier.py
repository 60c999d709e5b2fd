"""Train a small CNN on scikit-learn's handwritten digits with a fastmix operator, and plot it.

    python examples/train_classifier.py --method sage --epochs 30 --seed 0 --out sage.png

The data set is `sklearn.datasets.load_digits` (1,797 greyscale 8x8 digits, 10 classes), which
ships inside scikit-learn, so nothing is downloaded. Images are upscaled to --size pixels
(bilinear), scaled to [0, 1] and standardised with the training set's mean and std. The split
(75% train / 25% test, stratified) is fixed; --seed changes the model's initialisation, the batch
order and the mixing draws. No other augmentation is used, so "none" is the plain baseline.

Every method trains with the same optimiser, schedule and loss (--loss, default "bce", the
BCE-on-softmax that SAGE's code base uses for all its methods):
  none, mixup, cutmix, saliencymix: fastmix.training.mix_step
  sage: fastmix.training.sage_step (clean pass kept with weight 1 - update_ratio)
The learning curve (training loss and test accuracy per epoch) is written to --out as a PNG and
the final test accuracy is printed.

Needs: torch, fastmix, scikit-learn, matplotlib, tqdm.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

from fastmix.distributed import rank_generator
from fastmix.training import mix_step, sage_step

METHODS = ("none", "mixup", "cutmix", "saliencymix", "sage")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_data(size: int, train_size: int | None, device: torch.device):
    """Standardised [N, 1, size, size] float32 tensors and int64 labels for train and test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, stratify=labels,
                                                        random_state=0)
    if train_size is not None:
        x_train, y_train = x_train[:train_size], y_train[:train_size]

    def to_tensor(x):
        x = torch.as_tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0  # pixel values are 0..16
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)

    x_train, x_test = to_tensor(x_train), to_tensor(x_test)
    mean, std = x_train.mean(), x_train.std()
    standardise = lambda x: ((x - mean) / std).to(device)  # noqa: E731
    value_range = (float(-mean / std), float((1 - mean) / std))  # where [0, 1] pixels land
    return (standardise(x_train), torch.as_tensor(y_train).to(device), standardise(x_test),
            torch.as_tensor(y_test).to(device), value_range)


def small_cnn(num_classes: int = 10) -> torch.nn.Module:
    def block(cin, cout):
        return [torch.nn.Conv2d(cin, cout, 3, padding=1, bias=False), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]

    return torch.nn.Sequential(*block(1, 32), *block(32, 32), torch.nn.MaxPool2d(2),
                               *block(32, 64), torch.nn.MaxPool2d(2), *block(64, 64),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, num_classes))


@torch.no_grad()
def evaluate(model, x, y, batch_size=512):
    model.eval()
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start:start + batch_size])
        correct += int((logits.argmax(1) == y[start:start + batch_size]).sum())
    return correct / x.shape[0]


def train_step(args, model, optimizer, x, y, generator, value_range, scaler):
    """One iteration of the chosen method; returns the StepResult."""
    common = dict(loss=args.loss, scaler=scaler, autocast_dtype=AMP_DTYPES[args.amp], generator=generator)
    if args.method == "sage":
        return sage_step(model, optimizer, x, y, update_ratio=args.update_ratio, upper_lambda=args.upper_lambda,
                         rand_pos=args.rand_pos, alpha=args.alpha, **common)
    options = {"none": {}, "mixup": {"alpha": args.alpha}, "cutmix": {"alpha": args.alpha},
               "saliencymix": {"alpha": args.alpha, "value_range": value_range}}[args.method]
    return mix_step(model, optimizer, x, y, operator=args.method, **options, **common)


def plot_curve(history, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history["test_acc"]) + 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, history["train_loss"])
    left.set(xlabel="epoch", ylabel="training loss", title="training loss (on the mixed batch)")
    right.plot(epochs, [100 * a for a in history["test_acc"]])
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=METHODS, default="sage")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="curve.png", help="learning-curve PNG")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=16, help="image side after upscaling (SAGE needs square)")
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--loss", choices=("bce", "ce"), default="bce")
    parser.add_argument("--alpha", type=float, default=1.0, help="Beta(alpha, alpha) of every method")
    parser.add_argument("--update-ratio", type=float, default=0.7, help="SAGE: weight of the mixed loss")
    parser.add_argument("--upper-lambda", type=float, default=0.6, help="SAGE: scale of the saliency mass a")
    parser.add_argument("--rand-pos", type=float, default=0.05, help="SAGE: fraction of shifts tried")
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), default="none", help="autocast dtype")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--json", default=None, help="also write the history as JSON here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    from tqdm import tqdm

    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)  # the model's initialisation
    x_train, y_train, x_test, y_test, value_range = load_data(args.size, args.train_size, device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x_train, x_test = x_train.contiguous(memory_format=memory_format), x_test.contiguous(memory_format=memory_format)
    model = small_cnn().to(device=device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(x_train.shape[0] / args.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None
    order_generator = torch.Generator().manual_seed(args.seed)
    mix_generator = rank_generator(args.seed)  # rank 0 here; one stream per rank under DDP

    history = {"train_loss": [], "test_acc": []}
    start = time.perf_counter()
    bar = tqdm(total=args.epochs * steps_per_epoch, desc=args.method, disable=args.no_progress, unit="step")
    for epoch in range(args.epochs):
        order = torch.randperm(x_train.shape[0], generator=order_generator).to(device)
        losses = []
        for first in range(0, x_train.shape[0], args.batch_size):
            batch = order[first:first + args.batch_size]
            step = train_step(args, model, optimizer, x_train[batch], y_train[batch], mix_generator, value_range,
                              scaler)
            schedule.step()
            if math.isfinite(float(step.loss)):  # NaN marks a step skipped by fp16 loss scaling
                losses.append(float(step.loss))
            bar.update(1)
        history["train_loss"].append(sum(losses) / max(len(losses), 1))
        history["test_acc"].append(evaluate(model, x_test, y_test))
        bar.set_postfix(epoch=epoch + 1, loss=f"{history['train_loss'][-1]:.4f}",
                        test_acc=f"{100 * history['test_acc'][-1]:.2f}%")
    bar.close()
    seconds = time.perf_counter() - start

    title = f"{args.method}, digits {args.size}x{args.size}, seed {args.seed}"
    plot_curve(history, args.out, title)
    summary = {"method": args.method, "seed": args.seed, "epochs": args.epochs, "device": str(device),
               "train_images": int(x_train.shape[0]), "test_images": int(x_test.shape[0]),
               "final_test_acc": history["test_acc"][-1], "seconds": seconds, **history}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle)
    print(f"final test accuracy: {100 * summary['final_test_acc']:.2f}% ({args.method}, {args.epochs} epochs, "
          f"seed {args.seed}, {device}, {seconds:.1f} s); learning curve: {args.out}")
    return summary


if __name__ == "__main__":
    main()
