"""Adapters for the libraries people mix batches with today: timm, torchvision v2 and kornia.

Each `make_*` returns a callable `fn(x, y) -> output` built once (outside the timed region), or
raises `Unavailable` with the reason (not installed, fails to import, ...), so the suite can
list the peer as skipped. Settings follow ecosystem.md section 4 and match fastmix's rows:
Beta(1, 1), one lambda per batch, CutMix lambda corrected to the pasted area, no label smoothing.
Differences that matter for timing are noted per adapter.
"""
from __future__ import annotations

import importlib.metadata


class Unavailable(Exception):
    """The peer cannot run here; the message says why."""


def _import(module: str, distribution: str):
    try:
        imported = __import__(module, fromlist=["_"])
    except Exception as exc:  # ImportError, or a broken install raising anything at import time
        raise Unavailable(f"{distribution} not importable: {type(exc).__name__}: {exc}".strip()) from None
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        version = getattr(imported, "__version__", "?")
    return imported, version


def timm_mixup(kind: str, num_classes: int):
    """timm.data.Mixup: mixes IN PLACE (x.flip(0) pairing), returns smoothed soft targets.

    kind "mixup": mixup_alpha=1, cutmix_alpha=0; kind "cutmix": mixup_alpha=0, cutmix_alpha=1.
    timm asserts an even batch.
    """
    timm_data, version = _import("timm.data", "timm")
    alphas = {"mixup": (1.0, 0.0), "cutmix": (0.0, 1.0)}[kind]
    mixer = timm_data.Mixup(mixup_alpha=alphas[0], cutmix_alpha=alphas[1], prob=1.0, mode="batch",
                            correct_lam=True, label_smoothing=0.0, num_classes=num_classes)
    return (lambda x, y: mixer(x, y)), f"timm {version}", True


def torchvision_mixup(kind: str, num_classes: int):
    """torchvision.transforms.v2.MixUp / CutMix: out of place (roll(1) pairing), one-hot targets."""
    v2, version = _import("torchvision.transforms.v2", "torchvision")
    cls = {"mixup": v2.MixUp, "cutmix": v2.CutMix}[kind]
    mixer = cls(alpha=1.0, num_classes=num_classes)
    return (lambda x, y: mixer(x, y)), f"torchvision {version}", False


def kornia_mixup(kind: str, num_classes: int):
    """kornia.augmentation.RandomMixUpV2 / RandomCutMixV2: returns (images, (B, 3) label rows).

    kornia's lambda is the partner's weight and its labels are not soft targets (the user mixes
    two losses); CutMix uses use_correct_lambda=True to report the pasted area.
    """
    aug, version = _import("kornia.augmentation", "kornia")
    if kind == "mixup":
        mixer = aug.RandomMixUpV2(p=1.0, data_keys=["input", "class"])
    else:
        mixer = aug.RandomCutMixV2(p=1.0, use_correct_lambda=True, data_keys=["input", "class"])
    return (lambda x, y: mixer(x, y)), f"kornia {version}", False


# name -> (factory, note shown in the table)
PEERS = {
    "timm Mixup": (timm_mixup, "in place, flip(0) pairing, soft targets"),
    "torchvision v2": (torchvision_mixup, "roll(1) pairing, one-hot targets"),
    "kornia V2": (kornia_mixup, "(B, 3) label rows, no soft targets"),
}
