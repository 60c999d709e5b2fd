"""Timing one callable the way every row of the suite is timed.

- CUDA: a pair of CUDA events around each call on the current stream, and a synchronize after
  it, so a call that does host work between launches (a graph cut, an OpenCV call, a copy to the
  CPU) is charged for it and no call overlaps the next. CPU: `time.perf_counter` around the call.
- Warm-up calls run first and are not recorded (module load, Triton compilation, cuDNN autotune,
  allocator growth); after one that alone outlasts the time budget, no more are made.
- Calls rotate over several input sets, so a batch that fits in a cache is not re-read from it.
- The number of timed calls adapts to a time budget: `repeats` at most, `min_repeats` at least,
  so a contender that takes seconds per call does not eat the whole run.
- Reported: median, first and third quartile (IQR = spread), min and all samples, in ms.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


@dataclass
class Timing:
    samples_ms: list[float]
    warmup: int
    input_sets: int
    extra: dict = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    def quantile_ms(self, q: float) -> float:
        """Linear-interpolated quantile of the samples (q in [0, 1])."""
        ordered = sorted(self.samples_ms)
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def as_dict(self) -> dict:
        q1, q3 = self.quantile_ms(0.25), self.quantile_ms(0.75)
        return {"median_ms": self.median_ms, "q1_ms": q1, "q3_ms": q3, "iqr_ms": q3 - q1,
                "min_ms": min(self.samples_ms), "repeats": len(self.samples_ms), "warmup": self.warmup,
                "input_sets": self.input_sets, "samples_ms": list(self.samples_ms)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_call_ms(fn: Callable, inputs, device: torch.device) -> float:
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn(inputs)
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    begin = time.perf_counter()
    fn(inputs)
    return 1e3 * (time.perf_counter() - begin)


def time_calls(fn: Callable, input_sets: Sequence, device: torch.device, *, warmup: int = 1,
               repeats: int = 10, min_repeats: int = 3, budget_s: float | None = None) -> Timing:
    """Median-of-calls timing of `fn(input_set)`, rotating over `input_sets`.

    After the warm-up, the first timed call estimates the cost per call; the remaining calls are
    capped so that all timed calls fit in `budget_s` (never fewer than `min_repeats`).
    """
    if not input_sets:
        raise ValueError("time_calls needs at least one input set")
    count = len(input_sets)
    done = 0
    while done < warmup:  # a warm-up call longer than the whole budget is warm-up enough
        took_ms = _one_call_ms(fn, input_sets[done % count], device)
        done += 1
        if budget_s is not None and took_ms > 1e3 * budget_s:
            break
    samples = [_one_call_ms(fn, input_sets[done % count], device)]
    planned = repeats
    if budget_s is not None and samples[0] > 0:
        planned = int(budget_s * 1e3 / samples[0])
    planned = max(min_repeats, min(repeats, planned))
    for i in range(1, planned):
        samples.append(_one_call_ms(fn, input_sets[(done + i) % count], device))
    return Timing(samples_ms=samples, warmup=done, input_sets=count)


def timed_runs(fn: Callable[[], object], repeats: int, device: torch.device):
    """(last output, [seconds] of `repeats` calls of fn()) after one untimed warm-up call, for the
    scripts that compare a contender's output with the reference's as well as its time."""
    times = []
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return out, times[1:]


def input_set_count(set_bytes: int, cache_bytes: int, *, minimum: int = 2, maximum: int = 32,
                    memory_cap_bytes: int | None = None) -> int:
    """How many distinct input sets make the rotation larger than twice the last-level cache.

    Capped by `maximum` and by `memory_cap_bytes` of inputs in total (but never under `minimum`).
    """
    wanted = -(-2 * cache_bytes // max(set_bytes, 1))
    count = max(minimum, min(maximum, wanted))
    if memory_cap_bytes is not None:
        count = min(count, max(minimum, memory_cap_bytes // max(set_bytes, 1)))
    return int(count)
