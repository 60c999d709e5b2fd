"""fastmix.compat against the real timm and torchvision (the second CI environment).

These tests need timm and torchvision, which need a torch other than the main environment's
(.ci/run builds `.venv-peers` with torch 2.14.1, torchvision 0.29.1 and timm 1.0.31 and runs
`python -m pytest tests_peers` there). The main suite does not collect this folder (pyproject's
testpaths = ["tests"]). Without the packages every test is skipped with a reason, unless
FASTMIX_PEERS_REQUIRED=1 (set by .ci/run), which turns a missing package into an error so that a
broken install cannot pass as a skip. (Each test module imports its peer with importorskip.)
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # fastmix from this checkout

PEERS = ("timm", "torchvision", "scipy", "numba")  # numba: FastCollateMixup's fused kernel


def _missing():
    missing = []
    for name in PEERS:
        try:
            __import__(name)
        except Exception as error:  # ImportError, or a torchvision built for another torch
            missing.append(f"{name} ({type(error).__name__}: {error})")
    return missing


def pytest_report_header(config):
    versions = []
    for name in ("torch", "torchvision", "timm", "numpy", "scipy", "numba"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except Exception:
                versions.append(f"{name} missing")
                continue
        versions.append(f"{name} {module.__version__}")
    return "peers: " + ", ".join(versions)


def pytest_configure(config):
    missing = _missing()
    if missing and os.environ.get("FASTMIX_PEERS_REQUIRED", "") not in ("", "0"):
        raise pytest.UsageError("FASTMIX_PEERS_REQUIRED is set but these packages do not import: " + "; ".join(missing))
