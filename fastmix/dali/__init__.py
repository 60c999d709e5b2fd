"""fastmix operators inside NVIDIA DALI pipelines.

Call them inside ``@pipeline_def`` like ``nvidia.dali.fn`` operators, on CPU or GPU images::

    from nvidia.dali import pipeline_def, fn
    import fastmix.dali as fmd

    @pipeline_def(batch_size=64, num_threads=4, device_id=0, seed=0)
    def train_pipe(root):
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=True, name="Reader")
        images = fn.resize(fn.decoders.image(jpegs, device="mixed"), size=[224, 224])
        mix = fmd.cutmix(images, labels, num_classes=1000)
        images = fn.crop_mirror_normalize(mix.images, dtype=types.FLOAT)   # the layout travels on
        return images, mix.targets, mix.lam, mix.perm, mix.boxes

Operators: :func:`mixup`, :func:`cutmix`, :func:`cutout`, :func:`saliencymix`, :func:`sage_mix`
(return :class:`MixNodes`), :func:`copy_paste` (returns :class:`CopyPasteNodes`), and
:func:`polygon_masks` (instance masks from ``fn.readers.coco(polygon_masks=True)``).

* Mixup, CutMix and CutOut are composed from DALI's own operators (``fn.permute_batch``,
  arithmetic, ``fn.multi_paste``, ``fn.erase``; :mod:`fastmix.dali.native`): the pipeline
  serializes and checkpoints, and they run on DALI's threads or GPU kernels. On the CPU, Mixup
  defaults to one compiled pass in DALI's ``numba_function`` (``impl="dali"`` to serialize),
  SaliencyMix of uint8 images finds its saliency peaks in a compiled ``numba_function``
  kernel and pastes with DALI operators, and SAGE of float32 images (model-free saliency) and
  Copy-Paste of uint8 / float32 images (hard blend, ``output_size`` given) run as one compiled
  ``numba_function`` each (:mod:`fastmix.dali.numba_sage`, :mod:`fastmix.dali.numba_copy_paste`),
  all without the GIL.
* SaliencyMix, SAGE and Copy-Paste otherwise (GPU, other dtypes, saliency inputs) run fastmix's kernels
  in one ``fn.dl_tensor_python_function(batch_processing=True, synchronize_stream=False)`` per batch,
  on DALI's CUDA stream for GPU images (not serializable: DALI cannot serialize python code).
* The random parameters come from DALI's seeded operators (``fn.batch_permutation``,
  ``fn.random.beta``, ``fn.random.uniform``), so the pipeline seed fixes every draw, and are
  outputs (lam, perm, boxes, shifts, mass).
* The layout (HWC or CHW) is read off the graph when it is built (:mod:`fastmix.dali.layouts`)
  or given with ``layout=``; every images output carries it, so the operators chain with each
  other and with DALI's. Errors name the fastmix operator and, where the graph tells, come
  while the pipeline is defined.

See docs/dali.md for each operator's mechanism per device.
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
