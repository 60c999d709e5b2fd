"""Process-wide numba settings and the guard every kernel call goes through.

- Threading layer: unless NUMBA_THREADING_LAYER is set, numba is asked for a *fork-safe* layer.
  On Linux without TBB numba would otherwise pick GNU OpenMP, and a DataLoader worker forked
  after the parent ran a kernel aborts ("fork() called from a process already using GNU
  OpenMP"). The fork-safe choice there is numba's `workqueue` layer, which is not thread-safe
  (two threads launching parallel kernels at once abort the process), hence the lock below.
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
