"""Install metadata and entry points: what a plain `pip install .` gets (no triton, an SPDX licence
with its LICENSE file, a packaged benchmark harness that never imports the checkout's benchmarks/
folder) and the CLI's one-line errors."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmix import cli
from fastmix.bench import references, suite

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TINY_SUBSET = ["--size", "tiny", "--device", "cpu", "--sizes", "cifar", "--operators", "mixup,cutmix",
               "--no-train-step", "--threads", "1", "--quiet"]


def _requirement_names(requirements):
    return {re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_core_dependencies_leave_out_triton():
    core = _requirement_names(PYPROJECT["project"]["dependencies"])
    assert "triton" not in core and {"torch", "numpy"} <= core
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "triton" in _requirement_names(extras["test"])  # the interpreter tests need it
    assert "matplotlib" in _requirement_names(extras["bench"])


def test_license_is_spdx_with_its_file():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert project.get("license-files") == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10_000
    # The SPDX string form needs setuptools 77 (PEP 639); older ones reject it.
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("setuptools")]
    assert re.fullmatch(r"setuptools>=(\d+)", setuptools) and int(setuptools.split(">=")[1]) >= 77


def test_packages_hold_the_harness_and_the_copy_paste_ops():
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    assert "fastmix.bench" in packages and "fastmix.ops" in packages
    assert not (REPO / "fastmix" / "ops_copy_paste.py").exists()
    from fastmix.ops import copy_paste

    assert {"lsj_resample_images", "copy_paste_blend", "fine_grained_saliency"} <= set(copy_paste.__all__)


def test_package_source_never_imports_the_benchmarks_folder():
    offenders = []
    for path in (REPO / "fastmix").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from\s+benchmarks\b|import\s+benchmarks\b)", line) or "sys.path.insert" in line:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_fastmix_bench_runs_outside_a_checkout(tmp_path):
    """From a folder whose `benchmarks` package explodes on import: the run must not touch it,
    the reference rows say where they come from, and the recorded command re-runs as written."""
    decoy = tmp_path / "benchmarks"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise RuntimeError('fastmix imported a benchmarks package')\n")
    out = tmp_path / "results"
    args = ["--out", str(out)] + TINY_SUBSET
    proc = subprocess.run([sys.executable, "-m", "fastmix", "bench"] + args, cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=_env_without_checkout())
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "results.json").read_text())
    command = shlex.split(results["meta"]["command"])
    assert command[:2] == ["fastmix", "bench"] and command[2:] == args
    assert results["meta"]["cwd"] == str(tmp_path)
    rows = results["rows"]
    assert not [r for r in rows if r["status"] == "failed"]
    assert {r["operator"] for r in rows if r["kind"] == "fastmix-pytorch" and r["status"] == "ok"} == {"mixup", "cutmix"}
    reference = [r for r in rows if r["kind"] == "reference"]
    assert reference and all(r["status"] == "skipped" and r["reason"] == references.MISSING for r in reference)


def _env_without_checkout():
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def test_checkout_entry_point_adds_the_reference_rows(tmp_path):
    from benchmarks import references as checkout

    try:
        assert checkout.main(["--out", str(tmp_path)] + TINY_SUBSET) == 0
    finally:
        references.clear()  # later runs in this process see a plain install again
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["meta"]["command"].startswith("python -m benchmarks --out ")
    timed = {(r["operator"], r["kind"]) for r in results["rows"] if r["status"] == "ok"}
    assert {("mixup", "reference"), ("cutmix", "reference")} <= timed


def test_bench_without_matplotlib_skips_the_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert suite.main(["--out", str(tmp_path)] + TINY_SUBSET) == 0
    assert (tmp_path / "results.json").exists() and (tmp_path / "results.md").exists()
    assert not (tmp_path / "throughput.png").exists()
    assert "skipped throughput.png: matplotlib is not installed" in capsys.readouterr().out
    assert "matplotlib" in json.loads((tmp_path / "results.json").read_text())["meta"]["plot_skipped"]


def _one_line_error(capsys, argv, command):
    status = cli.main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith(f"fastmix {command}: error: ") and "Traceback" not in captured.err
    return lines[0]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_demo_on_cuda_without_cuda_is_one_line(capsys, tmp_path, no_cuda):
    line = _one_line_error(capsys, ["demo", "--device", "cuda", "--out", str(tmp_path / "d.png")], "demo")
    assert "no CUDA device" in line and "--device cpu" in line
    assert not (tmp_path / "d.png").exists()


@pytest.mark.parametrize("size", ["0", "-3", "2", "5000"])
def test_demo_bad_size_is_one_line(capsys, tmp_path, size):
    line = _one_line_error(capsys, ["demo", "--size", size, "--out", str(tmp_path / "d.png")], "demo")
    assert "--size" in line and size in line


def test_demo_out_in_a_missing_folder_is_one_line(capsys, tmp_path):
    line = _one_line_error(capsys, ["demo", "--out", str(tmp_path / "missing" / "d.png")], "demo")
    assert "does not exist" in line and str(tmp_path / "missing") in line
    line = _one_line_error(capsys, ["demo", "--out", str(tmp_path)], "demo")
    assert "is a folder" in line


@pytest.mark.parametrize("module, distribution", [("skimage", "scikit-image"), ("matplotlib", "matplotlib")])
def test_demo_missing_optional_package_is_one_line(capsys, tmp_path, monkeypatch, module, distribution):
    monkeypatch.setitem(sys.modules, module, None)  # find_spec and import both see it as absent
    line = _one_line_error(capsys, ["demo", "--out", str(tmp_path / "d.png")], "demo")
    assert distribution in line and "pip install 'fastmix[demo]'" in line


@pytest.mark.parametrize("extra, expected", [
    (["--device", "cuda"], "no CUDA device"),
    (["--device", "tpu"], "cpu or cuda"),
    (["--operators", "mixup,shuffle"], "--operators: unknown ['shuffle']"),
    (["--sizes", "mnist"], "--sizes: unknown ['mnist']"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
])
def test_bench_bad_options_are_one_line(capsys, tmp_path, no_cuda, extra, expected):
    line = _one_line_error(capsys, ["bench", "--out", str(tmp_path / "r"), "--size", "tiny"] + extra, "bench")
    assert expected in line
    assert not (tmp_path / "r").exists()  # refused before any work


def test_bench_out_that_is_a_file_is_one_line(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert "is a file" in _one_line_error(capsys, ["bench", "--out", str(target), "--size", "tiny"], "bench")


def test_console_entry_point_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastmix", "demo", "--size", "0", "--out", str(tmp_path / "d.png")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "fastmix demo: error: --size must be a whole number of pixels from 8 to 1024, got 0"]


@pytest.mark.slow
def test_plain_install_runs_demo_and_bench_outside_the_checkout(tmp_path):
    """`pip install .` of a copy of the tree into a fresh venv (torch and the extras come from
    this environment through --system-site-packages); both commands run from another folder."""
    import shutil

    tree = tmp_path / "src"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for folder in ("fastmix", "kernels"):
        shutil.copytree(REPO / folder, tree / folder, ignore=ignore)
    env = _env_without_checkout()
    # The wheel is built here (this environment's setuptools >= 77; a new venv's own is older),
    # then installed into the venv as any wheel is.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "dist"), str(tree)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("fastmix-*.whl")
    venv = tmp_path / "venv"
    # No pip of its own (seconds saved): this pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True,
                   timeout=300)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                              "--no-deps", str(wheel)], capture_output=True, text=True, timeout=600, env=env)
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import fastmix; print(fastmix.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, timeout=300, env=env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr  # not the checkout's copy
    fastmix_script = str(venv / "bin" / "fastmix")
    bench = subprocess.run([fastmix_script, "bench", "--out", "results"] + TINY_SUBSET, cwd=elsewhere,
                           capture_output=True, text=True, timeout=600, env=env)
    assert bench.returncode == 0, bench.stdout + bench.stderr
    assert json.loads((elsewhere / "results" / "results.json").read_text())["rows"]
    demo = subprocess.run([fastmix_script, "demo", "--size", "16", "--out", "demo.png"], cwd=elsewhere,
                          capture_output=True, text=True, timeout=600, env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert (elsewhere / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
