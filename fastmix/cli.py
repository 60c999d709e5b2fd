"""Command line: `fastmix demo` (or `python -m fastmix demo`)."""
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
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as run_demo

        run_demo(out=args.out, device=args.device, seed=args.seed, size=args.size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
