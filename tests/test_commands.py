"""The hf-verifix CLI (hf_verifix.commands): evaluate, correct, select, env, usage errors, and accelerate launch.

Everything is offline: models are tiny and built once per session in conftest.py (``work``: a ViT and a timm ResNet,
an image folder and an HF cache seeded in a temporary folder; ``corrected_vit``: one CLI correction shared by several
tests). Pushing to the Hub is in test_integrations_hub.py.
"""

from __future__ import annotations

import csv
import json
import shlex
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
from testing_utils import CLASSES, FAKE_TOKEN, HAS_MATPLOTLIB, run_launched
from testing_utils import assert_no_token as _assert_no_token
from testing_utils import cli_data_args as _data_args
from testing_utils import safetensors_weights as _weights

from hf_verifix.commands.cli import main
from hf_verifix.hub import load_data, scrub_secrets

# Tiny models run as fast on one thread, and stay fast when other jobs share the CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------- evaluate
def test_cli_evaluates_a_model_by_id_from_the_cache(work, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    argv = ["evaluate", "--model", "org/tiny-vit", "--cache-dir", str(work["cache"]), *_data_args(work)]
    assert main([*argv, "--split", "validation"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 9 and 0.0 <= result["accuracy"] <= 1.0


def test_cli_refuses_classes_in_another_order_and_align_labels_renumbers_them(work, tmp_path, capsys):
    from transformers import ViTForImageClassification

    # The tiny ViT, told that its classes are the image folder's in another order.
    model = ViTForImageClassification.from_pretrained(work["vit"])
    names = ["class1", "class2", "class0"]
    model.config.id2label, model.config.label2id = dict(enumerate(names)), {n: i for i, n in enumerate(names)}
    folder = tmp_path / "named-vit"
    model.save_pretrained(folder)
    for file in work["vit"].glob("preprocessor_config.json"):
        (folder / file.name).write_bytes(file.read_bytes())
    argv = ["evaluate", "--model", str(folder), *_data_args(work), "--split", "validation"]
    assert main(argv) == 1
    assert "numbers the model's classes in another order" in capsys.readouterr().err
    assert main([*argv, "--align-labels"]) == 0
    aligned = json.loads(capsys.readouterr().out)["accuracy"]
    # The same accuracy by hand: the folder's class k is the model's class names.index(f"class{k}").
    from hf_verifix.data.source import as_source

    data = load_data(work["images"], "validation", cache_dir=work["datasets_cache"])
    source = as_source(data.dataset, ViTForImageClassification.from_pretrained(work["vit"]).eval(), 64)
    batch = next(iter(source.batches()))
    with torch.no_grad():
        predicted = model.eval()(batch.inputs).logits.argmax(-1)
    expected = torch.tensor([names.index(f"class{int(k)}") for k in batch.labels])
    assert aligned == pytest.approx(float((predicted == expected).double().mean()))
    assert (
        main(["evaluate", "--model", str(work["vit"]), *_data_args(work), "--split", "validation", "--align-labels"])
        == 1
    )
    assert "needs the model's class names" in capsys.readouterr().err  # LABEL_0.. are no names
    model.config.id2label = {0: "class0", 1: "Class0", 2: "class2"}  # one name for two classes
    model.save_pretrained(folder)
    assert main([*argv, "--align-labels"]) == 1
    assert "names ['class0'] are used by several classes" in capsys.readouterr().err


def test_align_labels_renumbers_the_datasets_own_column_when_the_training_labels_are_given_apart():
    import argparse

    import datasets
    from transformers import ViTConfig, ViTForImageClassification

    from hf_verifix.commands._common import align_labels_if_asked as _align_labels
    from hf_verifix.hub import LoadedData, LoadedModel

    names = ["cat", "dog", "bird"]
    config = ViTConfig(image_size=8, patch_size=4, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=8, num_labels=3, id2label=dict(enumerate(names)))  # fmt: skip
    loaded = LoadedModel(ViTForImageClassification(config), "transformers", "m", Path("."))
    features = datasets.Features(
        {"image": datasets.Value("int64"), "label": datasets.ClassLabel(names=["dog", "bird", "cat"]),
         "noisy": datasets.Value("int64")}
    )  # fmt: skip
    table = {"image": [0, 1, 2], "label": [0, 1, 2], "noisy": [1, 2, 0]}  # dog, bird, cat; noisy: the model's ids
    data = LoadedData(datasets.Dataset.from_dict(table, features=features), "image", "noisy", reference_column="label")
    _align_labels(loaded, data, argparse.Namespace(align_labels=True))
    assert data.dataset["label"] == [1, 2, 0] and data.dataset.features["label"].names == names
    assert data.dataset["noisy"] == [1, 2, 0]  # the training labels are left as given


# ---------------------------------------------------------------------------------------------------------- correct
def test_cli_correct_writes_a_native_model_card_and_reproduce_command(
    work, corrected_vit, tmp_path, capsys, monkeypatch
):
    from huggingface_hub import ModelCard
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    files = {p.name for p in corrected_vit.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "correction_config.json",
            "correction_report.json", "README.md"} <= files  # fmt: skip
    # With matplotlib, the correction report (report.md + figures) is written next to the model and the card embeds
    # every figure; its α curve replaces the card's own alpha_search.png.
    report_figures = {"alpha_curve.png", "per_class_accuracy.png", "confusion_matrices.png", "trusted_classes.png",
                      "spectrum.png", "timings.png"}  # fmt: skip
    assert (report_figures | {"report.md"} <= files) == HAS_MATPLOTLIB
    assert "alpha_search.png" not in files
    for name in report_figures & files:
        assert (corrected_vit / name).read_bytes()[:4] == b"\x89PNG"
    assert not [name for name in files if name.startswith(".")], "staging files left behind"
    # Loadable without hf_verifix, in the model's own format.
    AutoModelForImageClassification.from_pretrained(corrected_vit)
    AutoImageProcessor.from_pretrained(corrected_vit)

    report = json.loads((corrected_vit / "correction_report.json").read_text())
    config = json.loads((corrected_vit / "correction_config.json").read_text())
    assert (config["n_trusted"], config["per_class"], config["label_column"]) == (9, True, "noisy_label")
    assert report["trusted"]["count"] == 9 and "precision" in report["trusted"]  # clean labels known here
    search = report["alpha_search"]

    card = ModelCard.load(corrected_vit / "README.md")
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results["Accuracy before SAP"] == search["baseline_accuracy"]
    assert [v for k, v in results.items() if k.startswith("Accuracy after SAP")] == [search["best_accuracy"]]
    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-classification"
    assert "| 1e3 |" in card.text and "N_trust" in card.text and "`classifier`" in card.text
    assert "from `eval_noisy.json`, as noisy as the training labels" in card.text
    assert ("![Accuracy against α on the held-out data](alpha_curve.png)" in card.text) == HAS_MATPLOTLIB
    embedded = {line.split("](")[1].rstrip(")") for line in card.text.splitlines() if line.startswith("![")}
    assert embedded == (report_figures if HAS_MATPLOTLIB else set())

    # The card's command reproduces the same weights, run from the folder holding the model and data (local paths
    # are named by their base names: the card never publishes a path of this machine).
    command = card.text.split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert str(work["root"]) not in card.text
    monkeypatch.chdir(work["root"])
    argv = shlex.split(command)
    assert argv[:2] == ["hf-verifix", "correct"]
    argv[argv.index("--output-dir") + 1] = str(tmp_path / "again")
    assert main([*argv[1:], "--dataset-cache-dir", str(work["datasets_cache"]), "--no-progress"]) == 0
    again = _weights(tmp_path / "again")
    assert all(torch.equal(again[k], v) for k, v in _weights(corrected_vit).items())

    # The output folder is not replaced without --overwrite.
    before = (corrected_vit / "README.md").read_bytes()
    capsys.readouterr()
    assert main(["correct", "--model", str(work["vit"]), *_data_args(work), "--output-dir", str(corrected_vit)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (corrected_vit / "README.md").read_bytes() == before


def test_cli_correct_timm_with_a_fixed_alpha(work, tmp_path, capsys):
    import timm

    output = tmp_path / "resnet-sap"
    argv = [
        "correct", "--model", str(work["timm"]), *_data_args(work), "--eval-split", "validation",
        "--alpha", "10", "--n-trusted", "6", "--recalibrate-batchnorm", "--output-dir", str(output),
    ]  # fmt: skip
    assert main(argv) == 0
    assert "before" in capsys.readouterr().out
    # Native timm format, and the weights really changed.
    corrected = timm.create_model(f"local-dir:{output}", pretrained=True)
    original = _weights(work["timm"])
    assert any(not torch.equal(corrected.state_dict()[k], v) for k, v in original.items())
    from huggingface_hub import ModelCard

    card = ModelCard.load(output / "README.md")
    assert card.data.library_name == "timm" and len(card.data.eval_results) == 2
    assert "timm.create_model" in card.text and "--alpha 10" in card.text
    assert not (output / "alpha_search.png").exists()


def test_cli_refuses_an_uncorrectable_model_before_reading_data_or_skips_its_layers(work, tmp_path, capsys):
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    # "same" padding gives Conv2dSame layers: they pad inside forward, so SAP cannot correct them exactly.
    overlay = dict(input_size=(3, 32, 32), crop_pct=1.0)
    model = timm.create_model(
        "test_efficientnet", pretrained=False, num_classes=CLASSES, pad_type="same", pretrained_cfg_overlay=overlay
    )
    folder = tmp_path / "same-pad"
    save_for_hf(model, str(folder), safe_serialization=True)
    same = sorted(name for name, m in model.named_modules() if type(m).__name__ == "Conv2dSame")
    assert len(same) >= 2
    common = ["correct", "--model", str(folder), "--alpha", "10", "--n-trusted", "6", "--no-progress"]

    # Refused before any data is read: a dataset that does not exist is never reached.
    output = tmp_path / "refused"
    argv = [*common, "--dataset", str(tmp_path / "no-such-data"), "--output-dir", str(output)]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert all(name in error for name in same) and "Conv2dSame" in error and "skip" in error
    assert not output.exists()

    # --on-uncorrectable skip: the Conv2dSame weights are left bit-identical, the other layers are corrected.
    output = tmp_path / "skipped"
    argv = [*common, *_data_args(work), "--on-uncorrectable", "skip", "--output-dir", str(output)]
    assert main(argv) == 0
    capsys.readouterr()
    before, after = _weights(folder), _weights(output)
    assert all(torch.equal(after[f"{name}.weight"], before[f"{name}.weight"]) for name in same)
    changed = [k for k in before if k.endswith(".weight") and not torch.equal(after[k], before[k])]
    assert changed and not any(k[: -len(".weight")] in same for k in changed)
    saved = json.loads((output / "correction_config.json").read_text())
    assert saved["on_uncorrectable"] == "skip"
    assert "--on-uncorrectable skip" in (output / "README.md").read_text()


def test_cli_select_writes_json_and_csv_that_correct_accepts(work, tmp_path, capsys):
    base = ["select", "--model", str(work["vit"]), *_data_args(work), "--n-trusted", "6", "--per-class"]
    assert main([*base, "--limit", "15", "--output", str(tmp_path / "trusted.json")]) == 0
    chosen = json.loads((tmp_path / "trusted.json").read_text())
    limited = load_data(work["images"], "train", limit=15, cache_dir=work["datasets_cache"])
    assert len(chosen["indices"]) == len(chosen["scores"]) == 6 and set(chosen["indices"]) <= set(limited.rows)
    assert sorted(np.bincount(chosen["labels"], minlength=3).tolist()) == [2, 2, 2]

    assert main([*base, "--noisy-labels", str(work["noisy"]), "--output", str(tmp_path / "trusted.csv")]) == 0
    with open(tmp_path / "trusted.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 6 and {"index", "score", "label"} == set(rows[0])

    output = tmp_path / "from-trusted"
    argv = ["correct", "--model", str(work["vit"]), *_data_args(work), "--trusted", str(tmp_path / "trusted.csv"),
            "--alpha", "1e4", "--output-dir", str(output)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((output / "correction_report.json").read_text())
    assert report["trusted"]["count"] == 6 and report["trusted"]["selector"] == "given (trusted_indices)"
    assert "--trusted" in (output / "README.md").read_text()


def test_cli_usage_errors_exit_2_and_runtime_errors_exit_1(work, tmp_path, capsys):
    assert main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    assert main(["correct", "--help"]) == 0
    assert "--push-to-hub" in capsys.readouterr().out
    model = ["--model", str(work["vit"]), *_data_args(work)]
    usage = [
        [],
        ["frobnicate"],
        ["correct", "--dataset", "x"],
        ["correct", *model, "--alpha", "1", "--alphas", "1,2"],
        ["correct", *model, "--alpha", "-3"],
        ["correct", *model, "--alphas", "1e3,1e4"],  # a search needs --eval-split
        ["correct", *model, "--push-to-hub", "not a repo id"],
        ["push", str(tmp_path), "--repo", "a/b/c"],
        ["select", *model, "--output", str(tmp_path / "x.txt")],
        ["correct", *model, "--selector", "no-such-selector", "--alpha", "1e4"],
        ["correct", *model, "--seed", "-1", "--n-trusted", "6", "--alpha", "1e4"],  # rejected by CorrectionConfig
    ]
    for argv in usage:
        assert main(argv) == 2, argv
    capsys.readouterr()
    failures = {
        "no/such/model": "neither an existing local path",
        str(work["images"] / "train" / "class0" / "0.png"): "not a model folder nor a weights file",
    }
    for model_path, message in failures.items():
        assert main(["evaluate", "--model", model_path, *_data_args(work)]) == 1
        assert message in capsys.readouterr().err
    assert main(["correct", "--model", str(work["vit"]), *_data_args(work), "--output-dir", str(tmp_path / "o")]) == 1
    assert "n_trusted=1000 is larger than the data (24 samples)" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "empty"), "--repo", "me/x"]) == 1
    assert "nothing to push" in capsys.readouterr().err


def test_env_reports_versions_but_never_the_token(monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", f"https://user:{FAKE_TOKEN}@hub.example")
    assert main(["env"]) == 0
    assert main(["env", "--json"]) == 0
    captured = capsys.readouterr()
    _assert_no_token(captured.out, captured.err)
    report = json.loads(captured.out[captured.out.index("{") :])
    assert report["hub token"] == "set (environment)" and report["torch"] == version("torch")
    assert scrub_secrets(f"Bearer {FAKE_TOKEN}") == "Bearer ***"


@pytest.mark.slow
@pytest.mark.distributed
def test_only_the_main_process_writes_under_accelerate_launch(work, tmp_path):
    output = tmp_path / "dist"
    arguments = [
        "-m", "hf_verifix.commands.cli", "correct", "--model", str(work["timm"]), *_data_args(work),
        "--eval-split", "validation", "--n-trusted", "6", "--alphas", "10,1e4", "--output-dir", str(output),
    ]  # fmt: skip
    done = run_launched(arguments)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "running on 2 processes" in done.stdout and done.stdout.count("saved the corrected model") == 1
    assert (output / "README.md").is_file() and (output / "model.safetensors").is_file()


def test_the_scale_options_reach_the_configuration_and_bad_values_exit_2(capsys: pytest.CaptureFixture) -> None:
    from hf_verifix.commands.cli import build_parser
    from hf_verifix.commands.correct import correction_config

    scale = ["--solver", "eigh", "--gram-precision", "float32", "--max-rows-per-layer", "9"]
    args = build_parser().parse_args(["correct", "--model", "m", "--dataset", "d", *scale])
    config = correction_config(args)
    assert (config.solver, config.gram_precision, config.max_rows_per_layer) == ("eigh", "float32", 9)
    defaults = correction_config(build_parser().parse_args(["correct", "--model", "m", "--dataset", "d"]))
    assert (defaults.solver, defaults.gram_precision, defaults.max_rows_per_layer) == ("auto", "float64", None)
    for bad in (["--solver", "svd"], ["--max-rows-per-layer", "0"], ["--gram-precision", "float16"]):
        try:
            code = main(["correct", "--model", "m", "--dataset", "d", *bad])
        except SystemExit as exited:  # argparse's own refusals exit; the library's are returned as usage errors
            code = exited.code
        assert code == 2 and bad[0] in capsys.readouterr().err


def test_input_size_sets_a_timm_models_preprocessing_and_is_saved_with_it(work, tmp_path, capsys):
    output = tmp_path / "resnet-24px"
    argv = [
        "correct", "--model", str(work["timm"]), *_data_args(work), "--alpha", "10", "--n-trusted", "6",
        "--input-size", "24", "--output-dir", str(output), "--no-report",
    ]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    saved = json.loads((output / "config.json").read_text())["pretrained_cfg"]
    assert saved["input_size"] == [3, 24, 24]  # the folder's own config said 32
    report = json.loads((output / "correction_report.json").read_text())
    stem = next(iter(report["layers"]))
    assert report["layers"][stem]["rows"] == 6 * 12 * 12  # the stride-2 stem saw 24-px images (16 × 16 at 32 px)
    vit = ["correct", "--model", str(work["vit"]), *_data_args(work), "--alpha", "10", "--input-size", "24"]
    assert main([*vit, "--output-dir", str(tmp_path / "vit")]) == 2
    assert "--input-size applies to timm models" in capsys.readouterr().err


def test_the_card_carries_the_base_models_license_and_the_framework_versions(work, tmp_path, capsys):
    import shutil

    from huggingface_hub import ModelCard

    base = tmp_path / "licensed-vit"
    shutil.copytree(work["vit"], base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# a ViT\n", encoding="utf-8")
    output = tmp_path / "licensed-vit-sap"
    common = [*_data_args(work), "--alpha", "10", "--n-trusted", "6"]
    assert main(["correct", "--model", str(base), *common, "--output-dir", str(output)]) == 0
    capsys.readouterr()
    card = ModelCard.load(output / "README.md")
    assert card.data.license == "mit"  # carried over from the base model's card
    assert "## Framework versions" in card.text and f"- torch {version('torch')}" in card.text
    unlicensed = tmp_path / "unlicensed-sap"
    assert main(["correct", "--model", str(work["vit"]), *common, "--output-dir", str(unlicensed)]) == 0
    assert ModelCard.load(unlicensed / "README.md").data.license is None  # never invented


def test_a_dataset_revision_is_passed_on_and_recorded_in_the_card_and_the_command() -> None:
    from hf_verifix.commands._card import card_info, reproduce_command
    from hf_verifix.commands.cli import build_parser
    from hf_verifix.hub import LoadedData, LoadedModel
    from hf_verifix.reporting.model_card import render_model_card

    data = ["--dataset", "org/images", "--dataset-revision", "v1.2"]
    args = build_parser().parse_args(["correct", "--model", "org/vit", *data, "--output-dir", "o"])
    loaded = LoadedModel(None, "transformers", "org/vit", Path("."), repo_id="org/vit")
    train = LoadedData(None, "image", "label", source="org/images", is_hub=True, split="train")
    info = card_info(args, loaded, train, None, None)
    assert info.dataset_revision == "v1.2"
    assert "--dataset-revision v1.2" in reproduce_command(args, loaded, train, None)
    card = render_model_card({"applied_alpha": 10.0, "config": {}, "layers": {}}, info)
    assert "| dataset revision | `v1.2` |" in str(card)
