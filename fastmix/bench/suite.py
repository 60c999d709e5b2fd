"""The benchmark suite: every contender of every operator and size, then the training-step
overhead, on the device it finds; results written as JSON, a markdown table and a PNG plot.

    fastmix bench --out RESULTS_DIR [--size full|tiny] [--device cpu|cuda] ...
    python -m benchmarks --out RESULTS_DIR ...   (source checkout: adds the reference re-implementations)

Results record the command that re-runs them as written. The plot needs matplotlib (the `bench`
extra); without it the run still writes the JSON and markdown and says the plot was skipped.

A contender that fails is recorded as failed with its error and the run goes on; one that
cannot run here (a missing package, not enough memory) is recorded as skipped with the reason.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import environment
from .bandwidth import measure_copy_bandwidth
from .contenders import Task, classification_tasks, copy_paste_tasks, reference_sage_peak_bytes
from .peers import Unavailable
from .timing import input_set_count, time_calls
from .train_step import STEP_CONTENDERS, build_model
from .workloads import SIZES, ClassificationSize, classification_inputs, instance_inputs

OPERATORS = ("mixup", "cutmix", "cutout", "saliencymix", "sage", "copy_paste")


@dataclass
class Settings:
    size: str = "full"
    warmup: int = 1
    repeats: int = 10
    min_repeats: int = 3
    budget_s: float = 10.0
    max_input_sets: int = 32
    operators: tuple = OPERATORS
    sizes: tuple = ("cifar", "imagenet", "coco")
    train_step: bool = True

    @classmethod
    def defaults(cls, size: str, device: torch.device) -> "Settings":
        if size == "tiny":
            return cls(size="tiny", warmup=1, repeats=2, min_repeats=1, budget_s=0.5, max_input_sets=2)
        if device.type == "cuda":
            return cls(size="full", warmup=3, repeats=50, min_repeats=3, budget_s=3.0, max_input_sets=32)
        return cls(size="full", warmup=1, repeats=10, min_repeats=3, budget_s=8.0, max_input_sets=8)


@dataclass
class Context:
    device: torch.device
    settings: Settings
    _inputs: dict = field(default_factory=dict)
    _pools: dict = field(default_factory=dict)

    def inputs(self, size) -> list[dict]:
        if size.name not in self._inputs:
            self._inputs.clear()  # one size's inputs at a time: ImageNet and COCO sets are large
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if isinstance(size, ClassificationSize):
                set_bytes = 2 * size.image_bytes()  # images + input gradient
                build = classification_inputs
            else:
                set_bytes = size.image_bytes() + size.mask_bytes()
                build = instance_inputs
            cap = environment.available_memory_bytes(self.device) // 8
            count = input_set_count(set_bytes, environment.cache_bytes(self.device), maximum=self.settings.max_input_sets,
                                    memory_cap_bytes=cap)
            self._inputs[size.name] = build(size, count, self.device)
        return self._inputs[size.name]

    def process_pool(self, processes: int):
        """A spawned pool, made once per size of pool (spawn: safe after CUDA is initialised)."""
        if processes not in self._pools:
            import multiprocessing
            self._pools[processes] = multiprocessing.get_context("spawn").Pool(processes)
        return self._pools[processes]

    def close(self):
        for pool in self._pools.values():
            pool.terminate()
        self._pools.clear()
        self._inputs.clear()


def build_tasks(settings: Settings, device: torch.device) -> list[Task]:
    sizes = SIZES[settings.size]
    cpu_full = device.type == "cpu" and settings.size == "full"
    tasks: list[Task] = []
    for name in settings.sizes:
        size = sizes[name]
        if isinstance(size, ClassificationSize):
            tasks += [t for t in classification_tasks(size, device, cpu_full=cpu_full) if t.operator in settings.operators]
        elif "copy_paste" in settings.operators:
            tasks += copy_paste_tasks(size, device)
    if settings.train_step:
        tasks += train_step_tasks(settings, device)
    return tasks


def train_step_tasks(settings: Settings, device: torch.device) -> list[Task]:
    sizes = SIZES[settings.size]
    tasks = []
    for name in ("cifar", "imagenet"):
        if name not in settings.sizes:
            continue
        size = sizes[name]
        width = 8 if settings.size == "tiny" else 64
        skip = None
        if device.type == "cpu" and settings.size == "full" and name == "imagenet":
            skip = "ImageNet-size ResNet-18 steps are left out on the CPU to keep the CPU run to minutes"
        for contender in STEP_CONTENDERS:
            def prepare(ctx, contender=contender, size=size, width=width):
                model, optimizer = build_model(size.num_classes, size.side <= 64, width, ctx.device)
                return contender.make_step(model, optimizer, size.num_classes)
            reference = contender.kind == "reference"
            tasks.append(Task("train_step", name, contender.operator, contender.contender, contender.kind,
                              "reference structure" if reference else f"fastmix {_version()}", prepare=prepare,
                              skip_reason=skip, memory_bytes=reference_sage_peak_bytes(size.side) if reference else None,
                              note=f"ResNet-18 ({'CIFAR' if size.side <= 64 else 'ImageNet'} stem, width {width}), SGD"))
    return tasks


def _version() -> str:
    import fastmix
    return fastmix.__version__


def _slice_set(input_set: dict, count: int) -> dict:
    return {k: (v[:count] if k in ("x", "y", "grad") else v) for k, v in input_set.items()}


def _private_copies(input_sets: list[dict]) -> list[dict]:
    """Contenders that mix in place get their own images, so the shared inputs stay untouched."""
    return [{**s, "x": s["x"].clone()} for s in input_sets]


def run_task(task: Task, ctx: Context, size) -> dict:
    """Time one task; never raises (the row says ok / skipped / failed / same_as)."""
    row = {"suite": task.suite, "size": task.size, "size_label": size.label, "operator": task.operator,
           "contender": task.contender, "kind": task.kind, "library": task.library, "note": task.note,
           "device": ctx.device.type, "dtype": "uint8" if task.operator == "copy_paste" else "float32",
           "shape": size.shape, "floor_bytes": task.floor_bytes, "batch": size.batch, "timed_batch": size.batch,
           "extrapolated": False, "torch": torch.__version__}
    if task.skip_reason:
        return {**row, "status": "skipped", "reason": task.skip_reason}
    if task.same_as:
        return {**row, "status": "same_as", "reason": task.same_as}
    if task.memory_bytes:
        free = environment.available_memory_bytes(ctx.device)
        if task.memory_bytes > 0.8 * free:
            return {**row, "status": "skipped",
                    "reason": f"needs ~{task.memory_bytes / 2**30:.1f} GiB of temporaries per image; "
                              f"{free / 2**30:.1f} GiB free on {ctx.device.type}"}
    try:
        input_sets = ctx.inputs(size)
        if task.batch_subset and task.batch_subset < size.batch:
            input_sets = [_slice_set(s, task.batch_subset) for s in input_sets]
            row.update(timed_batch=task.batch_subset, extrapolated=True)
        if task.mutates_input:
            input_sets = _private_copies(input_sets)
        fn = task.prepare(ctx)
        s = ctx.settings
        timing = time_calls(fn, input_sets, ctx.device, warmup=s.warmup, repeats=s.repeats,
                            min_repeats=s.min_repeats, budget_s=s.budget_s).as_dict()
        if row["extrapolated"]:
            factor = size.batch / row["timed_batch"]
            timing["measured_median_ms"] = timing["median_ms"]
            for key in ("median_ms", "q1_ms", "q3_ms", "iqr_ms", "min_ms"):
                timing[key] *= factor
            timing["samples_ms"] = [v * factor for v in timing["samples_ms"]]
            row["note"] = (row["note"] + "; " if row["note"] else "") + \
                f"EXTRAPOLATED: timed on {row['timed_batch']} of {size.batch} images, scaled x{factor:g}"
        row.update(timing)
        row["images_per_s"] = size.batch / (timing["median_ms"] / 1e3)
        row["status"] = "ok"
    except Unavailable as exc:
        row.update(status="skipped", reason=str(exc))
    except Exception as exc:  # a failing contender is reported, the rest continue
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}".strip()[:500],
                   traceback=traceback.format_exc(limit=6))
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def run_suite(settings: Settings, device: torch.device, out_dir: Path, *, progress: bool = True,
              command: str | None = None) -> dict:
    from . import references
    from .report import write_results

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    checkout = environment.source_checkout()
    meta = {
        "command": command,
        "python": sys.executable,
        "cwd": os.getcwd(),
        "references": references.registered() or references.MISSING,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "size": settings.size, "device": environment.describe_device(device),
        "device_name": environment.short_device_name(device), "versions": environment.library_versions(),
        "git_commit": environment.git_commit(checkout) if checkout else None,
        "settings": {k: v for k, v in vars(settings).items()},
        "load_average_start": _load_average(),
        "timing_method": ("CUDA events around each call, synchronize after it" if device.type == "cuda"
                          else "time.perf_counter around each call") +
                         "; warm-up calls excluded; input sets rotated; median and IQR of the timed calls",
    }
    bandwidth = measure_copy_bandwidth(device, buffer_bytes=(1 << 24) if settings.size == "tiny" else None)
    meta["copy_bandwidth"] = bandwidth.as_dict()

    tasks = build_tasks(settings, device)
    sizes = SIZES[settings.size]
    ctx = Context(device, settings)
    rows = []
    bar = _progress(tasks, progress)
    try:
        for task in bar:
            if progress and hasattr(bar, "set_description"):
                bar.set_description(f"{task.size} {task.operator}: {task.contender}"[:60])
            begun = time.perf_counter()
            row = run_task(task, ctx, sizes[task.size])
            row["wall_s"] = round(time.perf_counter() - begun, 2)  # inputs, preparation, warm-up and timing
            if row.get("floor_bytes"):
                row["floor_ms"] = bandwidth.floor_ms(row["floor_bytes"])
                if row.get("median_ms"):
                    row["fraction_of_floor"] = row["floor_ms"] / row["median_ms"]
            row["device_name"] = meta["device_name"]
            rows.append(row)
    finally:
        ctx.close()
    meta["load_average_end"] = _load_average()
    meta["duration_s"] = round(time.time() - started, 1)
    results = {"meta": meta, "rows": rows}
    results["written"] = write_results(results, out_dir)
    return results


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _progress(tasks, enabled: bool):
    if not enabled:
        return tasks
    try:
        from tqdm import tqdm
    except ImportError:
        return tasks
    return tqdm(tasks, unit="row", dynamic_ncols=True)


def parse_args(argv=None, prog: str = "fastmix bench"):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser.parse_args(argv)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="results folder (results.json, results.md, throughput.png)")
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="full: CIFAR B=100, ImageNet B=256, COCO-like B=8 at 1024; tiny: a seconds-long smoke test")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--sizes", default=None, help="comma-separated subset of cifar,imagenet,coco")
    parser.add_argument("--operators", default=None, help=f"comma-separated subset of {','.join(OPERATORS)}")
    parser.add_argument("--no-train-step", action="store_true", help="skip the training-step overhead benchmark")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls per row (not timed)")
    parser.add_argument("--repeats", type=int, default=None, help="most timed calls per row")
    parser.add_argument("--min-repeats", type=int, default=None, help="fewest timed calls per row")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timed calls per row, at most")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv=None, prog: str = "fastmix bench") -> int:
    """Run the suite; a bad option is one line on stderr and exit status 2, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    try:
        settings, device, out = configure(args)
    except ValueError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        results = run_suite(settings, device, out, progress=not args.quiet,
                            command=" ".join([prog, shlex.join(argv)]).strip())
    finally:
        torch.set_num_threads(threads)  # the caller's setting (the suite also runs inside pytest)
    counts = {}
    for row in results["rows"]:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    written = ", ".join(str(out / name) for name in results["written"])
    print(f"wrote {written} ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}; "
          f"{results['meta']['duration_s']} s)")
    if results["meta"].get("plot_skipped"):
        print(f"skipped throughput.png: {results['meta']['plot_skipped']}")
    return 0


def configure(args) -> tuple[Settings, torch.device, Path]:
    """Settings, device and results folder from the parsed options (ValueError names a bad one)."""
    device = environment.pick_device(args.device)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    settings = Settings.defaults(args.size, device)
    for name in ("warmup", "repeats", "min_repeats"):
        value = getattr(args, name)
        if value is not None:
            if value < (0 if name == "warmup" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be at least {0 if name == 'warmup' else 1}, got {value}")
            setattr(settings, name, value)
    if args.budget is not None:
        if not args.budget > 0:
            raise ValueError(f"--budget must be positive, got {args.budget}")
        settings.budget_s = args.budget
    if args.sizes:
        settings.sizes = tuple(s.strip() for s in args.sizes.split(",") if s.strip())
    if args.operators:
        settings.operators = tuple(s.strip() for s in args.operators.split(",") if s.strip())
    settings.train_step = not args.no_train_step
    unknown_sizes = sorted(set(settings.sizes) - set(SIZES[settings.size]))
    if unknown_sizes:
        raise ValueError(f"--sizes: unknown {unknown_sizes}; choose from {','.join(SIZES[settings.size])}")
    unknown_operators = sorted(set(settings.operators) - set(OPERATORS))
    if unknown_operators:
        raise ValueError(f"--operators: unknown {unknown_operators}; choose from {','.join(OPERATORS)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; the suite writes a results folder there")
    return settings, device, out
