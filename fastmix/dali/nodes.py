"""What the fastmix.dali operators return: named DALI DataNodes, one tensor per sample each."""
from __future__ import annotations

from dataclasses import dataclass

from nvidia.dali.data_node import DataNode


@dataclass(frozen=True)
class MixNodes:
    """Outputs of the classification operators (mixup, cutmix, cutout, saliencymix, sage_mix).

    images:  the mixed images, in the input's layout (HWC or CHW, carried as the output's
             layout), dtype and device.
    lam:     float32 scalar, the weight of the sample's own label.
    perm:    int64 scalar, the index of the partner the sample was mixed with; None for CutOut
             (no partner, and DALI has no operator giving a sample its own index).
    boxes:   int64 [4] (y1, y2, x1, x2), the half-open pasted/erased box (CutMix, CutOut,
             SaliencyMix); None otherwise.
    shifts:  int64 [2] (dy, dx), the shift SAGE chose for the partner; None otherwise.
    mass:    float32 scalar, SAGE's saliency mass of the sample (its partner gets 1 - mass).
    targets: float32 [num_classes] soft targets, lam * onehot(y) + (1 - lam) * onehot(y[perm])
             (with label smoothing); None when no labels were given.
    """

    images: DataNode
    lam: DataNode
    perm: DataNode | None
    boxes: DataNode | None = None
    shifts: DataNode | None = None
    mass: DataNode | None = None
    targets: DataNode | None = None


@dataclass(frozen=True)
class CopyPasteNodes:
    """Outputs of copy_paste.

    images: the images after Copy-Paste, output_size, in the input's layout, dtype and device.
    masks:  [N_i, H, W] instance masks (the input mask dtype): the receiving image's surviving
            objects first, then the pasted ones.
    boxes:  float32 [N_i, 4] (x1, y1, x2, y2) pixel boxes recomputed from the masks (x2/y2
            exclusive).
    labels: int64 [N_i] class ids.
    perm:   int64 scalar, the image the objects were taken from.
    seed:   python-function implementation: int64 scalar, the seed of the torch.Generator that
            drew the rest (jitter, object subsets): ``fastmix.copy_paste.copy_paste(batch,
            perm=perm, generator=torch.Generator().manual_seed(seed))`` replays the batch. None
            for the numba implementation, whose draws are DALI's:
    jitter: numba implementation: float64 [8], scale of the receiving and of the pasted view,
            offsets (y, x) of the receiving view, of the pasted view, flips (0/1) of the
            receiving and of the pasted view (a ``JitterParams`` entry each).
    selected: numba implementation: uint8 [N_perm] (0/1), the objects of image perm pasted.
            With perm, jitter and selected, ``fastmix.copy_paste.copy_paste(batch,
            params=CopyPasteParams(...))`` replays the batch.
    """

    images: DataNode
    masks: DataNode
    boxes: DataNode
    labels: DataNode
    perm: DataNode
    seed: DataNode | None
    jitter: DataNode | None = None
    selected: DataNode | None = None
