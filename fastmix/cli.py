"""Command line: `fastmix demo`, `fastmix bench` (or `python -m fastmix ...`).

Each subcommand is a function `(args, rest) -> exit status` set as the parser default `run`.
A user error (a bad option, no CUDA, a missing optional package) is one line on stderr and exit
status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys


class CommandError(Exception):
    """A user error a subcommand reports as one line."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastmix", description="fused mixed-sample data augmentation")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run every operator on bundled photos and write a PNG grid")
    demo.add_argument("--out", default="fastmix_demo.png", help="where to write the PNG (its folder must exist)")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--size", type=int, default=160, help="side of the square photos in pixels")
    demo.set_defaults(run=_demo)

    # The suite's own parser reads the arguments (`fastmix bench --help` lists them).
    bench = commands.add_parser("bench", add_help=False,
                                help="run the benchmark suite (`fastmix bench --help` lists its flags)")
    bench.set_defaults(run=_bench, passes_rest=True)

    gpu_check = commands.add_parser("gpu-check", help="gpu tests, benchmark targets and memcheck in one run "
                                                      "(source checkout; --dry-run: CPU, tiny sizes)")
    from .gpu_check import add_arguments as add_gpu_check_arguments

    add_gpu_check_arguments(gpu_check)
    gpu_check.set_defaults(run=_gpu_check)

    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "passes_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args, rest)
    except CommandError as exc:
        print(f"fastmix {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _demo(args, rest) -> int:
    from . import demo

    try:
        options = demo.check_options(out=args.out, device=args.device, size=args.size)
    except (ValueError, ImportError) as exc:
        raise CommandError(str(exc)) from None
    demo.main(seed=args.seed, **options)
    return 0


def _bench(args, rest) -> int:
    from .bench import suite

    return suite.main(rest, prog="fastmix bench")


def _gpu_check(args, rest) -> int:
    from .gpu_check import run_from_args

    return run_from_args(args)


if __name__ == "__main__":
    raise SystemExit(main())
