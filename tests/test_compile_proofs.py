"""Compile proofs without a GPU (fastmix/backends/triton/aot.py): every Triton kernel variant that
the real launchers would run, recorded on small CPU tensors across dtypes, layouts, sizes and
SAGE candidate modes, compiles to cubin for sm_75, sm_80 and sm_90 with Triton's own ptxas;
no kernel is left uncompiled; no compiled float min/max drops NaN. The full run takes minutes
(about 1,300 compiles; Triton's cache makes reruns fast); it runs in a subprocess because the
test session runs Triton under the interpreter, while compiling needs compiled-mode kernels.

The committed table benchmarks/results/compile/triton_resources.md comes from
`python -m fastmix.backends.triton.aot --md benchmarks/results/compile/triton_resources.md`.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _compiled_mode_env():
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # what Triton < 3.10 does by default; silences its warning
    return env


def test_every_launched_triton_variant_compiles_for_sm75_sm80_sm90(tmp_path):
    summary_path = tmp_path / "summary.json"
    table = tmp_path / "table.md"
    run = subprocess.run([sys.executable, "-m", "fastmix.backends.triton.aot", "--json", str(summary_path),
                          "--md", str(table), "--jobs", str(max(1, min(8, os.cpu_count() or 1)))],
                         cwd=REPO, env=_compiled_mode_env(), capture_output=True, text=True, timeout=3600)
    assert summary_path.exists(), run.stdout[-3000:] + run.stderr[-5000:]
    summary = json.loads(summary_path.read_text())
    assert not summary["launch_errors"], summary["launch_errors"][:10]
    assert not summary["failures"], summary["failures"][:10]
    assert not summary["kernels_never_launched"], summary["kernels_never_launched"]
    assert summary["passed"] and run.returncode == 0, run.stderr[-3000:]
    assert summary["capabilities"] == [75, 80, 90]
    assert summary["compiles"] == 3 * summary["variants"]
    # Every kernel of every module, each with its resources on each target.
    expected = {"_mixup_kernel", "_box_kernel", "_mask_blend_kernel", "_channel_mean_kernel", "_smooth_kernel",
                "_normalize_kernel", "_frame_base_kernel", "_scores_kernel"}
    assert {key.split(" ")[0] for key in summary["kernels"]} == expected
    for kernel, entry in summary["kernels"].items():
        for cap in ("75", "80", "90"):
            stats = entry["caps"][cap]
            assert stats["failed"] == 0 and stats["compiled"] == entry["variants"] > 0, (kernel, cap, stats)
            assert all(0 < r <= 255 for r in stats["regs"])
    text = table.read_text()
    assert "**Verdict: PASS**" in text and "| `_scores_kernel` |" in text


def test_recorder_sees_what_the_launcher_specialises():
    """The recorded signature follows Triton's own binder: a column slice's pointer loses its
    16-byte alignment, a float64 image changes the pointer type and the accumulator."""
    code = r"""
import json, torch
from fastmix import ops
from fastmix.backends.triton import aot
x = torch.rand(2, 3, 8, 19)
with aot.recording() as launches:
    ops.mixup_blend(x[..., :16], torch.tensor([1, 0]), torch.rand(2), backend="triton")
    ops.mixup_blend(x.double()[..., 1:17], torch.tensor([1, 0]), torch.rand(2), backend="triton")
out = []
for variant, grid in launches:
    sig = dict(variant.signature)
    attrs = {variant.signature[path[0]][0]: json.loads(a) for path, a in variant.attrs}
    consts = {variant.signature[path[0]][0]: v for path, v in variant.constexprs}
    out.append([variant.kernel, sig["x_ptr"], attrs["x_ptr"], consts["X_SAME"], consts["ACC"], list(grid)])
print(json.dumps(out))
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_compiled_mode_env(), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    first, second = json.loads(run.stdout.strip().splitlines()[-1])
    assert first[:2] == ["_mixup_kernel", "*fp32"] and first[2] == [["tt.divisibility", 16]]
    assert first[3] == "False"  # a column slice is read through its strides
    assert second[1] == "*fp64" and second[2] == [] and "float64" in second[4]
    assert first[5] == [2 * 3 * 1]  # 2 samples x 3 channel planes x one 128-pixel tile


def test_sizes_do_not_multiply_compiles():
    """Batch, channel count, height and width are `do_not_specialize`: frames of one plane size
    (7 x 9 here, and 9 x 7) with any batch or channel count share one compiled variant; sizes
    whose divisibility by 16 decides vectorisation (the plane, the sample's element count, the
    batch stride) stay specialised, so a 16 x 16 plane gets its own (aligned) variant."""
    code = r"""
import json, torch
from fastmix import ops
from fastmix.backends.triton import aot
with aot.recording() as launches:
    for batch, channels, height, width in [(1, 3, 7, 9), (16, 3, 7, 9), (5, 1, 9, 7), (7, 5, 7, 9), (2, 3, 16, 16)]:
        x = torch.rand(batch, channels, height, width)
        ops.mixup_blend(x, torch.arange(batch).flip(0), torch.rand(batch), backend="triton")
        g = torch.rand(batch, height, width)
        ops.sage_scores(g, g, torch.tensor([[1, 1], [0, -2]]), backend="triton")
print(json.dumps([[v.kernel, hash(v)] for v, _ in launches]))
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_compiled_mode_env(), capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    launches = json.loads(run.stdout.strip().splitlines()[-1])
    mixup = [h for kernel, h in launches if kernel == "_mixup_kernel"]
    scores = [h for kernel, h in launches if kernel == "_scores_kernel"]
    assert len(mixup) == len(scores) == 5
    assert len(set(mixup[:4])) == 1 and mixup[4] != mixup[0], mixup
    assert len(set(scores[:4])) <= 2, scores  # 7 x 9 and 9 x 7: widths 9 and 7 (neither a multiple of 16)
