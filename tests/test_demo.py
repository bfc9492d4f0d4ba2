"""The README's main job, end to end on a small setting: it trains, corrects, and what it writes is consistent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from hf_verifix import CorrectionConfig
from hf_verifix.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE = EXAMPLES / "fashion_mnist_sap.py"


def load_example(path: Path = EXAMPLE):
    spec = importlib.util.spec_from_file_location(f"{path.stem}_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not Path(DEFAULT_FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists(),
    reason="needs Debian's dataset-fashion-mnist (`make test` installs it)",
)
def test_main_job_trains_corrects_and_writes_a_consistent_model(tmp_path, capsys):
    example = load_example()
    argv = [
        "--model", "test_resnet", "--epochs", "2", "--n-train", "600", "--n-val", "300", "--n-trusted", "100",
        "--alphas", "1e2", "1e4", "1e6", "--output-dir", str(tmp_path), "--seed", "1",
    ]  # fmt: skip
    summary = example.main(argv)
    printed = capsys.readouterr().out
    assert "test accuracy before correction" in printed and "after correction" in printed

    written = json.loads((tmp_path / "demo_summary.json").read_text())
    assert written["test_accuracy_before"] == summary["test_accuracy_before"]
    assert set(written["val_accuracy_curve"]) == {"100.0", "10000.0", "1000000.0"}
    report = json.loads((tmp_path / "correction_report.json").read_text())
    assert report["trusted"]["count"] == 100 and report["trusted"]["class_counts"] == [10] * 10  # per class
    assert CorrectionConfig.load(tmp_path).recalibrate_batchnorm is False  # the benchmark's choice

    # The saved model is the corrected one: reload it natively and recompute the printed test accuracy.
    args = example.parse_args(argv)
    _, _, test_set, noisy = example.prepare_data(args)
    assert abs(noisy.rate - 0.25) < 1e-9
    model = timm.create_model("test_resnet", pretrained=False, in_chans=1, num_classes=10)
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        predictions = torch.cat([model.eval()(x).argmax(1) for x in test_set.tensors[0].split(1000)])
    accuracy = (predictions == test_set.tensors[1]).double().mean().item()
    assert accuracy == pytest.approx(summary["test_accuracy_after"], abs=1e-9)

    # Loaded the timm way, preprocessed by timm's own data config from the saved folder: the same accuracy (the
    # saved pretrained_cfg is the training's 28×28 grey-level normalisation, not ImageNet's 224-px one).
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    native = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    data_config = resolve_data_config(model=native)
    assert tuple(data_config["input_size"]) == (1, 28, 28) and tuple(data_config["mean"]) == (0.286,)
    transform = create_transform(**data_config)
    raw, labels = example.load_arrays(args, "test")
    inputs = torch.stack([transform(Image.fromarray(image.numpy(), mode="L")) for image in raw])
    with torch.no_grad():
        predictions = torch.cat([native(x).argmax(1) for x in inputs.split(1000)])
    # The transform computes (x/255 − mean)/std like the demo; only float rounding of the ops may differ, so a
    # prediction may flip only where two logits tie to float32 precision: none is expected on 10,000 images.
    assert (predictions == labels).double().mean().item() == pytest.approx(summary["test_accuracy_after"], abs=1e-9)
    if summary["best_alpha"] is None:
        assert summary["test_accuracy_after"] == summary["test_accuracy_before"]


@pytest.mark.skipif(
    not Path(DEFAULT_FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists(),
    reason="needs Debian's dataset-fashion-mnist (`make test` installs it)",
)
@pytest.mark.parametrize("method", ["mdyrh", "crust"])
def test_robust_training_example_trains_in_the_trainer_then_saves_what_it_reports(
    method, tmp_path, capsys, monkeypatch
):
    monkeypatch.syspath_prepend(str(EXAMPLES))  # as when the script runs: it imports the main job's data preparation
    example = load_example(EXAMPLES / "robust_training_then_sap.py")
    argv = [
        "--method", method, "--model", "test_resnet", "--n-train", "300", "--n-val", "100", "--n-test", "200",
        "--epochs", "3", "--warmup-epochs", "1", "--n-trusted", "50", "--alphas", "1e3", "1e6",
        "--output-dir", str(tmp_path),
    ]  # fmt: skip
    result = example.main(argv)
    assert json.loads((tmp_path / "result.json").read_text()) == result
    report = json.loads((tmp_path / "correction_report.json").read_text())
    assert report["trusted"]["class_counts"] == [5] * 10 and report["applied_alpha"] == result["alpha"]
    if result["alpha"] is None:
        assert result["test_accuracy_after_sap"] == result["test_accuracy_trained"]
    else:
        assert result["held_out_accuracy"]["best"] > result["held_out_accuracy"]["trained"]
    # The saved model is the one whose accuracy was reported.
    args = example.parse_args(argv)
    _, _, test, _ = example.prepare_data(args, n_test=args.n_test)
    model = timm.create_model("test_resnet", pretrained=False, in_chans=1, num_classes=10)
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    assert example.accuracy(model, test) == pytest.approx(result["test_accuracy_after_sap"], abs=1e-12)
