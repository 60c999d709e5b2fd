"""The benchmark harness behind `fastmix bench`: suite, timing, workloads, report and plot.

It runs from a plain install. The re-implementations of the official code (benchmarks/ in the
source checkout) are not part of the package; `python -m benchmarks` registers them through
`fastmix.bench.references` and their rows join the run, otherwise they are recorded as skipped.
"""
