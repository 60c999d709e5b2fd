"""The DALI examples and the DALI benchmark, run on the CPU at a tiny size (no timing assertions)."""
import json

import pytest

from benchmarks import bench_dali
from examples import dali_classification, dali_copy_paste_coco


@pytest.mark.parametrize("op", ["sage", "cutmix"])
def test_classification_example_trains_on_mixed_batches(tmp_path, op):
    root = dali_classification.write_image_folder(str(tmp_path), per_class=4, size=24)
    losses = dali_classification.train(root, op, epochs=1, batch_size=4, size=16)
    assert len(losses) == 1 and 0 < losses[0] < 10


def test_copy_paste_example_loads_jittered_batches(tmp_path, capsys):
    out = tmp_path / "copy_paste.png"
    dali_copy_paste_coco.main(["--data", str(tmp_path / "coco"), "--batches", "1", "--batch-size", "2",
                               "--size", "48", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "batch 0: objects per image" in printed and "(48, 48, 3) torch.uint8" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dali_benchmark_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    bench_dali.main(["--json", str(path), "--batch", "4", "--size", "16", "--batches", "1", "--warmup", "1",
                     "--operators", "mixup", "copy_paste"])
    report = json.loads(path.read_text())
    assert report["device"] == "cpu" and set(report["results"]) == {"mixup", "copy_paste"}
    for rates in report["results"].values():
        for mode in ("baseline", "in_pipeline", "after_pipeline"):
            assert rates[mode]["images_per_s"] > 0 and rates[mode]["images_per_cpu_s"] > 0
