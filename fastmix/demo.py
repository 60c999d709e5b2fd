"""`fastmix demo`: every operator on real photos (shipped with scikit-image), as one PNG grid."""
from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# Smaller photos leave the saliency's 5x5 smoothing no room; larger ones only upsample the
# photos (the smallest is 300 px) and make SAGE's search slow.
MIN_SIZE, MAX_SIZE = 8, 1024
NEEDS = (("skimage", "scikit-image"), ("matplotlib", "matplotlib"))


def check_options(out: str = "fastmix_demo.png", device: str | None = None, size: int = 160) -> dict:
    """The demo's options, checked before any work: ImportError for a missing package of the
    `demo` extra, ValueError (naming the option and the fix) for a bad value."""
    missing = [dist for module, dist in NEEDS if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(f"the demo needs {' and '.join(missing)}, not installed here: pip install 'fastmix[demo]'")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"--size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    from .bench.environment import pick_device

    resolved = pick_device(device)
    path = os.path.abspath(out)
    if os.path.isdir(path):
        raise ValueError(f"--out {out} is a folder; give a file name such as {os.path.join(out, 'fastmix_demo.png')}")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise ValueError(f"--out {out}: the folder {folder} does not exist; create it first")
    return {"out": path, "device": str(resolved), "size": size}


def load_photos(size: int = 160) -> torch.Tensor:
    """float32 [4, 3, size, size] in [0, 1]: centre-cropped, resized photos from scikit-image."""
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise ImportError("the demo needs scikit-image: pip install 'fastmix[demo]'") from exc
    images = []
    for name in PHOTOS:
        photo = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float() / 255.0
        side = min(photo.shape[1:])
        top, left = (photo.shape[1] - side) // 2, (photo.shape[2] - side) // 2
        square = photo[:, top:top + side, left:left + side]
        images.append(F.interpolate(square[None], size=(size, size), mode="bilinear", antialias=True,
                                    align_corners=False)[0].clamp(0, 1))
    return torch.stack(images)


def run_operators(images: torch.Tensor, seed: int = 0):
    """(name, result, geometry map [B, H, W] or None, note) for every classification operator."""
    import fastmix

    gen = torch.Generator().manual_seed(seed)
    batch = images.shape[0]
    perm = torch.roll(torch.arange(batch), 1)  # a derangement, so every panel shows two photos
    saliency = fastmix.image_saliency(images)
    rows = []
    result = fastmix.mixup(images, perm=perm, lam=0.6, generator=gen)
    rows.append(("Mixup", result, None, "lam = 0.6"))
    result = fastmix.cutmix(images, perm=perm, per_sample=True, generator=gen)
    rows.append(("CutMix", result, _box_map(result.boxes, images), "official box, per-sample lam"))
    result = fastmix.cutout(images, generator=gen)
    rows.append(("CutOut", result, _box_map(result.boxes, images), "half-side square erased"))
    result = fastmix.saliencymix(images, perm=perm, per_sample=True, saliency=saliency, generator=gen)
    rows.append(("SaliencyMix", result, saliency[perm.to(saliency.device)], "box at the partner's saliency peak"))
    # SAGE normally uses the model's input gradient; the demo has no model, so the image
    # saliency stands in for it (the search and the mask are the same). The coarse-to-fine
    # search: the exhaustive one scores every one of (2 * size - 1)^2 shifts, minutes per
    # batch at 160 px on a CPU, and the demo should take seconds.
    result = fastmix.sage_mix(images * 2 - 1, saliency=saliency, perm=perm, mass=0.5,
                              search="coarse_to_fine", generator=gen)
    result.images = (result.images + 1) / 2
    rows.append(("SAGE", result, result.mask[:, 0], "soft mask M, best shift (dy, dx) = "
                 + ", ".join(str(tuple(s.tolist())) for s in result.shifts[:1].cpu())))
    return rows


def _box_map(boxes: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    from .backends.pytorch.blend import box_mask

    return box_mask(boxes, images.shape[2], images.shape[3])[:, 0].float()


def render(images: torch.Tensor, rows, path: str, sample: int = 0) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def show(ax, tensor, title, cmap=None):
        array = tensor.detach().float().cpu()
        if array.dim() == 3:
            array = array.permute(1, 2, 0).clamp(0, 1)
        ax.imshow(array.numpy(), cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.axis("off")

    fig, axes = plt.subplots(len(rows), 4, figsize=(10, 2.6 * len(rows)))
    for line, (name, result, geometry, note) in zip(axes, rows):
        partner = int(result.perm[sample])
        show(line[0], images[sample], f"{name}: sample {sample}")
        show(line[1], images[partner], f"partner {partner}")
        show(line[2], result.images[sample], f"mixed, lam = {float(result.lam[sample]):.3f}")
        if geometry is None:
            line[3].text(0.5, 0.5, note, ha="center", va="center", fontsize=9)
            line[3].axis("off")
        else:
            show(line[3], geometry[sample], note, cmap="magma")
    fig.suptitle("fastmix operators on scikit-image photos", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(out: str = "fastmix_demo.png", device: str | None = None, seed: int = 0, size: int = 160) -> str:
    options = check_options(out=out, device=device, size=size)
    device = options["device"]
    images = load_photos(size).to(device)
    rows = run_operators(images, seed)
    path = render(images, rows, options["out"])
    for name, result, _, _ in rows:
        lam = ", ".join(f"{v:.3f}" for v in result.lam.tolist())
        print(f"{name:12s} lam = [{lam}]  perm = {result.perm.tolist()}")
    print(f"fastmix demo ran on {device}; wrote {path}")
    return path
