"""The result object every operator returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .labels import mix_targets


@dataclass
class MixResult:
    """What an operator produced and the parameters it used.

    images: the mixed batch (same dtype, device and memory format as the input).
    lam:    float32 [B], the weight of sample i's own label.
    perm:   int64 [B], sample i was mixed with sample perm[i].
    boxes:  int64 [B, 4] half-open pasted boxes in the order (y1, y2, x1, x2) -- rows first,
            `BOX_ORDER` (CutMix, SaliencyMix, CutOut); `boxes_xyxy()` gives torchvision's
            (x1, y1, x2, y2).
    shifts: int64 [B, 2] (dy, dx) chosen by SAGE: the partner moved dy rows and dx columns.
    mask:   float32 [B, 1, H, W] per-pixel weight of sample i (SAGE).
    labels: the labels passed to the operator, if any (used by `targets()` by default).
    extras: operator-specific diagnostics (e.g. SAGE's candidate shifts and scores).
    """

    BOX_ORDER: ClassVar[str] = "y1, y2, x1, x2"

    images: torch.Tensor
    lam: torch.Tensor
    perm: torch.Tensor
    boxes: torch.Tensor | None = None
    shifts: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def boxes_xyxy(self) -> torch.Tensor:
        """The boxes as int64 [B, 4] (x1, y1, x2, y2), half-open (torchvision's order)."""
        if self.boxes is None:
            raise ValueError("this operator returns no boxes")
        y1, y2, x1, x2 = self.boxes.unbind(1)
        return torch.stack([x1, y1, x2, y2], dim=1)

    def targets(self, labels: torch.Tensor | None = None, num_classes: int | None = None,
                label_smoothing: float = 0.0) -> torch.Tensor:
        """Soft targets float32 [B, num_classes]: lam * onehot(y) + (1 - lam) * onehot(y[perm]), on
        the images' device. Labels on another device raise (targets there would not meet the
        logits, or would silently move the loss off the GPU)."""
        labels = self.labels if labels is None else torch.as_tensor(labels)
        if labels is None:
            raise ValueError("no labels: pass them to the operator or to targets()")
        if labels.device != self.perm.device:
            raise ValueError(f"labels are on {labels.device} but the images are on {self.perm.device}: "
                             f"move them with labels.to({str(self.perm.device)!r})")
        return mix_targets(labels, self.perm, self.lam, num_classes, label_smoothing)
