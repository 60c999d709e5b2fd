"""The benchmark suite at its tiny size: every contender runs (or is skipped with a reason) and the
JSON, markdown and PNG outputs are written and well formed. A smoke test: no timing assertions."""
import json

import pytest

from benchmarks import references
from fastmix import cli
from fastmix.bench import report

ROW_KEYS = {"suite", "size", "operator", "contender", "kind", "library", "device", "dtype", "shape", "status"}
TIMING_KEYS = {"median_ms", "q1_ms", "q3_ms", "iqr_ms", "min_ms", "repeats", "warmup", "input_sets", "samples_ms",
               "images_per_s"}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert references.main(["--out", str(out), "--size", "tiny", "--device", "cpu", "--threads", "1", "--quiet"]) == 0
    return out


def test_writes_json_markdown_and_png(tiny_run):
    results = json.loads((tiny_run / "results.json").read_text())
    meta = results["meta"]
    assert meta["device"]["type"] == "cpu" and meta["versions"]["torch"] and meta["copy_bandwidth"]["GB_per_s"] > 0
    markdown = (tiny_run / "results.md").read_text()
    assert markdown.startswith("# fastmix benchmarks") and "## Key ratios" in markdown
    assert "| operator | contender |" in markdown and "## Training-step overhead" in markdown
    assert (tiny_run / "throughput.png").read_bytes()[:8] == PNG


def test_every_contender_ran_or_says_why_not(tiny_run):
    rows = json.loads((tiny_run / "results.json").read_text())["rows"]
    failed = [f"{r['operator']} / {r['contender']}: {r['reason']}" for r in rows if r["status"] == "failed"]
    assert not failed, failed
    for row in rows:
        assert ROW_KEYS <= row.keys(), row
        assert row["status"] in ("ok", "skipped", "same_as")
        if row["status"] == "ok":
            assert TIMING_KEYS <= row.keys() and row["repeats"] == len(row["samples_ms"]) >= 1
            assert row["q1_ms"] <= row["median_ms"] <= row["q3_ms"]
        else:
            assert row["reason"]
    timed = {(r["suite"], r["operator"], r["kind"]) for r in rows if r["status"] == "ok"}
    for operator in ("mixup", "cutmix", "cutout", "saliencymix", "sage"):
        assert ("operators", operator, "fastmix-pytorch") in timed
    for operator in ("mixup", "cutmix", "sage"):
        assert ("operators", operator, "reference") in timed
    assert ("train_step", "none", "baseline") in timed and ("train_step", "sage", "fastmix-auto") in timed
    # On the CPU the kernel path is the PyTorch path: marked, not timed twice.
    assert all(r["status"] == "same_as" for r in rows if r["kind"] == "fastmix-kernel")


def test_readme_index_lists_each_results_folder(tiny_run, tmp_path):
    folder = tmp_path / "cpu-test"
    folder.mkdir()
    (folder / "results.json").write_text((tiny_run / "results.json").read_text())
    (tmp_path / "README.md").write_text(f"# Results\n\n{report.README_BEGIN}\nold\n{report.README_END}\n\nfooter\n")
    text = report.update_readme(tmp_path).read_text()
    assert "cpu-test/results.md" in text and "cpu-test/throughput.png" in text
    assert "old" not in text and text.rstrip().endswith("footer")


def test_fastmix_bench_command(tmp_path):
    args = ["bench", "--out", str(tmp_path), "--size", "tiny", "--device", "cpu", "--sizes", "cifar",
            "--operators", "mixup", "--no-train-step", "--threads", "1", "--quiet"]
    assert cli.main(args) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {r["operator"] for r in rows} == {"mixup"} and {r["suite"] for r in rows} == {"operators"}
