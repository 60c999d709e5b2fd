"""Compile proofs without a GPU: every Triton kernel variant the launchers would run, compiled
ahead of time to cubin for real targets, with its resource usage.

    python -m fastmix.backends.triton.aot [--caps 75,80,90] [--md FILE] [--json FILE] [--jobs N]

1. Record. The real launchers (the fastmix::* ops with backend="triton" and the launch functions
   of each kernel module) run on small CPU tensors over the cases the kernels specialise on:
   dtypes float32 / float16 / bfloat16 / float64 / uint8 (uint8 in, float out too), NCHW,
   channels_last and column slices, odd and multiple-of-16 sizes, B = 1, SAGE candidates shared,
   per sample and exhaustive. `JITFunction.run` is replaced by a recorder that binds the
   arguments exactly as Triton's launcher does (its own binder and `_pack_args`, for a CUDA
   target): what is recorded is the signature, constexprs, specialisation attributes and launch
   options that would be compiled on a GPU. Nothing is executed. The run needs compiled-mode
   `triton.jit` objects, so TRITON_INTERPRET must be unset (the module refuses otherwise).
2. Compile each distinct variant with `triton.compile(ASTSource(...), target=GPUTarget("cuda",
   cap, 32))` to cubin (Triton's own ptxas) for each capability; read registers, local memory
   (spills: Triton kernels have no other local memory) and shared memory with the cuobjdump
   Triton ships; and check the PTX has no float min/max that drops NaN (`max.f32` without
   `.NaN`): the kernels' NaN semantics are "propagate" (see `_common.py`).

Exit status 1 on any compile error, any non-propagating float min/max, or any kernel of the
backend that no case launched. The markdown table is committed as
benchmarks/results/compile/triton_resources.md (tests/test_compile_proofs.py regenerates it).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAPABILITIES = (75, 80, 90)
MODULES = ("blend", "mask_blend", "saliency", "scores")
_NAN_DROPPING = re.compile(r"\b(?:max|min)(?:\.ftz)?\.f(?:16|32|64)(?:x2)?\b")
_RESOURCES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compile of one kernel: what Triton's launcher would hand to `triton.compile`."""
    module: str
    kernel: str
    signature: tuple      # ((name, type), ...)
    constexprs: tuple     # ((path, value), ...)
    attrs: tuple          # ((path, attributes), ...)
    num_warps: int
    num_stages: int
    values: tuple = dataclasses.field(default=(), compare=False, hash=False)  # constexprs as passed

    def precision(self) -> str:
        """"float64" for variants that compute in float64, else "32-bit" (float32 arithmetic on
        float32 / float16 / bfloat16 / uint8 data): the two have very different register needs."""
        wide = any("float64" in v for _, v in self.constexprs) or any(t == "*fp64" for _, t in self.signature)
        return "float64" if wide else "32-bit"

    def label(self) -> str:
        consts = {self.signature[path[0]][0]: value for path, value in self.values}
        specialised = [self.signature[path[0]][0] for path, attr in self.attrs if json.loads(attr)]
        types = [t for _, t in self.signature if t != "constexpr" and t.startswith("*")]
        parts = [f"{k}={_short(v)}" for k, v in consts.items()]
        return (f"{' '.join(parts)} | ptr {','.join(sorted(set(types)))} | "
                f"div16 {','.join(specialised) or '-'} | warps {self.num_warps}")


def _short(value) -> str:
    text = str(value)
    return text.replace("triton.language.", "").replace("fp32", "f32").replace("fp64", "f64")


# --- 1. recording --------------------------------------------------------------------------------

def _kernel_modules():
    import importlib

    return {name: importlib.import_module(f"fastmix.backends.triton.{name}") for name in MODULES}


def all_kernels() -> dict[str, str]:
    """{kernel name: module} of every launchable kernel (JIT functions whose name ends in _kernel)."""
    from triton.runtime.jit import JITFunction

    found = {}
    for name, module in _kernel_modules().items():
        for attr, value in vars(module).items():
            if isinstance(value, JITFunction) and attr.endswith("_kernel"):
                found[attr] = name
    return found


@contextlib.contextmanager
def recording():
    """Within: Triton launches record their Variant (and grid) instead of running."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    from . import _launch

    backend = make_backend(GPUTarget("cuda", 90, 32))
    launches: list[tuple[Variant, tuple]] = []
    binders = {}

    def record(self, *args, grid, warmup, **kwargs):
        if id(self) not in binders:
            binders[id(self)] = create_function_from_signature(self.signature, self.params, backend)
        bound, specialization, options = binders[id(self)](*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound, specialization, options)
        if callable(grid):
            grid = grid(bound)
        variant = Variant(
            module=self.fn.__module__.rsplit(".", 1)[-1], kernel=self.fn.__name__,
            signature=tuple(signature.items()),
            constexprs=tuple(sorted((k, repr(v)) for k, v in constexprs.items())),
            values=tuple(sorted(constexprs.items())),
            attrs=tuple(sorted((k, json.dumps(v)) for k, v in attrs.items())),
            num_warps=options.num_warps, num_stages=options.num_stages)
        launches.append((variant, tuple(grid)))
        return None

    def same_device_only(kernel, *tensors):
        if len({t.device for t in tensors}) != 1:
            raise ValueError("all tensors must be on one device")

    saved_run, saved_check = JITFunction.run, _launch.check_launchable
    JITFunction.run, _launch.check_launchable = record, same_device_only
    try:
        yield launches
    finally:
        JITFunction.run, _launch.check_launchable = saved_run, saved_check


def _cases():
    """(name, thunk) pairs: every launcher over the cases the kernels specialise on."""
    import torch

    from fastmix import ops
    from fastmix.backends.pytorch import sage as torch_sage

    from . import mask_blend, saliency, scores

    gen = torch.Generator().manual_seed(0)
    floats = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

    def images(batch, channels, height, width, dtype, layout):
        if layout == "slice":  # a column slice: rows are not back to back
            base = torch.randint(0, 255, (batch, channels, height, width + 3), generator=gen)
            return base.to(dtype)[..., 1:width + 1]
        x = torch.randint(0, 255, (batch, channels, height, width), generator=gen).to(dtype)
        return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x

    def boxes(batch, height, width):
        return torch.tensor([[0, height // 2, 1 % width, width]] * batch)

    sizes = [(2, 3, 5, 7), (4, 3, 32, 32), (1, 3, 9, 16), (3, 1, 6, 6), (2, 16, 7, 7)]
    layouts = ("nchw", "channels_last", "slice")
    cases = []
    for batch, channels, height, width in sizes:
        perm = torch.arange(batch).flip(0)
        lam = torch.rand(batch, generator=gen)
        box = boxes(batch, height, width)
        for layout in layouts:
            for dtype in floats + (torch.uint8,):
                outs = (dtype,) + ((torch.float32, torch.float16, torch.bfloat16) if dtype == torch.uint8 else ())
                for out in outs:
                    tag = f"{batch}x{channels}x{height}x{width} {layout} {dtype}->{out}"
                    x = images(batch, channels, height, width, dtype, layout)
                    cases.append((f"mixup {tag}", lambda x=x, p=perm, l=lam, o=out:
                                  ops.mixup_blend(x, p, l, o, backend="triton")))
                    cases.append((f"paste {tag}", lambda x=x, p=perm, b=box, o=out:
                                  ops.box_paste(x, p, b, o, backend="triton")))
                    # A fill value exact in every output dtype (the op refuses 0.5 for uint8).
                    cases.append((f"fill {tag}", lambda x=x, b=box, o=out:
                                  ops.box_fill(x, b, 2.0, o, backend="triton")))
            for dtype in floats:
                tag = f"{batch}x{channels}x{height}x{width} {layout} {dtype}"
                grad = images(batch, channels, height, width, dtype, layout)
                mass = torch.rand(batch, generator=gen)
                for kernel_size in (1, 5):
                    if kernel_size // 2 < min(height, width):
                        cases.append((f"saliency k{kernel_size} {tag}", lambda g=grad, p=perm, m=mass, k=kernel_size:
                                      ops.sage_saliency(g, p, m, k, 1.0, backend="triton")))
                for map_dtype in (torch.float32, torch.float64):
                    g1 = torch.rand(batch, height, width, generator=gen).to(map_dtype)
                    g2 = torch.rand(batch, height, width, generator=gen).to(map_dtype)
                    shifts = torch.tensor([[1 % height, -1 % width]] * batch)
                    cases.append((f"mask_blend {tag} maps {map_dtype}",
                                  lambda x=grad, p=perm, a=g1, b=g2, s=shifts:
                                  ops.sage_mask_blend(x, p, a, b, s, backend="triton")))
        for map_dtype in (torch.float32, torch.float64):
            g1 = torch.rand(batch, height, width, generator=gen).to(map_dtype)
            g2 = torch.rand(batch, height, width, generator=gen).to(map_dtype)
            every = torch_sage.all_shifts(height, width)
            population = every.shape[0]
            for name, shifts in (("shared K=1", every[:1]), ("shared", every[::3]), ("exhaustive", every),
                                 ("per-sample", every[torch.randint(0, population, (batch, 5), generator=gen)])):
                cases.append((f"scores {name} {batch}x{height}x{width} {map_dtype}",
                              lambda a=g1, b=g2, s=shifts: ops.sage_scores(a, b, s, backend="triton")))
    # Larger frames than the op cases reach: several tiles per sample and candidate.
    g1 = torch.rand(2, 40, 70, generator=gen)
    cases.append(("scores multi-tile 2x40x70", lambda: scores.shift_scores(g1, g1, torch.tensor([[3, -5], [-2, 9]]))))
    big = images(2, 3, 40, 70, torch.float32, "nchw")
    cases.append(("mask_blend multi-tile 2x3x40x70", lambda: mask_blend.sage_mask_blend(
        big, torch.tensor([1, 0]), g1, g1, torch.tensor([[1, 2], [-3, 4]]))))
    cases.append(("saliency multi-tile 2x3x40x70", lambda: saliency.saliency_masses(
        big, torch.tensor([1, 0]), torch.tensor([0.3, 0.6]), torch.ones(5) / 5)))
    return cases


def record_variants() -> tuple[list[Variant], dict[Variant, list[str]], list[str]]:
    """(distinct variants, the cases that launch each, errors of cases that failed to launch)."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("compile proofs need compiled-mode triton.jit objects: unset TRITON_INTERPRET")
    uses: dict[Variant, list[str]] = {}
    errors = []
    with recording() as launches:
        for name, thunk in _cases():
            start = len(launches)
            try:
                thunk()
            except Exception as exc:  # a launcher that fails before launching is a finding too
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            for variant, grid in launches[start:]:
                if len(grid) > 1 and any(g > 65535 for g in grid[1:]) or grid[0] > 2**31 - 1:
                    errors.append(f"{name}: grid {grid} exceeds CUDA's limits")
                uses.setdefault(variant, []).append(name)
    return list(uses), uses, errors


# --- 2. compiling --------------------------------------------------------------------------------

def _cuobjdump() -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def compile_variant(variant: Variant, capability: int) -> dict:
    """Compile one variant for one capability: {ok, error, regs, stack, shared, local, nan_min_max, seconds}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module = _kernel_modules()[variant.module]
    fn = getattr(module, variant.kernel)
    signature = dict(variant.signature)
    constexprs = dict(variant.values)
    attrs = {k: json.loads(v) for k, v in variant.attrs}
    result = {"capability": capability, "ok": False, "error": None}
    start = time.perf_counter()
    try:
        compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs),
                                  target=GPUTarget("cuda", capability, 32),
                                  options={"num_warps": variant.num_warps, "num_stages": variant.num_stages})
        cubin = compiled.asm["cubin"]
        ptx = compiled.asm["ptx"]
        with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
            handle.write(cubin)
            handle.flush()
            usage = subprocess.run([_cuobjdump(), "--dump-resource-usage", handle.name],
                                   capture_output=True, text=True, check=True).stdout
        match = _RESOURCES.search(usage)
        if match is None:
            raise RuntimeError(f"no resource usage in cuobjdump's output: {usage!r}")
        regs, stack, shared, local = (int(v) for v in match.groups())
        nan_dropping = sorted(set(_NAN_DROPPING.findall(ptx)))
        result.update(ok=not nan_dropping, regs=regs, stack=stack, shared=shared, local=local,
                      metadata_shared=compiled.metadata.shared, cubin_bytes=len(cubin),
                      nan_dropping=nan_dropping)
        if nan_dropping:
            result["error"] = f"PTX has float min/max that drop NaN: {nan_dropping}"
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def _compile_job(job):
    variant, capability = job
    return variant, compile_variant(variant, capability)


def compile_all(variants, capabilities=CAPABILITIES, jobs: int = 1):
    """{(variant, capability): result}, compiled in `jobs` processes."""
    work = [(v, c) for v in variants for c in capabilities]
    results = {}
    if jobs <= 1:
        for job in work:
            results[(job[0], job[1])] = _compile_job(job)[1]
        return results
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        for (variant, capability), (_, result) in zip(work, pool.map(_compile_job, work, chunksize=4)):
            results[(variant, capability)] = result
    return results


# --- 3. report -----------------------------------------------------------------------------------

def summarise(variants, uses, errors, results, capabilities, kernels, seconds) -> dict:
    per_kernel = {}
    for (variant, capability), result in results.items():
        entry = per_kernel.setdefault(f"{variant.kernel} {variant.precision()}",
                                      {"module": variant.module, "variants": 0, "caps": {}})
        cap = entry["caps"].setdefault(capability, {"compiled": 0, "failed": 0, "regs": [], "local": [],
                                                    "shared": []})
        if result["ok"]:
            cap["compiled"] += 1
            cap["regs"].append(result["regs"])
            cap["local"].append(result["local"])
            cap["shared"].append(result["shared"])
        else:
            cap["failed"] += 1
    for variant in variants:
        per_kernel[f"{variant.kernel} {variant.precision()}"]["variants"] += 1
    failures = [{"kernel": v.kernel, "variant": v.label(), "capability": c, "error": r["error"],
                 "case": uses[v][0]} for (v, c), r in results.items() if not r["ok"]]
    uncompiled = sorted(set(kernels) - {v.kernel for v in variants})
    import triton

    return {"triton": triton.__version__, "capabilities": list(capabilities),
            "cases": sum(len(u) for u in uses.values()),
            "variants": len(variants), "compiles": len(results), "seconds": round(seconds, 1),
            "kernels": per_kernel, "failures": failures, "launch_errors": errors,
            "kernels_never_launched": uncompiled,
            "results": [{"kernel": v.kernel, "variant": v.label(), "capability": c, "case": uses[v][0],
                         **{k: r.get(k) for k in ("ok", "regs", "local", "shared", "error")}}
                        for (v, c), r in results.items()],
            "worst": _worst(results),
            "passed": not failures and not errors and not uncompiled}


def _worst(results):
    """Per kernel and capability, the variant with the most registers."""
    worst = {}
    for (variant, capability), result in results.items():
        if not result["ok"]:
            continue
        key = f"{variant.kernel} {variant.precision()}@sm_{capability}"
        if key not in worst or result["regs"] > worst[key]["regs"]:
            worst[key] = {"regs": result["regs"], "local": result["local"], "shared": result["shared"],
                          "variant": variant.label()}
    return worst


def markdown(summary: dict) -> str:
    caps = summary["capabilities"]
    lines = [
        "# Triton compile proofs: resources per kernel",
        "",
        f"Generated by `python -m fastmix.backends.triton.aot` (Triton {summary['triton']}, no GPU): "
        f"{summary['cases']} launches recorded from the real launchers on CPU tensors, "
        f"{summary['variants']} distinct variants, each compiled to cubin for "
        f"{', '.join(f'sm_{c}' for c in caps)} ({summary['compiles']} compiles in {summary['seconds']} s with "
        f"{summary.get('jobs', '?')} processes on {summary.get('cpus', '?')} CPUs, "
        + ("a warm Triton cache: times are cache hits). " if summary.get("cache_entries_before")
           else "a cold Triton cache). ")
        + "Registers per thread, local memory (spills) and shared memory per block, from cuobjdump of the "
        "cubin; min-max over the variants of each kernel. Variants differ in dtypes, layout flags, block size, "
        "warps and Triton's specialisation of pointers and sizes (16-byte alignment, value 1). Shared memory "
        "is the scratch Triton allocates for block reductions.",
        "",
        "| kernel | arithmetic | module | variants | "
        + " | ".join(f"sm_{c} regs | sm_{c} spill B | sm_{c} smem B" for c in caps)
        + " | failed |",
        "|---|---|---|---|" + "---|---|---|" * len(caps) + "---|",
    ]

    def span(values):
        if not values:
            return "-"
        return str(min(values)) if min(values) == max(values) else f"{min(values)}-{max(values)}"

    for kernel, entry in sorted(summary["kernels"].items()):
        cells, failed = [], 0
        for c in caps:
            # str(c): capabilities are string keys once the summary went through JSON
            cap = entry["caps"].get(c) or entry["caps"].get(str(c)) or {"regs": [], "local": [], "shared": [],
                                                                        "failed": 0}
            cells += [span(cap["regs"]), span(cap["local"]), span(cap["shared"])]
            failed += cap["failed"]
        name, precision = kernel.split(" ")
        lines.append(f"| `{name}` | {precision} | {entry['module']} | {entry['variants']} | " + " | ".join(cells)
                     + f" | {failed} |")
    lines += ["", "## Most registers per kernel and target", "",
              "| kernel | arithmetic | target | regs | spill B | smem B | variant |", "|---|---|---|---|---|---|---|"]
    for key, worst in sorted(summary["worst"].items()):
        kernel, target = key.split("@")
        name, precision = kernel.split(" ")
        lines.append(f"| `{name}` | {precision} | {target} | {worst['regs']} | {worst['local']} | {worst['shared']} | "
                     f"{worst['variant']} |")
    lines += ["", f"**Verdict: {'PASS' if summary['passed'] else 'FAIL'}**"]
    for failure in summary["failures"][:20]:
        lines.append(f"- compile failure: `{failure['kernel']}` sm_{failure['capability']} ({failure['case']}): "
                     f"{failure['error'][:300]}")
    for error in summary["launch_errors"][:20]:
        lines.append(f"- launch error: {error[:300]}")
    for kernel in summary["kernels_never_launched"]:
        lines.append(f"- never launched by any case, so never compiled: `{kernel}`")
    return "\n".join(lines) + "\n"


def _cache_entries() -> int:
    """Entries in Triton's cache before the run: with a warm cache the times are cache hits."""
    from triton import knobs

    folder = Path(knobs.cache.dir)
    return sum(1 for _ in folder.iterdir()) if folder.is_dir() else 0


def run(capabilities=CAPABILITIES, jobs: int = 1) -> dict:
    start = time.perf_counter()
    cached = _cache_entries()
    variants, uses, errors = record_variants()
    results = compile_all(variants, capabilities, jobs)
    summary = summarise(variants, uses, errors, results, capabilities, all_kernels(), time.perf_counter() - start)
    summary["cache_entries_before"] = cached
    summary["jobs"] = jobs
    summary["cpus"] = os.cpu_count()
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastmix.backends.triton.aot", description=__doc__.splitlines()[0])
    parser.add_argument("--caps", default=",".join(map(str, CAPABILITIES)), help="comma-separated CUDA capabilities")
    parser.add_argument("--md", default=None, help="write the markdown table here")
    parser.add_argument("--json", default=None, help="write the full summary here")
    parser.add_argument("--jobs", type=int, default=max(1, min(8, os.cpu_count() or 1)), help="compile processes")
    args = parser.parse_args(argv)
    summary = run(tuple(int(c) for c in args.caps.split(",")), args.jobs)
    text = markdown(summary)
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    print(text)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
