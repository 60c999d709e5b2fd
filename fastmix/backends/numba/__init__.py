"""numba kernels: the CPU kernel layer beside the PyTorch oracle, as Triton is the GPU layer.

`_kernels` holds the compiled loops on NumPy arrays (numba + numpy only, so DALI's CPU
`numba_function` can call them too); `blend` wraps them for CPU torch tensors. numba is
imported only when a kernel is first used, so `import fastmix` works without it and the
PyTorch path stays the fallback. FASTMIX_DISABLE_NUMBA=1 makes `available()` false.
"""
from __future__ import annotations

import functools
import os

# The images' and outputs' dtypes the kernels handle (numba has no float16 / bfloat16 on the
# CPU); ops with other dtypes run the PyTorch path.
DTYPES = ("uint8", "float32", "float64")


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True when numba imports (with the installed NumPy) and FASTMIX_DISABLE_NUMBA is not set."""
    if os.environ.get("FASTMIX_DISABLE_NUMBA", "") not in ("", "0"):
        return False
    try:
        from . import _runtime  # noqa: F401  (configures numba before its first parallel launch)
        import numba  # noqa: F401
    except Exception:  # an ImportError, or numba refusing the installed NumPy version
        return False
    return True


def supports(*dtypes) -> bool:
    """True when every given torch dtype is one the kernels handle."""
    return all(str(d).replace("torch.", "") in DTYPES for d in dtypes)
