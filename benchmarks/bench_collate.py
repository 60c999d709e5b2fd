"""fastmix.compat.timm.FastCollateMixup vs timm's FastCollateMixup vs a plain torch.stack collate.

    python -m benchmarks.bench_collate [--batch 64] [--size 224] [--threads 1] [--out FILE]

The DataLoader-worker setting: uint8 NumPy samples [3, size, size] with int labels, one thread
(torch.set_num_threads and numba's, as in a worker; --threads to change). Rows are timed in this
one run, interleaved call by call (median of --repeats calls), rotating over at least 64 MiB of
sample sets (more than most last-level caches). Configs: "mixup" (every batch blended),
"cutmix" (every batch pasted), "timm default" (mixup_alpha=0.8, cutmix_alpha=1.0,
switch_prob=0.5); modes batch, elem, pair, half. fastmix runs twice: backend="numba" (the fused
collate kernel, fastmix/backends/numba/collate.py: each returned row written once from the
samples) and backend="pytorch" (the fallback without numba: one stack, then per-sample blends
and box copies). Every FastCollateMixup call, fastmix's and timm's, is the whole call: sample
checks, parameter draws, images and [B, 1000] soft targets; the stack collate stacks the images
and makes a label tensor. "images only" times fastmix's image kernel alone (parameters drawn
outside the timing): the difference to the whole call is the rest of the call.
Every contender gets its own fresh copy of the samples, made outside the timed call (timm's
'pair'/'half' CutMix writes into them), so all start from the same cache state.

timm cannot be imported beside this environment's torch (torchvision needs another torch), so its
timm/data/mixup.py (which imports only numpy and torch) is loaded by path from the peers venv
(.venv-peers, built by .ci/run) or from --timm-mixup PATH.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import statistics
import time
import numpy as np
import torch

CONFIGS = {"mixup": dict(mixup_alpha=1.0, cutmix_alpha=0.0), "cutmix": dict(mixup_alpha=0.0, cutmix_alpha=1.0),
           "timm default": dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)}
MODES = ("batch", "elem", "pair", "half")


def load_timm_mixup(path: str | None):
    candidates = [path] if path else sorted(glob.glob(".venv-peers/lib/python3*/site-packages/timm/data/mixup.py"))
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            spec = importlib.util.spec_from_file_location("timm_data_mixup", candidate)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module, candidate
    return None, None


def sample_sets(batch: int, size: int, count: int):
    rng = np.random.default_rng(0)
    return [[(rng.integers(0, 256, (3, size, size), dtype=np.uint8), int(rng.integers(0, 1000)))
              for _ in range(batch)] for _ in range(count)]


def copies(samples):
    """Fresh arrays for one call, made outside the timing (timm's pair/half CutMix writes into them)."""
    return [(image.copy(), label) for image, label in samples]


class ImagesOnly:
    """The fused kernel's share of a fastmix call: parameters drawn and samples split in
    `prepare` (not timed), then only the image collate-and-mix (no targets) is timed."""

    def __init__(self, collate):
        self.collate = collate

    def prepare(self, samples):
        from fastmix.backends.numba import collate as kernel
        from fastmix.compat import timm as compat
        images, _ = compat._split_samples(samples)
        params = self.collate.make_params(len(images), *images[0].shape[1:])
        return (images, kernel.MODES[self.collate.mode], params.lam.numpy(), params.use_cutmix.numpy(),
                params.boxes.numpy())

    def __call__(self, prepared):
        from fastmix.backends.numba import collate as kernel
        return torch.from_numpy(kernel.collate_mix(*prepared))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--timm-mixup", default=None)
    parser.add_argument("--stat", choices=("median", "min"), default="median",
                        help="min: the least-disturbed call, for a machine shared with other work")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                        help="cpu: this process's CPU time (time.process_time), which leaves out the time it "
                             "waits for a core on a machine shared with other work")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    try:
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        numba = None
    from fastmix.compat import timm as compat

    timm_mixup, timm_path = load_timm_mixup(args.timm_mixup)
    set_bytes = args.batch * 3 * args.size * args.size
    sets = sample_sets(args.batch, args.size, max(2, min(8, (64 << 20) // set_bytes + 1)))

    def stack_collate(samples):
        return torch.stack([torch.from_numpy(image) for image, _ in samples]), torch.tensor([s[1] for s in samples])

    contenders = {"torch.stack collate": stack_collate}
    for config, options in CONFIGS.items():
        for mode in MODES:
            kwargs = dict(options, mode=mode, num_classes=1000)
            if numba is not None:
                fused = compat.FastCollateMixup(**kwargs, generator=torch.Generator().manual_seed(0), backend="numba")
                contenders[f"fastmix {config} {mode}"] = fused
                contenders[f"fastmix images only {config} {mode}"] = ImagesOnly(compat.FastCollateMixup(
                    **kwargs, generator=torch.Generator().manual_seed(0), backend="numba"))
            contenders[f"fastmix (no numba) {config} {mode}"] = compat.FastCollateMixup(
                **kwargs, generator=torch.Generator().manual_seed(0), backend="pytorch")
            if timm_mixup is not None:
                contenders[f"timm {config} {mode}"] = timm_mixup.FastCollateMixup(**kwargs)

    load_at_start = os.getloadavg()[0]  # the machine may be shared: the report states its load
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times = {name: [] for name in contenders}
    np.random.seed(0)
    for call in range(args.repeats + 1):  # call 0 warms up (numba's first call loads or compiles)
        samples = sets[call % len(sets)]
        for name, fn in contenders.items():
            fresh = copies(samples)
            if hasattr(fn, "prepare"):
                fresh = fn.prepare(fresh)
            start = clock()
            fn(fresh)
            if call:
                times[name].append(clock() - start)

    statistic = statistics.median if args.stat == "median" else min
    median = {name: 1e3 * statistic(t) for name, t in times.items()}
    base = median["torch.stack collate"]
    lines = [f"# FastCollateMixup collate, B={args.batch} uint8 3x{args.size}x{args.size}, {args.threads} thread(s)",
             "",
             f"torch {torch.__version__}, numba {getattr(numba, '__version__', 'absent')}, timm mixup.py: "
             f"{timm_path or 'not found'}; {args.clock} clock, {args.stat} of {args.repeats} interleaved calls, {len(sets)} sample sets; "
             f"load average {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs.",
             "",
             f"torch.stack collate: {base:.2f} ms",
             "",
             "| config | mode | fastmix numba ms (x stack) | of which images only ms (x stack) | "
             "fastmix no numba ms (x stack) | timm ms (x stack) | timm / fastmix |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for config in CONFIGS:
        for mode in MODES:
            ours = median.get(f"fastmix {config} {mode}")
            slow = median[f"fastmix (no numba) {config} {mode}"]
            theirs = median.get(f"timm {config} {mode}")
            ours_cell = f"{ours:.2f} ({ours / base:.2f}x)" if ours else "n/a"
            images_only = median.get(f"fastmix images only {config} {mode}")
            images_cell = f"{images_only:.2f} ({images_only / base:.2f}x)" if images_only else "n/a"
            timm_cell = f"{theirs:.2f} ({theirs / base:.2f}x)" if theirs else "n/a"
            ratio = f"{theirs / ours:.2f}" if theirs and ours else "n/a"
            lines.append(f"| {config} | {mode} | {ours_cell} | {images_cell} | {slow:.2f} ({slow / base:.2f}x) | "
                         f"{timm_cell} | {ratio} |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as handle:
            handle.write(report + "\n")


if __name__ == "__main__":
    main()
