"""examples/train_classifier.py runs end to end: one tiny epoch per method, a PNG and an accuracy."""
import importlib.util
import pathlib

import pytest

pytest.importorskip("sklearn", reason="the example's data set ships with scikit-learn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_classifier.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_classifier", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["none", "mixup", "cutmix", "saliencymix", "sage"])
def test_example_trains_one_epoch_and_plots(method, tmp_path, capsys):
    out = tmp_path / f"{method}.png"
    summary = load_example().main(["--method", method, "--epochs", "1", "--train-size", "96", "--batch-size", "48",
                                   "--size", "12", "--out", str(out), "--no-progress"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["method"] == method and len(summary["test_acc"]) == 1 and summary["train_images"] == 96
    assert 0.0 <= summary["final_test_acc"] <= 1.0 and summary["train_loss"][0] > 0
    assert "final test accuracy" in capsys.readouterr().out


def test_example_rejects_unknown_method():
    with pytest.raises(SystemExit):
        load_example().parse_args(["--method", "puzzlemix"])
