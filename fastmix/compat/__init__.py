"""Drop-in replacements for other libraries' mixing transforms, backed by fastmix's operators.

- `fastmix.compat.timm`: `Mixup` and `FastCollateMixup` (timm.data; modes batch, pair, elem,
  half; Mixup/CutMix switch; cutmix_minmax; correct_lam; label smoothing; multi_label) and timm's
  `rand_bbox`, `rand_bbox_minmax`, `cutmix_bbox_and_lam`, `mixup_target`.
- `fastmix.compat.torchvision`: `MixUp`, `CutMix` (torchvision.transforms.v2) and `SageMix`, SAGE
  in the same call convention.

Neither timm nor torchvision is needed: each module states the semantics it keeps and where it
deliberately differs (no in-place mixing, an explicit torch.Generator, odd batches allowed).
Checked against timm 1.0.31 and torchvision 0.29.1 by tests_peers/ (run by .ci/run in a second
environment that has them).
"""
from . import timm, torchvision

__all__ = ["timm", "torchvision"]
