"""fastmix operators inside NVIDIA DALI pipelines.

Call them inside ``@pipeline_def`` like ``nvidia.dali.fn`` operators, on CPU or GPU images::

    from nvidia.dali import pipeline_def, fn
    import fastmix.dali as fmd

    @pipeline_def(batch_size=64, num_threads=4, device_id=0, seed=0)
    def train_pipe(root):
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="Reader")
        images = fn.resize(fn.decoders.image(jpegs, device="mixed"), size=[224, 224])
        mix = fmd.cutmix(images, labels, num_classes=1000)
        return mix.images, mix.targets, mix.lam, mix.perm, mix.boxes

Operators: :func:`mixup`, :func:`cutmix`, :func:`cutout`, :func:`saliencymix`, :func:`sage_mix`
(return :class:`MixNodes`), :func:`copy_paste` (returns :class:`CopyPasteNodes`), and
:func:`polygon_masks` (instance masks from ``fn.readers.coco(polygon_masks=True)``).
Built on DALI's own operators (so they follow the pipeline seed; see :mod:`fastmix.dali.draws`):

* the pairing of every operator (Mixup, CutMix, SaliencyMix, SAGE, Copy-Paste):
  ``fn.batch_permutation``;
* Mixup/CutMix/SaliencyMix lam and SAGE's saliency mass: ``fn.random.beta``;
* CutMix/CutOut box centres, SAGE's candidate shifts and Copy-Paste's jitter and object subsets:
  a ``torch.Generator`` seeded per batch by ``fn.random.uniform``;
* the input layout: ``DataNode.property("layout")`` (``fn.get_property``);
* the python operator: ``fn.dl_tensor_python_function(batch_processing=True,
  synchronize_stream=False)``, on DALI's CUDA stream for GPU images.

The pixel work is not rebuilt from ``fn.multi_paste`` / ``fn.erase``: the drawn parameters are
injected into fastmix's operators (``fastmix.mixup`` ...), which run the same kernels as in a
training loop, for HWC and CHW, uint8 and float images, so mixing in the pipeline and mixing
after it give the same images for the same parameters.
"""
try:
    import nvidia.dali  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "fastmix.dali needs NVIDIA DALI, which is not installed: pip install nvidia-dali-cuda130 "
        "(CUDA 13; nvidia-dali-cuda120 for CUDA 12), or pip install 'fastmix[cuda13]'. DALI's CPU "
        "pipelines (device_id=None) run without a GPU."
    ) from exc

from .classification import cutmix, cutout, mixup, sage_mix, saliencymix
from .copy_paste import copy_paste
from .nodes import CopyPasteNodes, MixNodes
from .polygons import polygon_masks

__all__ = ["mixup", "cutmix", "cutout", "saliencymix", "sage_mix", "copy_paste", "polygon_masks",
           "MixNodes", "CopyPasteNodes"]
