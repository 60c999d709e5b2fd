"""benchmarks/bench_kernels.py runs end to end at its tiny size on the CPU and writes its files.

Only the PyTorch-path and reference rows run here: the Triton rows would run in the interpreter
for minutes (the kernels themselves are tested in test_triton_*.py); on a GPU the same script
times both paths at the full sizes.
"""
import json

from benchmarks import bench_kernels


def test_bench_kernels_smoke(tmp_path):
    status = bench_kernels.main([str(tmp_path), "--device", "cpu", "--size", "tiny", "--backends", "pytorch"])
    assert status == 0
    (json_path,) = tmp_path.glob("kernels_*.json")
    results = json.loads(json_path.read_text())
    ops = {(r["op"], r["size"], r["backend"]) for r in results["rows"]}
    assert ("sage (reference structure)", "cifar", "reference") in ops
    assert ("mixup_blend", "imagenet", "pytorch") in ops
    assert all(r["median_ms"] > 0 for r in results["rows"])
    assert results["meta"]["copy_bandwidth"]["GB_per_s"] > 0
    assert all(target["passed"] is None for target in results["targets"])  # tiny sizes prove nothing
    assert "## Targets" in json_path.with_suffix(".md").read_text()
