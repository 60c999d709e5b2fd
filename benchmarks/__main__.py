"""`python -m benchmarks --out DIR [--size full|tiny] ...`: the suite with the reference rows (see references.py)."""
from .references import main

raise SystemExit(main())
