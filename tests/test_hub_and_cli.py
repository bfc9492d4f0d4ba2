"""Loading by Hub ID or path, saving with a model card, pushing to a local Hub server, and the hf-verifix CLI.

Everything is offline: models are tiny and built here (``pretrained=False``), the HF cache is seeded in a temporary
folder, and pushes go to ``tests/hub_server.py`` (a Hub-compatible server on 127.0.0.1) through the real
``huggingface_hub`` client. The end-to-end run that needs ``HF_ENDPOINT`` at import time runs in a subprocess.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_verifix import ProjectionCorrector
from hf_verifix.commands.cli import main
from hf_verifix.errors import DataError
from hf_verifix.hub import HubError, LoadError, load_data, load_model, push_folder, push_to_hub, scrub_secrets

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer
from testing_utils import free_port, run_launched, save_tiny_timm, tiny_vit, write_image_folder

FAKE_TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdef"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"
CLASSES = 3


# ---------------------------------------------------------------------------------------------------------- fixtures
def _tiny_vit(folder: Path) -> None:
    from transformers import ViTImageProcessor

    tiny_vit(num_labels=CLASSES, image_size=32, patch_size=8).save_pretrained(folder)  # 2 layers, 32 wide, seed 0
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)


def _image_folder(root: Path) -> None:
    write_image_folder(root, CLASSES, {"train": 8, "validation": 3})


def _seed_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The layout huggingface_hub reads offline: refs/main names a snapshot folder holding the files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / SNAPSHOT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)


# Tiny models run as fast on one thread, and stay fast when other jobs share the CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub_cli")
    paths = {
        "root": root,
        "vit": root / "vit",
        "timm": root / "timm",
        "images": root / "images",
        "cache": root / "hf_cache",
        "datasets_cache": root / "datasets_cache",
    }
    _tiny_vit(paths["vit"])
    save_tiny_timm(paths["timm"], CLASSES)
    _image_folder(paths["images"])
    _seed_cache(paths["cache"], "org/tiny-vit", paths["vit"])
    _seed_cache(paths["cache"], "timm/tiny-resnet", paths["timm"])
    # Training labels with 25% of them wrong (one per row of the train split, in imagefolder order).
    clean = np.repeat(np.arange(CLASSES), 8)
    noisy = clean.copy()
    flip = np.random.default_rng(1).choice(len(noisy), size=6, replace=False)
    noisy[flip] = (noisy[flip] + 1) % CLASSES
    paths["noisy"] = root / "noisy.txt"
    paths["noisy"].write_text("\n".join(map(str, noisy)) + "\n")
    # The validation split's labels, as noisy (α is chosen on them: no clean label is used).
    paths["eval_noisy"] = root / "eval_noisy.json"
    paths["eval_noisy"].write_text(json.dumps([0, 0, 1, 1, 1, 1, 2, 2, 0]))
    return paths


def _data_args(work: dict[str, Path]) -> list[str]:
    return ["--dataset", str(work["images"]), "--dataset-cache-dir", str(work["datasets_cache"]), "--no-progress"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def corrected_vit(work) -> Path:
    """One CLI correction of the tiny ViT (α searched on the validation split), shared by several tests."""
    output = work["root"] / "vit-sap"
    argv = [
        "correct", "--model", str(work["vit"]), *_data_args(work), "--eval-split", "validation",
        "--noisy-labels", str(work["noisy"]), "--eval-noisy-labels", str(work["eval_noisy"]), "--n-trusted", "9",
        "--per-class", "--alphas", "10,1e3,1e5", "--output-dir", str(output),
    ]  # fmt: skip
    assert main(argv) == 0
    return output


@pytest.fixture(scope="module")
def hub():
    with HubServer(tokens={FAKE_TOKEN}) as server:
        yield server


@pytest.fixture
def online(monkeypatch, hub):
    """This process talks to the local Hub: offline mode off, HF_ENDPOINT (read at call time by hf_verifix.hub)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return hub


def _assert_no_token(*texts: str, folders: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert FAKE_TOKEN not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert FAKE_TOKEN.encode() not in path.read_bytes(), path


# ---------------------------------------------------------------------------------------------------------- loading
def test_load_by_id_from_a_seeded_cache_with_the_hub_offline(work, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(work["cache"]))  # what HF_HUB_CACHE / HF_HOME set at import
    vit = load_model("org/tiny-vit")
    assert (vit.library, vit.repo_id, vit.revision, vit.num_classes) == ("transformers", "org/tiny-vit", SNAPSHOT, 3)
    assert type(vit.processor).__name__.startswith("ViTImageProcessor")
    from transformers import AutoModelForImageClassification

    original = AutoModelForImageClassification.from_pretrained(work["vit"]).state_dict()
    assert all(torch.equal(vit.model.state_dict()[k], v) for k, v in original.items())

    original = _weights(work["timm"])
    for model_id in ("hf-hub:timm/tiny-resnet", "timm/tiny-resnet", f"hf-hub:timm/tiny-resnet@{SNAPSHOT}"):
        resnet = load_model(model_id, cache_dir=work["cache"])
        assert (resnet.library, resnet.repo_id, resnet.num_classes) == ("timm", "timm/tiny-resnet", 3)
        assert all(torch.equal(resnet.model.state_dict()[k], v) for k, v in original.items())

    with pytest.raises(LoadError, match="HF_HUB_OFFLINE=1"):
        load_model("org/not-cached", cache_dir=work["cache"])
    with pytest.raises(LoadError, match="neither an existing local path nor a valid Hub model ID"):
        load_model("./no/such/folder")


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


def test_local_folders_checkpoints_and_safe_loading(work, tmp_path):
    folder = load_model(work["timm"])
    assert folder.library == "timm" and folder.repo_id is None
    state = folder.model.state_dict()
    # A bare weights file with its timm architecture; classes are read from the classifier's shape.
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "weights.safetensors"))
    loaded = load_model(tmp_path / "weights.safetensors", architecture="test_resnet")
    assert loaded.num_classes == 3 and all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    torch.save({"state_dict": state}, tmp_path / "checkpoint.pth")
    assert load_model(tmp_path / "checkpoint.pth", architecture="test_resnet").num_classes == 3
    with pytest.raises(LoadError, match=r"architecture=.resnet18."):
        load_model(tmp_path / "checkpoint.pth")
    # A pickle that needs code is refused by torch.load(weights_only=True), never executed.
    torch.save({"state_dict": state, "extra": Path("x")}, tmp_path / "unsafe.pth")
    with pytest.raises(LoadError, match="weights_only=True"):
        load_model(tmp_path / "unsafe.pth", architecture="test_resnet")

    # Remote code is never run unless asked for.
    custom = tmp_path / "custom"
    custom.mkdir()
    marker = tmp_path / "code-ran"
    (custom / "config.json").write_text(
        json.dumps({"model_type": "verifix-custom", "auto_map": {"AutoConfig": "configuration.C",
                    "AutoModelForImageClassification": "modeling.M"}})
    )  # fmt: skip
    for name in ("configuration.py", "modeling.py"):
        (custom / name).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(LoadError, match="trust_remote_code=True"):
        load_model(custom)
    assert not marker.exists()


def test_load_data_splits_limits_and_noisy_labels(work, tmp_path):
    cache = work["datasets_cache"]
    data = load_data(work["images"], "train", cache_dir=cache)
    assert (data.num_rows, data.image_column, data.label_column, data.reference_column) == (24, "image", "label", None)
    assert load_data(work["images"], "train[:50%]", cache_dir=cache).num_rows == 12

    limited = load_data(work["images"], "train", limit=10, seed=3, cache_dir=cache)
    again = load_data(work["images"], "train", limit=10, seed=3, cache_dir=cache)
    assert limited.rows == again.rows == sorted(limited.rows) and len(set(limited.rows)) == 10

    noisy = np.loadtxt(work["noisy"], dtype=np.int64)
    np.save(tmp_path / "noisy.npy", noisy)
    (tmp_path / "noisy.json").write_text(json.dumps({"labels": noisy.tolist()}))
    for source in (work["noisy"], tmp_path / "noisy.npy", tmp_path / "noisy.json"):
        loaded = load_data(work["images"], "train", noisy_labels=source, limit=10, seed=3, cache_dir=cache)
        assert (loaded.label_column, loaded.reference_column) == ("noisy_label", "label")
        assert loaded.labels().tolist() == noisy[limited.rows].tolist()
        assert loaded.labels("label").tolist() == data.labels()[limited.rows].tolist()

    with_column = data.dataset.add_column("given", noisy.tolist())
    from_column = load_data(with_column, noisy_label_column="given")
    assert from_column.label_column == "given" and from_column.labels().tolist() == noisy.tolist()

    (tmp_path / "short.txt").write_text("0\n1\n")
    with pytest.raises(DataError, match="holds 2 labels but split 'train' has 24 rows"):
        load_data(work["images"], "train", noisy_labels=tmp_path / "short.txt", cache_dir=cache)
    (tmp_path / "words.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="integer"):
        load_data(work["images"], "train", noisy_labels=tmp_path / "words.txt", cache_dir=cache)

    import datasets

    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": data.dataset, "test": data.dataset.select(range(5))}).save_to_disk(saved)
    assert load_data(saved, "test").num_rows == 5
    assert load_data(saved, "train[-4:]").num_rows == 4
    with pytest.raises(DataError, match=r"its splits are \['test', 'train'\]"):
        load_data(saved, "validation")


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


# ---------------------------------------------------------------------------------------------------------- pushing
@pytest.mark.hub
def test_push_uploads_one_commit_and_never_replaces_without_overwrite(work, corrected_vit, online, capsys):
    hub = online
    assert main(["push", str(corrected_vit), "--repo", "tester/vit-push"]) == 0
    repo = hub.repo("tester/vit-push")
    assert repo is not None and len(repo.commits) == 1
    assert set(repo.files) == {p.name for p in corrected_vit.iterdir()}
    assert repo.files["model.safetensors"] == (corrected_vit / "model.safetensors").read_bytes()
    assert FAKE_TOKEN in hub.tokens_seen  # the planted token was really used...

    card = repo.files["README.md"]
    assert main(["push", str(corrected_vit), "--repo", "tester/vit-push"]) == 1
    err = capsys.readouterr().err
    assert "already holds README.md" in err and "--overwrite" in err and str(corrected_vit) in err
    assert len(repo.commits) == 1 and repo.files["README.md"] == card

    assert main(["push", str(corrected_vit), "--repo", "tester/vit-push", "--overwrite"]) == 0
    assert len(repo.commits) == 2
    # A card planted on another repo is protected too.
    hub.add_repo("tester/has-card", {"README.md": b"---\nlicense: mit\n---\nmine"})
    assert main(["push", str(corrected_vit), "--repo", "tester/has-card"]) == 1
    assert hub.repo("tester/has-card").files["README.md"].endswith(b"mine")
    # The card's metadata is validated by the Hub before anything is committed.
    bad = corrected_vit.parent / "bad-card"
    bad.mkdir()
    (bad / "README.md").write_text("---\nmodel-index:\n- results: []\n---\n# no name\n")
    assert main(["push", str(bad), "--repo", "tester/bad-card"]) == 1
    assert "rejected the model card" in capsys.readouterr().err and hub.repo("tester/bad-card") is None
    # `correct --push-to-hub` checks before computing anything.
    never = corrected_vit.parent / "never-written"
    argv = ["correct", "--model", str(work["vit"]), *_data_args(work), "--output-dir", str(never),
            "--push-to-hub", "tester/has-card"]  # fmt: skip
    assert main(argv) == 1
    assert "checked before correcting" in capsys.readouterr().err and not never.exists()
    captured = capsys.readouterr()
    _assert_no_token(captured.out, captured.err)  # ...and never shown


@pytest.mark.hub
def test_corrector_push_to_hub_writes_a_card_with_the_search_scores_in_one_commit(online, tmp_path):
    from huggingface_hub import ModelCard
    from safetensors.torch import load

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    data = torch.utils.data.TensorDataset(torch.randn(30, 12), torch.arange(30) % 3)
    corrector = ProjectionCorrector(model, n_trusted=6, per_class=True, progress=False).fit(data)
    search = corrector.search_alpha(torch.utils.data.TensorDataset(torch.randn(20, 12), torch.arange(20) % 3))
    url = push_to_hub(corrector, "tester/linear-sap")
    repo = online.repo("tester/linear-sap")
    assert url and len(repo.commits) == 1
    assert {"README.md", "model.safetensors", "correction_config.json", "correction_report.json"} <= set(repo.files)
    pushed = load(repo.files["model.safetensors"])
    assert all(torch.equal(pushed[k], v) for k, v in model.state_dict().items())  # the corrected weights
    card = ModelCard(repo.files["README.md"].decode())
    after = search.best_accuracy if search.best_alpha is not None else search.baseline_accuracy
    assert [r.metric_value for r in card.data.eval_results] == [search.baseline_accuracy, after]
    with pytest.raises(
        HubError, match=r"already holds .*overwrite=True.*Nothing was lost: the model and its card"
    ) as info:
        push_to_hub(corrector, "tester/linear-sap")
    kept = Path(str(info.value).split("card are in '")[1].split("'")[0])  # the folder the message names exists
    assert (kept / "model.safetensors").is_file() and len(repo.commits) == 1
    shutil.rmtree(kept.parent)
    assert push_to_hub(corrector, "tester/linear-sap", overwrite=True) and len(repo.commits) == 2


@pytest.mark.hub
def test_failed_pushes_keep_the_output_and_name_it(work, corrected_vit, online, monkeypatch, tmp_path, capsys):
    from huggingface_hub import constants

    # A refused token.
    monkeypatch.setenv("HF_TOKEN", "hf_WRONGtoken0123456789abcdefghij")
    assert main(["push", str(corrected_vit), "--repo", "tester/refused"]) == 1
    err = capsys.readouterr().err
    assert "refused the credentials" in err and str(corrected_vit) in err and "hf_WRONG" not in err
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)

    # Offline mode: the push fails naming the folder; `correct --push-to-hub` refuses before computing anything.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE=1") as caught:
        push_folder(corrected_vit, "tester/offline")
    assert str(corrected_vit) in str(caught.value)
    argv = ["correct", "--model", str(work["vit"]), *_data_args(work), "--output-dir", str(tmp_path / "never"),
            "--push-to-hub", "tester/offline"]  # fmt: skip
    assert main(argv) == 1
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err and not (tmp_path / "never").exists()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    # An unreachable Hub at the end of a correction: the model and card are on disk, the message says where.
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    output = tmp_path / "kept"
    argv = ["correct", "--model", str(work["vit"]), *_data_args(work), "--n-trusted", "6", "--alpha", "1e4",
            "--output-dir", str(output), "--push-to-hub", "tester/unreachable"]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "could not be reached" in captured.err and str(output) in captured.err
    assert f"hf-verifix push {output} --repo tester/unreachable" in captured.err
    assert {"README.md", "model.safetensors", "config.json", "correction_config.json"} <= {
        p.name for p in output.iterdir()
    }
    _assert_no_token(captured.out, captured.err, folders=(output,))


_END_TO_END = textwrap.dedent(
    """
    import json, sys
    import torch
    from hf_verifix.commands.cli import main

    argv, output, repo_id, result_file = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    result = {"rc": main(argv)}
    if result["rc"] == 0:
        from huggingface_hub import HfApi, ModelCard, hf_hub_download
        from transformers import AutoModelForImageClassification

        card = ModelCard.load(repo_id)
        result["eval_results"] = {r.metric_name: r.metric_value for r in card.data.eval_results}
        result["base_model"] = card.data.base_model
        result["datasets"] = card.data.datasets
        result["card"] = card.text
        result["files"] = HfApi().list_repo_files(repo_id)
        if "alpha_curve.png" in result["files"]:
            result["png"] = open(hf_hub_download(repo_id, "alpha_curve.png"), "rb").read()[:4].hex()
        remote = AutoModelForImageClassification.from_pretrained(repo_id).state_dict()
        local = AutoModelForImageClassification.from_pretrained(output).state_dict()
        result["weights_equal"] = all(torch.equal(remote[k], local[k]) for k in local)
    json.dump(result, open(result_file, "w"))
    """
)


@pytest.mark.hub
def _dataset_repo_files(work: dict[str, Path], folder: Path) -> dict[str, bytes]:
    """The image folder as a Hub dataset repo: one parquet file per split, images embedded, rows in the same order."""
    import datasets

    files = {}
    for split in ("train", "validation"):
        data = load_data(work["images"], split, cache_dir=work["datasets_cache"]).dataset
        embedded = datasets.Dataset.from_dict(
            {"image": [row["image"] for row in data], "label": data["label"][:]}, features=data.features
        )
        embedded.to_parquet(folder / f"{split}.parquet")
        files[f"data/{split}-00000-of-00001.parquet"] = (folder / f"{split}.parquet").read_bytes()
    return files


@pytest.mark.hub
def test_end_to_end_load_by_id_correct_push_and_reload_by_id(work, hub, tmp_path):
    """Model and data by Hub ID, correction, one-commit push, reload by ID: the real client configured only by
    environment (HF_ENDPOINT is read at import), as a user runs it."""
    hub.add_repo("org/tiny-vit", {p.name: p.read_bytes() for p in work["vit"].iterdir()})
    hub.add_repo("tester/tiny-images", _dataset_repo_files(work, tmp_path), repo_type="dataset")
    output = tmp_path / "out"
    argv = [
        "correct", "--model", "org/tiny-vit", "--dataset", "tester/tiny-images", "--eval-split", "validation",
        "--noisy-labels", str(work["noisy"]), "--n-trusted", "9", "--per-class", "--alphas", "10,1e3,1e5",
        "--output-dir", str(output), "--push-to-hub", "tester/tiny-vit-sap", "--no-progress",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=hub.url, HF_TOKEN=FAKE_TOKEN, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="0",
        TRANSFORMERS_OFFLINE="0", HF_DATASETS_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1", OMP_NUM_THREADS="1",
    )  # fmt: skip
    result_file = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-c", _END_TO_END, json.dumps(argv), str(output), "tester/tiny-vit-sap", str(result_file)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(result_file.read_text())
    assert result["rc"] == 0, done.stderr[-4000:]
    assert "--eval-noisy-labels" in done.stderr  # warned: the held-out split is scored with the dataset's labels

    report = json.loads((output / "correction_report.json").read_text())
    search = report["alpha_search"]
    assert result["eval_results"]["Accuracy before SAP"] == search["baseline_accuracy"]
    assert [v for k, v in result["eval_results"].items() if k.startswith("Accuracy after")] == [
        search["best_accuracy"]
    ]
    assert result["base_model"] == "org/tiny-vit" and result["datasets"] == ["tester/tiny-images"]
    assert result["weights_equal"]
    assert f"--revision {hub.repo('org/tiny-vit').sha}" in result["card"]  # the command pins the base revision
    assert {"README.md", "model.safetensors", "config.json", "preprocessor_config.json",
            "correction_config.json"} <= set(result["files"])  # fmt: skip
    if HAS_MATPLOTLIB:
        assert result["png"] == "89504e47" and "](alpha_curve.png)" in result["card"]
    pushed = hub.repo("tester/tiny-vit-sap")
    assert pushed is not None and len(pushed.commits) == 1  # model, card and plot in ONE commit
    assert FAKE_TOKEN in hub.tokens_seen
    _assert_no_token(done.stdout, done.stderr, result_file.read_text(), folders=(output,))
    for content in pushed.files.values():
        assert FAKE_TOKEN.encode() not in content


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
