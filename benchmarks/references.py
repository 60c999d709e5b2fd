"""`python -m benchmarks`: the packaged suite (`fastmix.bench.suite`, the same as `fastmix bench`)
with this folder's re-implementations of the official code registered, so their rows join the run.

Run it from the repository root:

    python -m benchmarks --out benchmarks/results/<device> [--size full|tiny] [--device cpu|cuda] ...
"""
from __future__ import annotations

from fastmix.bench import references, suite

PROG = "python -m benchmarks"


def register() -> None:
    from .reference_comixup import reference_comixup
    from .reference_copy_paste import reference_copy_paste
    from .reference_mixup_cutmix import reference_cutmix, reference_mixup
    from .reference_puzzlemix import reference_puzzlemix
    from .reference_saliencymix import reference_saliencymix
    from .reference_sage_step import reference_sage_mix, reference_sage_step

    references.register(reference_mixup=reference_mixup, reference_cutmix=reference_cutmix,
                        reference_saliencymix=reference_saliencymix, reference_sage_mix=reference_sage_mix,
                        reference_puzzlemix=reference_puzzlemix, reference_comixup=reference_comixup,
                        reference_copy_paste=reference_copy_paste, reference_sage_step=reference_sage_step)


def main(argv=None) -> int:
    register()
    return suite.main(argv, prog=PROG)
