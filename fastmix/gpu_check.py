"""`python -m fastmix gpu-check --out DIR`: everything a session with a GPU should run, in one
command, within about 8 minutes on one H100 / H200.

Steps (each in its own subprocess with its own time limit, so a crash, a hang or a dead CUDA
context of one step never stops the others; the run never stops at the first failure):

1. tests      the gpu-marked tests (`pytest -m gpu`), junit XML and text log.
2. kernels    benchmarks/bench_kernels.py at the issue sizes: SAGE whole op ImageNet B=256
              3x224x224 K=1998 < 25 ms; exhaustive search CIFAR B=100 32x32 < 2 ms; Mixup / CutMix /
              SAGE blends within 1.5x of the bandwidth floor measured in the same run; SAGE >= 100x
              the reference structure (per-image loop of grid_samples).
3. copy_paste benchmarks/bench_copy_paste.py: batched Copy-Paste on the GPU (CuPy kernels) >= 50x
              the per-image CPU path (mmdetection-structured NumPy reference).
4. memcheck   `compute-sanitizer --tool memcheck` over one small call of every Triton kernel and
              every CuPy kernel (`python -m fastmix.gpu_check --one-call-per-kernel`).

Output (at most 8 files, two folders deep): DIR/results.json, DIR/results.md, DIR/targets.png
and DIR/logs/{tests.xml, tests.log, kernels.log, copy_paste.log, memcheck.log}; each log keeps
its last 4 MiB. A one-screen summary with pass / fail per step and target goes to stdout; the
exit status is 0 only when nothing failed.

`--dry-run` runs every step on the CPU at tiny sizes so the script itself is tested in CI: the
tests step collects the gpu tests (skipped without CUDA), the benchmarks run their tiny smoke
sizes on the PyTorch path, the one-call-per-kernel payload runs the Triton kernels under the
interpreter (and its Copy-Paste / saliency calls on the PyTorch path); CUDA-only parts (the
CuPy kernels, compute-sanitizer, the targets) are reported as skipped. The benchmarks live in
the source checkout (benchmarks/): run from the repository root with the project on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 8 * 60
LOG_LIMIT = 4 << 20
STEP_LIMITS_S = {"tests": 200, "kernels": 150, "copy_paste": 70, "memcheck": 50}
DRY_LIMITS_S = {"tests": 300, "kernels": 300, "copy_paste": 120, "memcheck": 300}
TARGETS = {"copy_paste_vs_per_image_cpu": 50.0}
STEPS = ("tests", "kernels", "copy_paste", "memcheck")


@dataclass
class Step:
    name: str
    status: str = "skipped"          # passed, failed, skipped
    seconds: float = 0.0
    detail: str = ""
    targets: list = field(default_factory=list)
    data: dict = field(default_factory=dict)


# --- helpers -------------------------------------------------------------------------------------

def _env(dry_run: bool) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("PYTHONUNBUFFERED", "1")
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""      # the dry run never touches a GPU, even where there is one
        env["TRITON_INTERPRET"] = "1"
    return env


def _run(command: list[str], log: Path, limit_s: float, env: dict) -> tuple[int | None, float]:
    """(return code or None on timeout, seconds); stdout + stderr go to `log` (its last LOG_LIMIT bytes)."""
    start = time.perf_counter()
    with open(log, "ab") as handle:
        handle.write(f"$ {' '.join(command)}\n".encode())
        handle.flush()
        try:
            process = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                     timeout=max(1.0, limit_s))
            code = process.returncode
        except subprocess.TimeoutExpired:
            handle.write(f"\n!!! timed out after {limit_s:.0f} s\n".encode())
            code = None
    _truncate(log)
    return code, time.perf_counter() - start


def _truncate(path: Path) -> None:
    if path.exists() and path.stat().st_size > LOG_LIMIT:
        data = path.read_bytes()[-LOG_LIMIT:]
        path.write_bytes(b"[... earlier output cut to keep the log under 4 MiB ...]\n" + data)


def _tail(path: Path, lines: int = 3) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return " / ".join(line.strip() for line in text[-lines:])[:300]


def _device_info(dry_run: bool) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "dry_run": dry_run}
    for module in ("triton", "cupy", "timm", "torchvision"):
        try:
            info[module] = __import__(module).__version__
        except Exception as exc:  # missing, or broken on this machine
            info[module] = f"unavailable ({type(exc).__name__})"
    if not dry_run and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = props.name
        info["capability"] = f"{props.major}.{props.minor}"
        info["memory_GiB"] = round(props.total_memory / 2**30, 1)
    else:
        info["device"] = "cpu (dry run)" if dry_run else "cpu (no CUDA device)"
    return info


# --- steps ---------------------------------------------------------------------------------------

def step_tests(out: Path, logs: Path, dry_run: bool, limit: float) -> Step:
    step = Step("tests")
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text(encoding="utf-8", errors="replace"))
    if not files:
        step.detail = "no gpu-marked tests found (tests/ is in the source checkout)"
        return step
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        step.status = "failed"
        step.detail = ("pytest is not importable: install it, or on a machine without network put a copy on "
                       "PYTHONPATH (pip install --target DIR pytest elsewhere, then carry DIR)")
        return step
    xml = logs / "tests.xml"
    code, step.seconds = _run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                               f"--junitxml={xml}", *files], logs / "tests.log", limit, _env(dry_run))
    counts = _junit_counts(xml)
    step.data = counts
    step.detail = (f"{counts.get('tests', 0)} tests: {counts.get('failures', 0)} failed, {counts.get('errors', 0)} "
                   f"errors, {counts.get('skipped', 0)} skipped" if counts else _tail(logs / "tests.log"))
    if code is None:
        step.status, step.detail = "failed", f"timed out after {limit:.0f} s; {step.detail}"
    elif code not in (0, 5):  # 5: nothing collected / everything deselected
        step.status = "failed"
    elif dry_run or counts.get("tests", 0) == counts.get("skipped", 0):
        step.status = "skipped" if dry_run else "failed"
        step.detail += " (no CUDA: the gpu tests were skipped)" if dry_run else " (every gpu test was skipped)"
    else:
        step.status = "passed"
    return step


def _junit_counts(xml: Path) -> dict:
    if not xml.exists():
        return {}
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return {}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {}
    for suite in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            counts[key] = counts.get(key, 0) + int(suite.get(key, 0))
    return counts


def _run_benchmark(step: Step, module: str, arguments: list[str], result: Path, logs: Path, dry_run: bool,
                   limit: float, pattern: str | None = None):
    """Run benchmarks/<module>.py (log: logs/<step>.log) and take the JSON it wrote: the file
    `result`, or the first match of `pattern` in the folder `result`, removed after reading.
    (exit code or None on timeout, results); results None (the step failed or was skipped, its
    detail says why) when the benchmark is absent or wrote nothing readable."""
    if not (REPO / "benchmarks" / f"{module}.py").is_file():
        step.detail = "benchmarks/ is not here (run from a source checkout)"
        return None, None
    log = logs / f"{step.name}.log"
    code, step.seconds = _run([sys.executable, "-m", f"benchmarks.{module}", *arguments], log, limit, _env(dry_run))
    try:
        if pattern is None:
            results = json.loads(result.read_text())
        else:
            found = sorted(result.glob(pattern)) if result.exists() else []
            results = json.loads(found[0].read_text()) if found else None
    except (OSError, ValueError):
        results = None
    if result.is_dir():
        shutil.rmtree(result, ignore_errors=True)
    else:
        result.unlink(missing_ok=True)
    if results is None:
        step.status = "failed"
        step.detail = f"no results ({'timed out' if code is None else f'exit {code}'}): {_tail(log)}"
    return code, results


def _settle(step: Step, failed: bool, dry_run: bool, dry_note: str) -> Step:
    """A benchmark step's status: failed, else passed, or skipped in a dry run (which measures
    nothing: `dry_note` says so in the detail)."""
    if failed:
        step.status = "failed"
    else:
        step.status = "skipped" if dry_run else "passed"
        if dry_run:
            step.detail += dry_note
    return step


def step_kernels(out: Path, logs: Path, dry_run: bool, limit: float) -> Step:
    step = Step("kernels")
    work = out / ".kernels"
    # On the GPU only the Triton rows (the targets are theirs) and the reference structure: the
    # PyTorch-path rows at ImageNet size would not fit the 8 minutes.
    options = (["--device", "cpu", "--size", "tiny", "--backends", "pytorch"] if dry_run
               else ["--device", "cuda", "--backends", "triton"])
    code, results = _run_benchmark(step, "bench_kernels", [str(work), *options], work, logs, dry_run, limit,
                                   pattern="kernels_*.json")
    if results is None:
        return step
    step.data = {"meta": results.get("meta", {}), "rows": [
        {k: r.get(k) for k in ("op", "size", "dtype", "backend", "median_ms", "floor_ms", "floor_fraction",
                               "speedup_vs_pytorch", "note", "error")} for r in results.get("rows", [])]}
    step.targets = [{"target": t["target"], "limit": t["limit"], "value": t["value"],
                     "passed": None if dry_run else t["passed"]} for t in results.get("targets", [])]
    failed_rows = [r for r in results.get("rows", []) if "error" in r]
    missed = [t for t in step.targets if t["passed"] is False]
    unmeasured = [t for t in step.targets if t["passed"] is None]
    step.detail = (f"{len(results.get('rows', []))} rows, {len(failed_rows)} failed; targets: "
                   f"{sum(t['passed'] is True for t in step.targets)} met, {len(missed)} missed, "
                   f"{len(unmeasured)} not measured")
    return _settle(step, code != 0 or bool(failed_rows or missed) or (not dry_run and bool(unmeasured)), dry_run,
                   " (dry run: tiny sizes prove nothing about the targets)")


def step_copy_paste(out: Path, logs: Path, dry_run: bool, limit: float) -> Step:
    step = Step("copy_paste")
    report = out / ".copy_paste.json"
    if dry_run:
        options = ["--devices", "cpu", "--batch", "2", "--size", "96", "--instances", "3", "--repeats", "1"]
    else:
        # The per-image CPU reference always runs; of fastmix only the GPU rows are needed.
        options = ["--devices", "cuda", "--batch", "8", "--size", "1024", "--instances", "20", "--repeats", "3"]
    code, results = _run_benchmark(step, "bench_copy_paste", [*options, "--json", str(report)], report, logs,
                                   dry_run, limit)
    if results is None:
        return step
    rows = _copy_paste_rows(results)
    step.data = {"rows": rows}
    gpu = [r for r in rows if str(r.get("device", "")).startswith("cuda") and "cupy" in str(r.get("implementation"))]
    speedup = max((r["speedup_vs_reference"] for r in gpu if r.get("speedup_vs_reference")), default=None)
    limit_x = TARGETS["copy_paste_vs_per_image_cpu"]
    step.targets = [{"target": "Copy-Paste on the GPU (CuPy) vs the per-image CPU path: speedup >=",
                     "limit": limit_x, "value": speedup,
                     "passed": None if dry_run or speedup is None else speedup >= limit_x}]
    mismatched = [r for r in rows if r.get("masks_boxes_labels_identical") is False]
    step.detail = f"{len(rows)} rows; GPU speedup {'not measured' if speedup is None else f'{speedup:.1f}x'}"
    if mismatched:
        step.detail += f"; {len(mismatched)} rows differ from the reference"
    return _settle(step, code != 0 or bool(mismatched) or (not dry_run and step.targets[0]["passed"] is not True),
                   dry_run, " (dry run: CPU only, no target)")


def _copy_paste_rows(results) -> list[dict]:
    rows = results.get("rows", []) if isinstance(results, dict) else []
    keep = ("implementation", "device", "median_s", "speedup_vs_reference", "masks_boxes_labels_identical",
            "max_image_diff")
    return [{k: r.get(k) for k in keep if k in r} for r in rows if isinstance(r, dict)]


def compute_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "compute-sanitizer").is_file():
            return str(Path(root) / "bin" / "compute-sanitizer")
    return None


def step_memcheck(out: Path, logs: Path, dry_run: bool, limit: float) -> Step:
    step = Step("memcheck")
    payload = [sys.executable, "-m", "fastmix.gpu_check", "--one-call-per-kernel"]
    log = logs / "memcheck.log"
    if dry_run:
        code, step.seconds = _run(payload + ["--device", "cpu"], log, limit, _env(True))
        step.status = "failed" if code != 0 else "skipped"
        step.detail = ("payload ran on the CPU (Triton interpreter; the CuPy calls on the PyTorch path); "
                       "compute-sanitizer skipped in a dry run"
                       if code == 0 else f"payload failed: {_tail(log)}")
        return step
    sanitizer = compute_sanitizer()
    if sanitizer is None:
        code, step.seconds = _run(payload + ["--device", "cuda"], log, limit, _env(False))
        step.status = "failed" if code != 0 else "skipped"
        step.detail = ("compute-sanitizer not found (CUDA toolkit); the payload ran without it"
                       if code == 0 else f"payload failed: {_tail(log)}")
        return step
    code, step.seconds = _run([sanitizer, "--tool", "memcheck", "--error-exitcode", "86", "--print-limit", "20",
                               *payload, "--device", "cuda"], log, limit, _env(False))
    step.status = "passed" if code == 0 else "failed"
    step.detail = {0: "no memory errors", 86: "memcheck found errors", None: f"timed out after {limit:.0f} s"}.get(
        code, f"exit {code}: {_tail(log)}")
    return step


# --- the memcheck payload: one small call per kernel ---------------------------------------------

def one_call_per_kernel(device: str) -> list[str]:
    """Run every Triton kernel (and on CUDA every CuPy kernel) once on small inputs; names run."""
    import torch

    from fastmix import ops
    from fastmix.backends.pytorch import sage as torch_sage

    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    ran = []
    x = torch.rand(3, 3, 9, 11, generator=gen).to(dev)
    perm, lam = torch.tensor([2, 0, 1], device=dev), torch.rand(3, generator=gen).to(dev)
    boxes = torch.tensor([[1, 5, 2, 9], [0, 9, 0, 11], [3, 3, 4, 4]], device=dev)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        ops.mixup_blend(xl, perm, lam, backend="triton")
        ops.box_paste(xl, perm, boxes, backend="triton")
        ops.box_fill(xl, boxes, 0.0, backend="triton")
        g1, g2 = ops.sage_saliency(xl, perm, lam, 3, 1.0, backend="triton")
        ops.sage_scores(g1, g2, torch_sage.all_shifts(9, 11, device=dev), backend="triton")
        ops.sage_mask_blend(xl, perm, g1, g2, torch.tensor([[1, -2], [0, 0], [-8, 10]], device=dev),
                            backend="triton")
    ran += ["triton: mixup, box paste, box fill, saliency (3 kernels), scores (2 kernels), mask blend"]
    # The CuPy kernels need CUDA; on the CPU the same calls run the PyTorch path, which checks
    # the payload itself.
    from fastmix.copy_paste import InstanceBatch, copy_paste
    from fastmix.ops import copy_paste as copy_paste_ops

    backend = "cupy" if dev.type == "cuda" else "pytorch"
    copy_paste_ops.fine_grained_saliency(
        torch.randint(0, 256, (2, 3, 33, 40), generator=gen, dtype=torch.uint8).to(dev), backend=backend)
    images = [torch.randint(0, 256, (3, 40 + 3 * i, 48), generator=gen, dtype=torch.uint8).to(dev) for i in range(3)]
    masks = [(torch.rand(2, 40 + 3 * i, 48, generator=gen) > 0.7).to(dev) for i in range(3)]
    labels = [torch.tensor([1, 2], device=dev) for _ in range(3)]
    batch = InstanceBatch.from_lists(images, masks, labels=labels)
    for blend in ("hard", "gaussian"):
        copy_paste(batch, output_size=(48, 48), blend=blend, generator=torch.Generator().manual_seed(1),
                   backend=backend)
    ran += [f"{backend}: fine-grained saliency, copy-paste (resample, occlusion, blend, boxes)"]
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return ran


# --- report --------------------------------------------------------------------------------------

def write_plot(path: Path, steps: list[Step]) -> str | None:
    """Measured / limit per target on a log axis (1 is the limit); None when nothing to plot."""
    points = []
    for step in steps:
        for t in step.targets:
            if t["value"] and t["limit"]:
                higher_is_better = ">=" in t["target"]
                ratio = t["value"] / t["limit"] if higher_is_better else t["limit"] / t["value"]
                points.append((t["target"][:60], ratio))
    if not points:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axis = plt.subplots(figsize=(9, 0.45 * len(points) + 1.2))
    names = [p[0] for p in points]
    values = [p[1] for p in points]
    rows = range(len(points))
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    axis.hlines(rows, 1.0, values, colors=colors, linewidth=3)
    axis.scatter(values, rows, color=colors, zorder=3)
    axis.set_yticks(list(rows), names)
    axis.axvline(1.0, color="black", linewidth=1)
    low, high = min(values + [1.0]), max(values + [1.0])
    axis.set_xlim(low / 1.5, high * 1.5)
    axis.set_xscale("log")
    axis.set_xlabel("margin over the target (> 1: met)")
    axis.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def markdown(summary: dict) -> str:
    info = summary["environment"]
    lines = [f"# fastmix gpu-check on {info.get('device')}", "",
             f"{summary['date']}, {summary['seconds']:.0f} s, "
             f"{'dry run (CPU, tiny sizes)' if info['dry_run'] else 'GPU run'}; "
             + ", ".join(f"{k} {info[k]}" for k in ("python", "torch", "cuda", "triton", "cupy") if info.get(k)), "",
             "| step | status | seconds | detail |", "|---|---|---|---|"]
    for s in summary["steps"]:
        lines.append(f"| {s['name']} | {s['status'].upper()} | {s['seconds']:.0f} | {s['detail']} |")
    lines += ["", "| target | limit | measured | verdict |", "|---|---|---|---|"]
    for s in summary["steps"]:
        for t in s["targets"]:
            verdict = {True: "PASS", False: "FAIL", None: "not measured"}[t["passed"]]
            value = "-" if t["value"] is None else f"{t['value']:.3g}"
            lines.append(f"| {t['target']} | {t['limit']} | {value} | {verdict} |")
    lines += ["", f"**Overall: {'PASS' if summary['passed'] else 'FAIL'}**"]
    return "\n".join(lines) + "\n"


def run(out: Path, *, dry_run: bool = False, steps=STEPS,
        budget_s: float = BUDGET_S) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    for old in logs.glob("*"):
        old.unlink()
    limits = DRY_LIMITS_S if dry_run else STEP_LIMITS_S
    functions = {"tests": step_tests, "kernels": step_kernels, "copy_paste": step_copy_paste,
                 "memcheck": step_memcheck}
    start = time.perf_counter()
    done: list[Step] = []
    for name in steps:
        left = budget_s - (time.perf_counter() - start) if not dry_run else limits[name]
        if left < 10:
            done.append(Step(name, "failed", 0.0, "no time left in the budget"))
            continue
        try:
            done.append(functions[name](out, logs, dry_run, min(limits[name], left)))
        except Exception as exc:  # a broken step is a result, not the end of the run
            done.append(Step(name, "failed", 0.0, f"{type(exc).__name__}: {exc}"))
    summary = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seconds": time.perf_counter() - start,
               "environment": _device_info(dry_run),
               "steps": [vars(s) for s in done],
               "passed": not any(s.status == "failed" for s in done)}
    summary["plot"] = write_plot(out / "targets.png", done)
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "results.md").write_text(markdown(summary))
    return summary


def screen(summary: dict) -> str:
    lines = [f"fastmix gpu-check: {summary['environment'].get('device')}  ({summary['seconds']:.0f} s)"]
    for s in summary["steps"]:
        lines.append(f"  {s['status'].upper():7s} {s['name']:11s} {s['seconds']:5.0f} s  {s['detail'][:100]}")
        for t in s["targets"]:
            verdict = {True: "PASS", False: "FAIL", None: "----"}[t["passed"]]
            value = "-" if t["value"] is None else f"{t['value']:.3g}"
            lines.append(f"      {verdict}  {t['target'][:70]} {t['limit']} (measured {value})")
    lines.append(f"OVERALL: {'PASS' if summary['passed'] else 'FAIL'}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="results folder (results.json, results.md, "
                                                                  "targets.png, logs/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every step on the CPU at tiny sizes (CI check of this script)")
    parser.add_argument("--steps", default=",".join(STEPS), type=_steps,
                        help=f"comma-separated subset of {','.join(STEPS)}")


def _steps(text: str) -> tuple:
    steps = tuple(s for s in text.split(",") if s)
    unknown = sorted(set(steps) - set(STEPS))
    if unknown or not steps:
        raise argparse.ArgumentTypeError(f"unknown steps {unknown}; choose from {','.join(STEPS)}")
    return steps


def run_from_args(args) -> int:
    summary = run(args.out, dry_run=args.dry_run, steps=args.steps)
    print(screen(summary))
    return 0 if summary["passed"] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmix.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--one-call-per-kernel", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    known, rest = parser.parse_known_args(argv)
    if known.one_call_per_kernel:
        if known.device == "cpu":  # Triton kernels on CPU tensors run under the interpreter
            os.environ.setdefault("TRITON_INTERPRET", "1")
        for line in one_call_per_kernel(known.device):
            print(line)
        return 0
    full = argparse.ArgumentParser(prog="fastmix gpu-check", description=__doc__.splitlines()[0])
    add_arguments(full)
    return run_from_args(full.parse_args(rest))


if __name__ == "__main__":
    sys.exit(main())
