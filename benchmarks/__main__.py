"""`python -m benchmarks --out DIR [--size full|tiny] ...`: the whole benchmark suite (see suite.py)."""
from .suite import main

raise SystemExit(main())
