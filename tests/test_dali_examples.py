"""The DALI examples and the DALI benchmark, run on the CPU at a tiny size (no timing assertions)."""
import json

import pytest
import torch

from benchmarks import bench_dali
from examples import dali_classification, dali_copy_paste_coco, dali_dynamic_mode


@pytest.mark.parametrize("op", ["sage", "cutmix"])
def test_classification_example_trains_on_mixed_batches(tmp_path, op):
    root = dali_classification.write_image_folder(str(tmp_path), per_class=4, size=24)
    losses = dali_classification.train(root, op, epochs=1, batch_size=4, size=16)
    assert len(losses) == 1 and 0 < losses[0] < 10


@pytest.mark.parametrize("op", ["cutmix", "saliencymix", "sage"])
def test_dynamic_mode_example_reads_decodes_mixes_and_trains(tmp_path, op):
    root = dali_classification.write_image_folder(str(tmp_path), per_class=3, size=24)
    losses = dali_dynamic_mode.train(root, op, epochs=2, batch_size=4, size=16)
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)


def test_dynamic_mode_batches_are_dali_decoded_and_resized(tmp_path):
    root = dali_classification.write_image_folder(str(tmp_path), per_class=3, size=24)
    seen = list(dali_dynamic_mode.batches(root, batch_size=4, size=16, seed=0))
    assert sum(images.shape[0] for images, _ in seen) == 3 * len(dali_classification.CLASSES)
    images, labels = seen[0]
    assert images.shape == (4, 16, 16, 3) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert set(torch.cat([lab for _, lab in seen]).tolist()) == set(range(len(dali_classification.CLASSES)))


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
            assert rates[mode]["cpu_ms_per_batch"] >= 0  # a tiny run may finish inside DALI's prefetch
        assert "added_cpu_fraction" in rates and rates["mechanism"]
