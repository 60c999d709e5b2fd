"""fastmix: fused mixed-sample data augmentation (Mixup, CutMix, CutOut, SaliencyMix, SAGE,
Copy-Paste) for PyTorch and NVIDIA DALI."""
from .gradient_saliency import SaliencyResult, saliency, soft_target_loss
from .labels import mix_targets, one_hot
from .operators.boxes import cutmix, cutout, image_saliency, saliencymix
from .operators.mixup import mixup
from .operators.sage import sage_mix
from .result import MixResult
from .transforms import CutMix, CutOut, MixUp, SageMix, SaliencyMix

__version__ = "0.1.0"

__all__ = [
    "MixResult", "SaliencyResult", "mixup", "cutmix", "cutout", "saliencymix", "sage_mix",
    "saliency", "image_saliency", "soft_target_loss", "one_hot", "mix_targets",
    "MixUp", "CutMix", "CutOut", "SaliencyMix", "SageMix",
]
