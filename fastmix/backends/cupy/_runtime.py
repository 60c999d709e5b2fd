"""Finding, compiling and launching the CUDA C kernels; torch <-> CuPy interop.

* Sources: the ``.cu`` files ship in the wheel as the data package ``fastmix.kernels`` (mapped
  from the top-level ``kernels/`` folder); in a source checkout run with ``PYTHONPATH=$PWD``
  that package does not exist and the files are read from ``<repo>/kernels``.
* Compilation: ``cupy.RawModule`` (NVRTC) for the current device, cached per device.
* Streams: every launch runs on torch's current stream, so kernels order with torch work
  without any synchronisation.
* Memory: tensors are handed to CuPy with DLPack (zero-copy); masks (bool) as uint8 views.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.resources
import warnings
from pathlib import Path

import torch

KERNEL_PACKAGE = "fastmix.kernels"
# Options for runtime compilation. The CI compile test adds -arch and -Werror=all-warnings on top.
NVRTC_OPTIONS: tuple[str, ...] = ()


def import_cupy():
    """``cupy``, or an ImportError that says how to install it."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(
            "fastmix's CUDA kernels need CuPy with NVRTC: pip install 'cupy-cuda13x' 'nvidia-cuda-nvrtc==13.*' "
            "(CUDA 13; use cupy-cuda12x for CUDA 12), or pass backend='pytorch'"
        ) from exc
    return cupy


def _repo_kernel_dir() -> Path:
    # fastmix/backends/cupy/_runtime.py -> <repo>/kernels
    return Path(__file__).resolve().parents[3] / "kernels"


def kernel_dir():
    """The folder (a Traversable) that holds the ``.cu`` sources."""
    try:
        files = importlib.resources.files(KERNEL_PACKAGE)
        if any(entry.name.endswith(".cu") for entry in files.iterdir()):
            return files
    except ModuleNotFoundError:
        pass
    repo = _repo_kernel_dir()
    if any(repo.glob("*.cu")):
        return repo
    raise FileNotFoundError(
        f"fastmix's CUDA sources were not found: no package {KERNEL_PACKAGE} with .cu files and no {repo}. "
        "Reinstall fastmix, or run from a checkout that has the kernels/ folder."
    )


def kernel_files() -> list[str]:
    """Names of every shipped ``.cu`` file."""
    return sorted(entry.name for entry in kernel_dir().iterdir() if entry.name.endswith(".cu"))


def kernel_source(module: str) -> str:
    """The CUDA C source of ``<module>.cu``."""
    path = kernel_dir() / f"{module}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no kernel source {module}.cu among {kernel_files()}")
    return path.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _raw_module(module: str, device_index: int):
    cupy = import_cupy()
    with cupy.cuda.Device(device_index):
        return cupy.RawModule(code=kernel_source(module), options=NVRTC_OPTIONS)


def get_kernel(module: str, function: str, device: torch.device):
    """The compiled ``extern "C"`` kernel ``function`` of ``<module>.cu`` for ``device``."""
    return _raw_module(module, _device_index(device)).get_function(function)


def _device_index(device: torch.device) -> int:
    return torch.cuda.current_device() if device.index is None else device.index


def _external_stream(cupy, torch_stream: torch.cuda.Stream, device_index: int):
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None and hasattr(torch_stream, "__cuda_stream__"):
        return from_external(torch_stream)
    # Older torch streams lack __cuda_stream__: wrap the raw handle (deprecated in CuPy 14).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(torch_stream.cuda_stream, device_index)


@contextlib.contextmanager
def on_torch_stream(device: torch.device):
    """Make torch's current stream on ``device`` CuPy's current stream (and the device current)."""
    cupy = import_cupy()
    index = _device_index(device)
    with cupy.cuda.Device(index):
        with _external_stream(cupy, torch.cuda.current_stream(index), index):
            yield


def as_cupy(tensor: torch.Tensor):
    """Zero-copy CuPy view of a CUDA tensor (bool becomes uint8). Call inside ``on_torch_stream``."""
    cupy = import_cupy()
    if tensor.dtype == torch.bool:
        tensor = tensor.view(torch.uint8)
    return cupy.from_dlpack(tensor)


def require_cuda(*tensors: torch.Tensor) -> torch.device:
    device = tensors[0].device
    for t in tensors:
        if t.device.type != "cuda" or t.device != device:
            raise ValueError(f"the CuPy kernels need every tensor on one CUDA device, got {[str(x.device) for x in tensors]}")
    return device


def blocks(count: int, per_block: int) -> int:
    return max(1, (count + per_block - 1) // per_block)
