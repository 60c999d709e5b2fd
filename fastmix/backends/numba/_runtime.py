"""Process-wide numba settings and the guard every kernel call goes through.

- Threading layer: unless NUMBA_THREADING_LAYER is set, numba is asked for a *fork-safe* layer.
  On Linux without TBB numba would otherwise pick GNU OpenMP, and a DataLoader worker forked
  after the parent ran a kernel aborts ("fork() called from a process already using GNU
  OpenMP"). With the `tbb` package installed (the `cpu` extra brings it) the fork-safe choice
  is TBB: fork-safe, thread-safe and cheap to launch (~10 us). Without it numba falls back to
  its `workqueue` layer, which costs ~0.1 ms per parallel launch and is not thread-safe (two
  threads launching parallel kernels at once abort the process), hence the lock below.
- Threads: each call uses torch.get_num_threads() threads (at most NUMBA_NUM_THREADS), so a
  DataLoader worker (torch sets 1 thread there) does not oversubscribe the cores.
- Cache: kernels are compiled with cache=True. numba writes the cache beside the source in
  __pycache__ and, when that folder is not writable (a read-only install), in its per-user
  cache dir (e.g. ~/.cache/numba); NUMBA_CACHE_DIR overrides both. Cache files are written
  atomically, so DataLoader workers compiling at the same time do not corrupt them.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "forksafe"

_LOCK = threading.Lock()


@contextlib.contextmanager
def kernel_call():
    """Serialise kernel launches and match numba's thread count to torch's."""
    import torch

    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    with _LOCK:
        if numba.get_num_threads() != threads:
            numba.set_num_threads(threads)
        yield


def serial_variant(kernel, name: str, **options):
    """`kernel`'s Python source compiled without `parallel` (prange runs as range), for callers
    that must not start numba's threads (DALI's worker threads), cached like the kernels: numba
    names a cache entry by the function's qualified name, which the parallel kernel's entry has,
    so the copy gets its own name (`name`)."""
    import types

    source = kernel.py_func
    copy = types.FunctionType(source.__code__, source.__globals__, name, source.__defaults__, source.__closure__)
    copy.__qualname__ = name
    copy.__module__ = source.__module__
    copy.__doc__ = source.__doc__
    return numba.njit(cache=True, nogil=True, **options)(copy)
