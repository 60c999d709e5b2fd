"""CPU kernel layer: numba kernels vs the memory floor, the PyTorch path and timm's in-place code.

    python -m benchmarks.bench_cpu [--quick] [--out benchmarks/results/cpu/cpu_kernels.md]

Every row is timed in this one run, rotating over enough input sets to exceed the last-level
cache (up to 16 sets, 512 MiB), its contenders and the clone interleaved call by call so that they
share the machine's load. The floor of a row is the bytes it must move (read the batch once, write the result once;
SAGE also reads G1, G2 and writes the mask) at the rate `x.clone()` achieves on the same tensor
in the same run, so a fresh output's page faults are inside the floor as they are inside the op.

The timm rows re-implement timm's in-place `Mixup._mix_batch` / `Mixup._mix_elem` (timm/data/
mixup.py) line for line, because timm does not import beside the CPU-only torch of this machine:
    batch mixup:  x_flipped = x.flip(0).mul_(1 - lam); x.mul_(lam).add_(x_flipped)
    batch cutmix: x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
    elem mixup:   x_orig = x.clone(); x[i] = x[i] * lam[i] + x_orig[j] * (1 - lam[i])   (per sample)
    elem cutmix:  x_orig = x.clone(); x[i][:, yl:yh, xl:xh] = x_orig[j][:, yl:yh, xl:xh]
They mutate their input (fastmix does only when asked, with `out=images`), so they run on the
rotating inputs directly; timm's Mixup cannot blend uint8 in place (torch refuses a float multiply
into a uint8 tensor): n/a.
fastmix runs its ops (backend="numba") out of place as the operators call them (`ops.call`: the
dispatcher is skipped for plain CPU tensors that record no gradient), with `out=` into preallocated
buffers (the loader use), and as the whole operator (`fastmix.mixup` / `cutmix` / `cutout` with the
same injected parameters: argument checks, label and result bookkeeping included), and that
operator in place (`out=x`, the same contract as timm's code: it mutates the rotating inputs too).

First-call compile time: each kernel's first call in a fresh process with an empty
NUMBA_CACHE_DIR, then the same in a second process that loads the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

import fastmix
from fastmix import ops
from fastmix.backends.numba import blend as numba_blend
from fastmix.bench import environment
from fastmix.bench.timing import input_set_count

SIZES = [(32, 3, 224, 224), (256, 3, 32, 32)]
CPU = torch.device("cpu")


def make_inputs(shape, dtype, channels_last, count, seed):
    gen = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(count):
        if dtype == torch.uint8:
            x = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
        else:
            x = torch.rand(shape, generator=gen)
        sets.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    return sets


def draw_params(batch, height, width, per_sample, gen):
    """perm, lam, boxes of area about (1 - lam), as CutMix draws them (one box or one per sample)."""
    n = batch if per_sample else 1
    lam = torch.distributions.Beta(1.0, 1.0).sample((n,)).clamp(0.05, 0.95)
    cut = (1 - lam).sqrt()
    ch, cw = (cut * height).long(), (cut * width).long()
    cy = torch.randint(0, height, (n,), generator=gen)
    cx = torch.randint(0, width, (n,), generator=gen)
    boxes = torch.stack([(cy - ch // 2).clamp(0, height), (cy + ch // 2).clamp(0, height),
                         (cx - cw // 2).clamp(0, width), (cx + cw // 2).clamp(0, width)], dim=1)
    perm = torch.randperm(batch, generator=gen) if per_sample else torch.arange(batch - 1, -1, -1)
    return perm, lam.expand(batch).contiguous(), boxes.expand(batch, 4).contiguous()


# timm's in-place code (see the module docstring), on tensors it mutates.
def timm_mix_batch(x, lam):
    x_flipped = x.flip(0).mul_(1. - lam)
    x.mul_(lam).add_(x_flipped)


def timm_cutmix_batch(x, box):
    yl, yh, xl, xh = box
    x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]


def timm_mix_elem(x, lam_batch):
    batch_size = len(x)
    x_orig = x.clone()
    for i in range(batch_size):
        j = batch_size - i - 1
        lam = lam_batch[i]
        x[i] = x[i] * lam + x_orig[j] * (1 - lam)


def timm_cutmix_elem(x, boxes):
    batch_size = len(x)
    x_orig = x.clone()
    for i in range(batch_size):
        j = batch_size - i - 1
        yl, yh, xl, xh = boxes[i]
        x[i][:, yl:yh, xl:xh] = x_orig[j][:, yl:yh, xl:xh]


def interleaved(fns: dict, sets, budget_s: float, repeats: int = 21, min_repeats: int = 7) -> dict:
    """(median, min) ms of each callable, timed round-robin (clone, then each contender, call after
    call) so that all of a row's numbers see the same load on a shared machine; every callable
    rotates over the input sets. Two warm-up rounds are not recorded."""
    live = {name: fn for name, fn in fns.items() if fn is not None}  # -> {name: (median, min)}
    samples = {name: [] for name in live}
    count = len(sets)
    started = time.perf_counter()
    for round_ in range(repeats + 2):
        for offset, (name, fn) in enumerate(live.items()):
            x = sets[(round_ + offset) % count]
            begin = time.perf_counter()
            fn(x)
            took = 1e3 * (time.perf_counter() - begin)
            if round_ >= 2:
                samples[name].append(took)
        if round_ >= 2 + min_repeats and time.perf_counter() - started > budget_s * len(live):
            break
    return {name: ((statistics.median(samples[name]), min(samples[name])) if name in samples else (None, None))
            for name in fns}


def bench_case(shape, dtype, channels_last, per_sample, count, budget_s):
    batch, channels, height, width = shape
    sets = make_inputs(shape, dtype, channels_last, count, seed=hash((shape, str(dtype))) % 1000)
    outs = [torch.empty_like(sets[0]) for _ in range(count)]
    image_bytes = sets[0].numel() * sets[0].element_size()
    gen = torch.Generator().manual_seed(0)
    perm, lam, boxes = draw_params(batch, height, width, per_sample, gen)
    timm_perm = torch.arange(batch - 1, -1, -1)  # timm pairs i with B - 1 - i
    rotation = {"i": 0}

    def next_out():
        rotation["i"] = (rotation["i"] + 1) % count
        return outs[rotation["i"]]

    box_list = [tuple(int(v) for v in b) for b in boxes]
    lam_list = [float(v) for v in lam]
    rows = []

    def row(op, numba_fn, numba_out_fn, torch_fn, peer_fn, floor_bytes, operator_fn=None, in_place_fn=None):
        timings = interleaved({"clone_ms": lambda x: x.clone(), "numba_ms": numba_fn, "numba_out_ms": numba_out_fn,
                               "pytorch_ms": torch_fn, "timm_ms": peer_fn, "operator_ms": operator_fn,
                               "in_place_ms": in_place_fn}, sets, budget_s)
        result = {"size": f"B={batch} {channels}x{height}x{width}", "dtype": str(dtype).replace("torch.", ""),
                  "layout": "channels_last" if channels_last else "NCHW",
                  "params": "per-sample" if per_sample else "per-batch", "op": op,
                  **{name: median for name, (median, _) in timings.items()},
                  **{name.replace("_ms", "_min_ms"): best for name, (_, best) in timings.items()}}
        result["floor_ms"] = result["clone_ms"] * floor_bytes / (2 * image_bytes)
        result["floor_min_ms"] = result["clone_min_ms"] * floor_bytes / (2 * image_bytes)
        rows.append(result)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items()}), flush=True)

    if dtype == torch.uint8:
        timm_mix = None
    elif per_sample:
        timm_mix = lambda x: timm_mix_elem(x, lam_list)  # noqa: E731
    else:
        timm_mix = lambda x: timm_mix_batch(x, lam_list[0])  # noqa: E731
    timm_cut = ((lambda x: timm_cutmix_elem(x, box_list)) if per_sample
                else (lambda x: timm_cutmix_batch(x, box_list[0])))
    mix_perm = perm if per_sample else timm_perm
    row("mixup", lambda x: ops.call(ops.mixup_blend, x, mix_perm, lam, None, "numba"),
        lambda x: numba_blend.mixup_blend(x, mix_perm, lam, out=next_out()),
        lambda x: ops.call(ops.mixup_blend, x, mix_perm, lam, None, "pytorch"), timm_mix, 2 * image_bytes,
        lambda x: fastmix.mixup(x, lam=lam, perm=mix_perm, backend="numba"),
        lambda x: fastmix.mixup(x, lam=lam, perm=mix_perm, backend="numba", out=x))
    row("cutmix / saliencymix paste", lambda x: ops.call(ops.box_paste, x, mix_perm, boxes, None, "numba"),
        lambda x: numba_blend.box_paste(x, mix_perm, boxes, out=next_out()),
        lambda x: ops.call(ops.box_paste, x, mix_perm, boxes, None, "pytorch"), timm_cut, 2 * image_bytes,
        lambda x: fastmix.cutmix(x, perm=mix_perm, boxes=boxes, backend="numba"),
        lambda x: fastmix.cutmix(x, perm=mix_perm, boxes=boxes, backend="numba", out=x))
    row("cutout", lambda x: ops.call(ops.box_fill, x, boxes, 0.0, None, "numba"),
        lambda x: numba_blend.box_fill(x, boxes, 0.0, out=next_out()),
        lambda x: ops.call(ops.box_fill, x, boxes, 0.0, None, "pytorch"), None, 2 * image_bytes,
        lambda x: fastmix.cutout(x, boxes=boxes, backend="numba"),
        lambda x: fastmix.cutout(x, boxes=boxes, backend="numba", out=x))
    if dtype != torch.uint8:
        g1 = torch.rand(batch, height, width, generator=gen)
        g2 = torch.rand(batch, height, width, generator=gen)
        shifts = torch.stack([torch.randint(-height // 2, height // 2, (batch,), generator=gen),
                              torch.randint(-width // 2, width // 2, (batch,), generator=gen)], dim=1)
        maps_bytes = 3 * g1.numel() * 4  # read G1, G2, write M
        row("sage mask+blend", lambda x: ops.call(ops.sage_mask_blend, x, perm, g1, g2, shifts, "numba"),
            lambda x: numba_blend.sage_mask_blend(x, perm, g1, g2, shifts, out=next_out()),
            lambda x: ops.call(ops.sage_mask_blend, x, perm, g1, g2, shifts, "pytorch"), None,
            2 * image_bytes + maps_bytes)
    return rows


COMPILE_SCRIPT = textwrap.dedent("""
    import json, time, torch
    t = time.perf_counter()
    from fastmix.backends.numba import blend as nb
    from fastmix.backends.numba import available
    available()
    times = {"import_s": time.perf_counter() - t}
    x8 = torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8); xf = x8.float()
    perm = torch.tensor([1, 0]); lam = torch.tensor([0.3, 0.6]); boxes = torch.tensor([[1, 4, 2, 6]] * 2)
    g = torch.rand(2, 8, 8)
    calls = {"mixup uint8": lambda: nb.mixup_blend(x8, perm, lam),
             "mixup float32": lambda: nb.mixup_blend(xf, perm, lam),
             "box_paste uint8": lambda: nb.box_paste(x8, perm, boxes),
             "box_paste float32": lambda: nb.box_paste(xf, perm, boxes),
             "box_fill uint8": lambda: nb.box_fill(x8, boxes, 0.0),
             "sage_mask_blend float32": lambda: nb.sage_mask_blend(xf, perm, g, g, torch.tensor([[1, -2]] * 2))}
    for name, fn in calls.items():
        t = time.perf_counter(); fn(); times[name] = time.perf_counter() - t
    print(json.dumps(times))
""")


def compile_times():
    """First-call times in a fresh process with an empty cache, then with the cache it left."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True,
                                  check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {"cold": runs[0], "cached": runs[1]}


def ratio(a, b):
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


def ms(v):
    return "n/a" if v is None else f"{v:.2f}"


def write_markdown(path: Path, rows, compile_info, meta):
    lines = [
        "# CPU kernel layer (numba) vs the floor, the PyTorch path and timm's in-place code",
        "",
        f"One run of `python -m benchmarks.bench_cpu`; {meta['cpu']}, {meta['threads']} torch/numba threads, "
        f"torch {meta['torch']}, numba {meta['numba']}, numpy {meta['numpy']}, fastmix commit {meta['commit']}, "
        f"1-minute load average {meta['load_average_1min']} at the end (a shared machine). "
        "Each contender's FASTEST call of the run, in ms (the machine is shared by several sessions on 2 cores: "
        "a median of millisecond calls mostly measures preemption; the medians are in the JSON, and "
        "the last column is the timm ratio of medians). Calls rotate over inputs larger than the last-level cache. "
        "floor = bytes moved (batch read once + result written once; SAGE also G1, G2, M) at the rate of "
        "`x.clone()` on the same tensor in this run. x floor = time / floor (1.0 = copy speed). "
        "timm = timm's in-place Mixup/CutMix code (batch mode for per-batch rows, elem mode for "
        "per-sample rows), re-implemented line for line because timm does not import with the CPU "
        "torch here; it overwrites its input, fastmix does not (numba out= writes a preallocated buffer). "
        "vs timm = timm ms / numba ms (> 1: numba faster). in place = the operator with `out=x` "
        "(`fastmix.mixup(x, ..., out=x)` etc.: the numba in-place kernels, which walk perm's cycles and touch "
        "only what changes), the same contract as timm's code; in place vs timm = timm ms / in place ms.",
        "",
        "| size | dtype | layout | params | op | floor ms | numba ms | x floor | numba out= ms | x floor | "
        "operator ms | x floor | PyTorch path ms | x floor | timm ms | vs timm | vs timm (medians) | "
        "in place ms | x floor | in place vs timm | in place vs timm (medians) |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['dtype']} | {r['layout']} | {r['params']} | {r['op']} | {ms(r['floor_min_ms'])} | "
            f"{ms(r['numba_min_ms'])} | {ratio(r['numba_min_ms'], r['floor_min_ms'])} | {ms(r['numba_out_min_ms'])} | "
            f"{ratio(r['numba_out_min_ms'], r['floor_min_ms'])} | {ms(r['operator_min_ms'])} | "
            f"{ratio(r['operator_min_ms'], r['floor_min_ms'])} | {ms(r['pytorch_min_ms'])} | "
            f"{ratio(r['pytorch_min_ms'], r['floor_min_ms'])} | {ms(r['timm_min_ms'])} | "
            f"{ratio(r['timm_min_ms'], r['numba_min_ms'])} | {ratio(r['timm_ms'], r['numba_ms'])} | "
            f"{ms(r['in_place_min_ms'])} | {ratio(r['in_place_min_ms'], r['floor_min_ms'])} | "
            f"{ratio(r['timm_min_ms'], r['in_place_min_ms'])} | {ratio(r['timm_ms'], r['in_place_ms'])} |")
    if compile_info:
        lines += ["", "## First-call time (numba compile, or cache load)", "",
                  "| kernel | empty cache s | cached s |", "|---|---:|---:|"]
        for name, cold in compile_info["cold"].items():
            lines.append(f"| {name} | {cold:.2f} | {compile_info['cached'][name]:.2f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one size, NCHW only, short budgets")
    parser.add_argument("--out", default="benchmarks/results/cpu/cpu_kernels.md")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile-time subprocesses")
    args = parser.parse_args(argv)
    if not fastmix.backends.numba.available():
        raise SystemExit("numba is not installed (pip install numba)")
    budget = 0.5 if args.quick else 1.5
    cache = environment.cache_bytes(CPU)
    rows = []
    for shape in SIZES[1:] if args.quick else SIZES:
        for dtype in (torch.float32, torch.uint8):
            set_bytes = torch.Size(shape).numel() * (4 if dtype == torch.float32 else 1)
            count = input_set_count(set_bytes, cache, minimum=3, maximum=16, memory_cap_bytes=1 << 29)
            for channels_last in ([False] if args.quick else [False, True]):
                for per_sample in (False, True):
                    rows += bench_case(shape, dtype, channels_last, per_sample, count, budget)
    compile_info = None if args.no_compile else compile_times()
    import numba
    import numpy
    root = environment.source_checkout()
    load = os.getloadavg()  # the machine is shared: the 1-minute load average when the run ended
    meta = {"load_average_1min": round(load[0], 1), "cpu": environment.cpu_model(), "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "numba": numba.__version__, "numpy": numpy.__version__,
            "commit": (environment.git_commit(root) if root else None) or "unknown"}
    out = Path(args.out)
    write_markdown(out, rows, compile_info, meta)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "compile": compile_info}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
