"""What a result row must name: the device, its caches and free memory, and library versions."""
from __future__ import annotations

import glob
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import torch

# Distribution names whose versions go into every result file (missing ones are recorded as None).
DISTRIBUTIONS = ("torch", "numpy", "triton", "cupy-cuda13x", "cupy-cuda12x", "timm", "torchvision", "kornia",
                 "opencv-contrib-python-headless", "opencv-contrib-python", "opencv-python-headless",
                 "gco-wrapper", "nvidia-dali-cuda130", "nvidia-dali-cuda120")


def pick_device(name: str | None) -> torch.device:
    """The device asked for (ValueError, with what is available, when it cannot be used here)."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device name; use cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = (f"torch {torch.__version__} is a CPU-only build" if torch.version.cuda is None
                     else f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but finds no GPU")
            raise ValueError(f"--device {name}: no CUDA device is available here ({build}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: the suite runs on cpu or cuda")
    return device


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": props.name, "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count, "memory_GiB": round(props.total_memory / 2**30, 1),
                "l2_cache_bytes": int(getattr(props, "L2_cache_size", 0)), "cuda_runtime": torch.version.cuda,
                "driver": _nvidia_driver(), "host_cpu": cpu_model(), "torch_threads": torch.get_num_threads()}
    return {"type": "cpu", "name": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "last_level_cache_bytes": cache_bytes(device)}


def short_device_name(device: torch.device) -> str:
    info = describe_device(device)
    if device.type == "cuda":
        return info["name"]
    return f"{info['name']} ({info['torch_threads']} threads)"


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def cache_bytes(device: torch.device) -> int:
    """The last-level cache the rotation of input sets has to defeat (32 MiB when unknown)."""
    if device.type == "cuda":
        return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)) or 50 * 2**20
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        text = Path(path).read_text().strip()
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes) if sizes else 32 * 2**20


def available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def library_versions() -> dict:
    import fastmix

    versions = {"python": platform.python_version(), "fastmix": fastmix.__version__}
    for dist in DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    versions["torch_runtime"] = torch.__version__
    return versions


def source_checkout() -> Path | None:
    """The git checkout the imported fastmix comes from (an editable install), or None for an
    installed copy: a site-packages inside some other repository must not lend it its commit."""
    import fastmix

    root = Path(fastmix.__file__).resolve().parent.parent
    if (root / ".git").exists() and (root / "pyproject.toml").is_file():
        return root
    return None


def git_commit(root: Path) -> str | None:
    """Short HEAD commit, with "+dirty" when the code under test has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        if not head:
            return None
        changed = subprocess.run(["git", "status", "--porcelain", "--", "fastmix", "benchmarks/*.py", "kernels"],
                                 cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("+dirty" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return None
