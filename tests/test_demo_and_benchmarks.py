"""The README's main job and the CPU SAGE benchmark, run at a tiny size (no timing assertions)."""
import subprocess
import sys

from benchmarks import bench_sage_reference


def test_demo_writes_png(tmp_path):
    out = tmp_path / "demo.png"
    proc = subprocess.run([sys.executable, "-m", "fastmix", "demo", "--out", str(out), "--size", "48"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in proc.stdout
    for name in ("Mixup", "CutMix", "CutOut", "SaliencyMix", "SAGE"):
        assert name in proc.stdout


def test_sage_benchmark_reports_identical_outputs_at_tiny_size():
    row = bench_sage_reference.run_case(4, 3, 12, 0.05, repeats=1, device=__import__("torch").device("cpu"))
    assert row["identical_shifts"] and row["max_image_diff"] < 1e-5
    assert row["K"] == int(23 * 23 * 0.05)
