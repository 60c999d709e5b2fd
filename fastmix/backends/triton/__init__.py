"""Triton kernels: the fast path for CUDA tensors (CPU tensors run them under TRITON_INTERPRET=1).

One module per kernel family (`blend`: Mixup / box paste / box fill, `saliency`: SAGE saliency
prep, `scores`: SAGE shift-score search, `mask_blend`: SAGE mask + blend), plus `_launch`
(allocation, block sizes, grids, device checks), `_common` (jit helpers) and `aot` (compile
proofs: every launched variant compiled to cubin for sm_75 / sm_80 / sm_90 without a GPU). `triton` is imported only
when a kernel module is imported, so `import fastmix` works where triton is not installed
(macOS, Windows) and the PyTorch path keeps working there.
"""
from __future__ import annotations

import importlib.util


def available() -> bool:
    """True when the triton package can be imported."""
    return importlib.util.find_spec("triton") is not None
