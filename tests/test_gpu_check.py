"""`python -m fastmix gpu-check --dry-run`: every step runs on the CPU at tiny sizes (the gpu tests
collected and skipped, the kernel and Copy-Paste benchmarks at their smoke sizes, the
one-call-per-kernel memcheck payload under the Triton interpreter), the output respects the
limits the GPU machine sets (at most 8 files, none over 16 MiB, two folders deep) and the
summary reports every step and target.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastmix import cli, gpu_check

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run([sys.executable, "-m", "fastmix", "gpu-check", "--out", str(out), "--dry-run"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    return out, run


def test_dry_run_writes_at_most_8_small_files_two_folders_deep(dry_run):
    out, run = dry_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 3 <= len(files) <= 8, files
    for path in files:
        assert path.stat().st_size < 16 << 20
        assert len(path.relative_to(out).parts) <= 3  # out/logs/file: two folders down from $OUT at most
    names = {p.relative_to(out).as_posix() for p in files}
    assert {"results.json", "results.md", "logs/tests.xml", "logs/tests.log", "logs/kernels.log",
            "logs/copy_paste.log", "logs/memcheck.log"} <= names
    assert not any(p.name.startswith(".") for p in out.rglob("*")), "temporary files left behind"


def test_dry_run_reports_every_step_and_target(dry_run):
    out, run = dry_run
    summary = json.loads((out / "results.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["tests", "kernels", "copy_paste", "memcheck"]
    assert summary["environment"]["dry_run"] is True
    # The CPU steps ran to completion; what needs CUDA is reported as skipped, not as passed.
    for name in ("kernels", "copy_paste", "memcheck"):
        assert steps[name]["status"] == "skipped", steps[name]
    assert "Triton interpreter" in steps["memcheck"]["detail"]
    targets = [t for s in summary["steps"] for t in s["targets"]]
    assert len(targets) >= 10 and all(t["passed"] is None for t in targets)
    assert any("K=1998" in t["target"] for t in targets) and any("Copy-Paste" in t["target"] for t in targets)
    kernels_rows = steps["kernels"]["data"]["rows"]
    assert kernels_rows and all(r["median_ms"] and r["median_ms"] > 0 for r in kernels_rows if not r.get("error"))
    # The tests step ran pytest on the gpu-marked files: its junit counts agree with its status.
    counts = steps["tests"]["data"]
    assert counts["tests"] > 0
    broken = counts["failures"] + counts["errors"]
    assert steps["tests"]["status"] == ("failed" if broken else "skipped"), steps["tests"]
    assert summary["passed"] == (not broken) and run.returncode == (1 if broken else 0)
    # One screen: a line per step and target plus the verdict.
    screen = run.stdout.strip().splitlines()
    assert screen[-1] == f"OVERALL: {'FAIL' if broken else 'PASS'}" and len(screen) <= 40
    assert "| memcheck | SKIPPED |" in (out / "results.md").read_text()


def test_gpu_check_is_a_cli_subcommand_with_checked_steps(capsys):
    with pytest.raises(SystemExit):
        cli.main(["gpu-check", "--help"])
    assert "--dry-run" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["gpu-check", "--out", "x", "--steps", "tests,nonsense"])
    assert "unknown steps ['nonsense']" in capsys.readouterr().err


def test_logs_are_cut_to_their_last_4_mib(tmp_path):
    log = tmp_path / "big.log"
    log.write_bytes(b"x" * (gpu_check.LOG_LIMIT + 1000) + b"THE END")
    gpu_check._truncate(log)
    assert log.stat().st_size < gpu_check.LOG_LIMIT + 200 and log.read_bytes().endswith(b"THE END")


def test_a_step_that_times_out_or_crashes_does_not_stop_the_run(tmp_path, monkeypatch):
    def crash(out, logs, dry_run, limit):
        raise RuntimeError("boom")

    monkeypatch.setattr(gpu_check, "step_kernels", crash)
    monkeypatch.setattr(gpu_check, "STEP_LIMITS_S", dict(gpu_check.STEP_LIMITS_S, memcheck=0.01))
    summary = gpu_check.run(tmp_path, dry_run=False, steps=("kernels", "memcheck"), budget_s=60)
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["kernels"]["status"] == "failed" and "boom" in steps["kernels"]["detail"]
    assert steps["memcheck"]["status"] in ("failed", "skipped")  # ran (and timed out, or had no sanitizer)
    assert summary["passed"] is False
    assert (tmp_path / "results.md").exists()


def test_plot_shows_each_measured_target(tmp_path):
    step = gpu_check.Step("kernels", targets=[
        {"target": "SAGE whole op ms <=", "limit": 25.0, "value": 12.5, "passed": True},
        {"target": "speedup >=", "limit": 100.0, "value": 60.0, "passed": False},
        {"target": "not measured <=", "limit": 2.0, "value": None, "passed": None}])
    assert gpu_check.write_plot(tmp_path / "targets.png", [step]) == "targets.png"
    assert (tmp_path / "targets.png").stat().st_size > 1000
    assert gpu_check.write_plot(tmp_path / "none.png", [gpu_check.Step("tests")]) is None
