"""Drop-in replacements for other libraries' mixing transforms, backed by fastmix's operators.

- `fastmix.compat.timm.Mixup`: timm.data.Mixup (modes batch, pair, elem, half; Mixup/CutMix switch;
  cutmix_minmax; correct_lam; label smoothing).
- `fastmix.compat.torchvision.MixUp`, `.CutMix`: torchvision.transforms.v2.MixUp / CutMix, and
  `.SageMix`, SAGE in the same call convention.

Neither timm nor torchvision is needed: each module states the semantics it keeps and where it
deliberately differs (no in-place mixing, an explicit torch.Generator, odd batches allowed).
"""
from . import timm, torchvision

__all__ = ["timm", "torchvision"]
