"""Runs a PyTorch function on whole DALI batches, inside the pipeline.

The function is wrapped in ``fn.dl_tensor_python_function(batch_processing=True,
synchronize_stream=False)``. Inputs arrive as DLPack views of DALI's buffers and become torch
tensors without a copy; outputs go back as DLPack capsules, which DALI copies into its own
buffers (on its CUDA stream for GPU operators).

On the GPU, everything the function does runs on DALI's CUDA stream: it is wrapped as a
``torch.cuda.ExternalStream`` and made torch's current stream, so fastmix's kernels (Triton or
PyTorch) launch on it, in order after the operators that produced the inputs, and outputs are
allocated on it, so the caching allocator cannot hand their memory to other work before DALI's
copy on that same stream has run. Nothing synchronises the device.

On the CPU, PyTorch runs single-threaded inside the function (CPU_THREADS): DALI already keeps
its worker threads and the training loop busy, and torch's intra-op threads competing with them
cost far more CPU than they save (measured: a 224 x 224 saliency map took 4 ms of CPU on one
thread and 314 ms on two, on a loaded 2-core machine). With ATen's OpenMP backend the setting
belongs to the calling thread only, so the training loop keeps its own thread count; with
another backend it would be process-wide, and it is left alone.

The function keeps no reference to DALI's buffers after it returns: inputs are only read, and
every output is a tensor the function allocated.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch.utils.dlpack import to_dlpack

import nvidia.dali.fn as fn
from nvidia.dali.data_node import DataNode
from nvidia.dali.ops import PythonFunction

DEVICES = ("cpu", "gpu")
CPU_THREADS = 1


def _per_thread_torch_threads() -> bool:
    return "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()


_PER_THREAD = None


class TorchBatchFunction:
    """The callable DALI invokes once per batch.

    compute(**inputs) receives, for every named input, the list of per-sample torch tensors and
    returns a mapping from each name in `output_names` to a batch tensor [B, ...] (split into
    samples here) or a list of B per-sample tensors.
    """

    def __init__(self, compute: Callable[..., Mapping[str, object]], input_names: Sequence[str],
                 output_names: Sequence[str], device: str):
        self.compute = compute
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.device = device

    def __call__(self, *capsule_lists):
        if self.device == "gpu":
            return self._run_on_dali_stream(capsule_lists)
        return self._run(capsule_lists)

    def _run_on_dali_stream(self, capsule_lists):
        inputs = self._tensors(capsule_lists)
        cuda_device = next(t.device for samples in inputs.values() for t in samples if t.is_cuda)
        with torch.cuda.device(cuda_device):
            stream = torch.cuda.ExternalStream(PythonFunction.current_stream().ptr, device=cuda_device)
            with torch.cuda.stream(stream):
                return self._outputs(self.compute(**inputs))

    def _run(self, capsule_lists):
        global _PER_THREAD
        if _PER_THREAD is None:
            _PER_THREAD = _per_thread_torch_threads()
        if _PER_THREAD and torch.get_num_threads() != CPU_THREADS:
            torch.set_num_threads(CPU_THREADS)  # this (DALI's) thread only
        return self._outputs(self.compute(**self._tensors(capsule_lists)))

    def _tensors(self, capsule_lists) -> dict[str, list[torch.Tensor]]:
        return {name: [torch.from_dlpack(capsule) for capsule in capsules]
                for name, capsules in zip(self.input_names, capsule_lists)}

    def _outputs(self, outputs: Mapping[str, object]):
        missing = [name for name in self.output_names if name not in outputs]
        if missing:
            raise RuntimeError(f"the batch function returned no {missing}")  # a bug in fastmix.dali
        lists = []
        for name in self.output_names:
            samples = outputs[name]
            if isinstance(samples, torch.Tensor):
                samples = samples.unbind(0)
            lists.append([to_dlpack(t.contiguous()) for t in samples])
        return tuple(lists)


def node_device(node: DataNode, name: str) -> str:
    if not isinstance(node, DataNode):
        raise TypeError(f"{name} must be a DALI DataNode (the output of a DALI operator), got {type(node).__name__}")
    return node.device


def pipeline_device(images: DataNode) -> str:
    """Where the operator runs: the images' device ('cpu', or 'gpu' for 'gpu'/'mixed' outputs)."""
    device = node_device(images, "images")
    if device not in DEVICES:
        raise ValueError(f"images are on an unsupported DALI device {device!r}")
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("the images are on the GPU but this PyTorch build has no CUDA: install a CUDA "
                           "build of torch, or keep the pipeline on the CPU")
    return device


def _to_device(node: DataNode, name: str, device: str) -> DataNode:
    current = node_device(node, name)
    if current == device:
        return node
    if device == "gpu":
        return node.gpu()  # a few bytes per sample for parameters and labels
    raise ValueError(f"the images are on the CPU but {name} is on the GPU; move the images with .gpu() "
                     f"or produce {name} on the CPU")


def call_torch(compute: Callable[..., Mapping[str, object]], inputs: Mapping[str, DataNode | None],
               output_names: Sequence[str], *, device: str, images_layout: str | None = None) -> dict[str, DataNode]:
    """Adds one python-function operator running `compute` on `device`; returns its outputs by name.

    Inputs that are None are left out. All inputs are moved to `device` (a GPU operator reads
    only GPU inputs). `images_layout` labels the "images" output (the first output).
    """
    names = [name for name, node in inputs.items() if node is not None]
    nodes = [_to_device(inputs[name], name, device) for name in names]
    function = TorchBatchFunction(compute, names, output_names, device)
    layouts = [images_layout] if images_layout else None
    outs = fn.dl_tensor_python_function(*nodes, function=function, num_outputs=len(output_names),
                                        batch_processing=True, synchronize_stream=False, device=device,
                                        output_layouts=layouts)
    if len(output_names) == 1:
        outs = [outs]
    return dict(zip(output_names, outs))
