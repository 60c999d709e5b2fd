"""Compute backends. `pytorch` defines the semantics; GPU backends (Triton, CuPy) sit beside it."""
