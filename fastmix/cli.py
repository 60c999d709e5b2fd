"""Command line: `fastmix demo` and `fastmix bench` (or `python -m fastmix ...`)."""
from __future__ import annotations

import argparse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastmix", description="fused mixed-sample data augmentation")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run every operator on bundled photos and write a PNG grid")
    demo.add_argument("--out", default="fastmix_demo.png", help="where to write the PNG")
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--size", type=int, default=160, help="side of the square photos in pixels")
    # The suite lives in benchmarks/ of a source checkout; its own parser reads the arguments.
    commands.add_parser("bench", add_help=False,
                        help="run the benchmark suite (source checkout; `fastmix bench --help` lists its flags)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        try:
            run_bench = _benchmark_suite()
        except ImportError as exc:
            parser.error(f"fastmix bench needs the benchmarks/ folder of a fastmix source checkout on the path "
                         f"(run it from the repository root): {exc}")
        return run_bench(rest, prog="fastmix bench")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "demo":
        from .demo import main as run_demo

        run_demo(out=args.out, device=args.device, seed=args.seed, size=args.size)
    return 0


def _benchmark_suite():
    """benchmarks.suite.main from the source checkout this fastmix comes from, or the current folder
    (a console script does not put either on sys.path)."""
    import sys
    from pathlib import Path

    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "benchmarks" / "suite.py").is_file() and str(root) not in sys.path:
            sys.path.insert(0, str(root))
    from benchmarks.suite import main

    return main


if __name__ == "__main__":
    raise SystemExit(main())
