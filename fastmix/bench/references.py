"""The slot for the re-implementations of the official code (reference rows of the suite).

They live in benchmarks/ of the source checkout, not in the package, and the package never
imports that folder: a `benchmarks` package on some user's path could be anything. The
checkout's entry point (`python -m benchmarks`) registers them here; without it their rows are
recorded as skipped with the reason below.
"""
from __future__ import annotations

from typing import Callable

from .peers import Unavailable

NAMES = ("reference_mixup", "reference_cutmix", "reference_saliencymix", "reference_sage_mix", "reference_puzzlemix",
         "reference_comixup", "reference_copy_paste", "reference_sage_step")
MISSING = ("the re-implementations of the official code live in benchmarks/ of the fastmix source checkout; "
           "run `python -m benchmarks` from its root to include this row")

_registered: dict[str, Callable] = {}


def register(**implementations: Callable) -> None:
    unknown = set(implementations) - set(NAMES)
    if unknown:
        raise ValueError(f"unknown reference implementations {sorted(unknown)}; expected some of {NAMES}")
    _registered.update(implementations)


def get(name: str) -> Callable:
    """The registered implementation, or `Unavailable` (the suite records the row as skipped)."""
    if name not in NAMES:
        raise KeyError(name)
    try:
        return _registered[name]
    except KeyError:
        raise Unavailable(MISSING) from None


def registered() -> list[str]:
    return sorted(_registered)


def clear() -> None:
    _registered.clear()
