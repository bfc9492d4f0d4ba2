"""Reliability of the CLI, the configuration and model/data loading: bad inputs fail fast with a typed error.

Every bad input in ``CASES`` is a ``hf-verifix`` argv (run in-process with ``hf_verifix.commands.cli.main``; the exit
code and a regex of stderr are checked) or a library call (the exact exception type and a regex of its message).
Messages name what was received and the fix. Cases whose ``--model`` does not exist show that the check runs before
anything is loaded (loading would fail with exit 1 and another message). Everything is tiny, seeded and offline.
"""

from __future__ import annotations

import json
import pickle
import re
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from testing_utils import save_tiny_timm, write_image_folder
from torch import nn

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.commands.cli import main
from hf_verifix.errors import ConfigError
from hf_verifix.hub import LoadError, load_data, load_model

CLASSES = 3
# A device index no machine has: unavailable on a CPU runner and on a GPU one alike.
MISSING_GPU = f"cuda:{torch.cuda.device_count()}"
DEEP = "[" * 100_000 + "]" * 100_000  # json recurses once per level: RecursionError without a guard


# ---------------------------------------------------------------------------------------------------------- fixtures
class _RunsCode:
    """Unpickling this runs ``open(marker, 'w')``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _vit_config(folder: Path) -> None:
    from transformers import ViTConfig

    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, num_labels=CLASSES,
    )  # fmt: skip
    config.save_pretrained(folder)


def _image_folder(root: Path) -> None:
    write_image_folder(root, CLASSES, {"train": 4, "validation": 2})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, str]:
    """A tiny timm model folder, an image folder, label files and one broken artefact per loading failure."""
    root = tmp_path_factory.mktemp("reliability")
    paths: dict[str, Path] = {"root": root, "timm": root / "timm", "images": root / "images", "dcache": root / "dc"}
    save_tiny_timm(paths["timm"], CLASSES)
    _image_folder(paths["images"])
    weights = (paths["timm"] / "model.safetensors").read_bytes()
    paths["missing"] = root / "no-such-model"

    # Weights cut short or empty (an interrupted download), in a timm folder, a transformers folder and a bare file.
    paths["truncated"] = root / "truncated"
    paths["truncated"].mkdir()
    (paths["truncated"] / "config.json").write_bytes((paths["timm"] / "config.json").read_bytes())
    (paths["truncated"] / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    paths["empty_vit"] = root / "empty_vit"
    _vit_config(paths["empty_vit"])
    (paths["empty_vit"] / "model.safetensors").write_bytes(b"")
    paths["half_file"] = root / "half.safetensors"
    paths["half_file"].write_bytes(weights[:100])

    # Pickled weights that would run code when unpickled, in a transformers and in a timm folder.
    paths["marker"] = root / "code-ran"
    paths["evil_vit"] = root / "evil_vit"
    _vit_config(paths["evil_vit"])
    paths["evil_timm"] = root / "evil_timm"
    paths["evil_timm"].mkdir()
    (paths["evil_timm"] / "config.json").write_bytes((paths["timm"] / "config.json").read_bytes())
    for folder in (paths["evil_vit"], paths["evil_timm"]):
        with open(folder / "pytorch_model.bin", "wb") as stream:
            pickle.dump({"weight": _RunsCode(paths["marker"])}, stream, protocol=2)

    # A dataset that only a loading script could read.
    paths["script_ds"] = root / "script_ds"
    paths["script_ds"].mkdir()
    (paths["script_ds"] / "script_ds.py").write_text(f"open({str(paths['marker'])!r}, 'w')\n")

    # Config files: nested too deeply for json, not JSON, JSON of another kind; and a folder with no weights.
    for name, text in (("deep_config", DEEP), ("text_config", "architecture: resnet18\n"), ("other_config", "{}")):
        paths[name] = root / name
        paths[name].mkdir()
        (paths[name] / "config.json").write_text(text)
    paths["no_weights"] = root / "no_weights"
    paths["no_weights"].mkdir()
    (paths["no_weights"] / "config.json").write_bytes((paths["timm"] / "config.json").read_bytes())
    paths["vit_no_weights"] = root / "vit_no_weights"
    _vit_config(paths["vit_no_weights"])
    for name in ("deep_cc", "deep_labels", "deep_trusted"):
        paths[name] = root / f"{name}.json"
        paths[name].write_text(DEEP)
    paths["checkpoint"] = root / "checkpoint.pth"
    torch.save(load_model(paths["timm"]).model.state_dict(), paths["checkpoint"])
    paths["notes"] = root / "notes.txt"
    paths["notes"].write_text("not a model\n")

    # Output paths of the wrong kind: a file where a folder goes, a folder where a file goes.
    paths["a_file"] = root / "a_file.txt"
    paths["a_file"].write_text("keep me\n")
    paths["a_dir"] = root / "a_dir"
    paths["a_dir"].mkdir()
    paths["dir_json"] = root / "dir.json"
    paths["dir_json"].mkdir()

    # Training labels with 3 of 12 wrong (imagefolder order: 4 per class), and the validation labels as noisy.
    noisy = np.repeat(np.arange(CLASSES), 4)
    noisy[[1, 6, 11]] = (noisy[[1, 6, 11]] + 1) % CLASSES
    paths["noisy"] = root / "noisy.txt"
    paths["noisy"].write_text("\n".join(map(str, noisy)) + "\n")
    paths["eval_noisy"] = root / "eval_noisy.json"
    paths["eval_noisy"].write_text(json.dumps([0, 1, 1, 1, 2, 2]))
    return {key: str(value) for key, value in paths.items()}


DATA = ["--dataset", "{images}", "--dataset-cache-dir", "{dcache}", "--no-progress"]
CORRECT = ["correct", "--model", "{timm}", *DATA]
# Loading {missing} fails with exit 1 ("neither an existing local path"): a case using it shows a check ran first.
UNLOADED = ["correct", "--model", "{missing}", *DATA]


def _cli(argv: list[str], work: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([re.sub(r"\{(\w+)\}", lambda m: work.get(m[1], m[0]), part) for part in argv])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------- the table
# (argv template or library call, exit code or exception type, regex of stderr / the message)
CASES = [
    # ---- 1. loading errors that were raw exceptions
    pytest.param(
        lambda w: load_model(w["truncated"]),
        LoadError,
        r"the weights file '.*truncated/model\.safetensors' is truncated or corrupt \(.*\).*download it again",
        id="load-truncated-safetensors-timm-folder",
    ),
    pytest.param(
        lambda w: load_model(w["empty_vit"]),
        LoadError,
        r"the weights file '.*empty_vit/model\.safetensors' is empty \(0 bytes\).*download it again",
        id="load-empty-safetensors-transformers-folder",
    ),
    pytest.param(
        lambda w: load_model(w["half_file"], architecture="test_resnet"),
        LoadError,
        r"the weights file '.*half\.safetensors' is truncated or corrupt.*re-save the model",
        id="load-truncated-safetensors-file",
    ),
    pytest.param(
        ["evaluate", "--model", "{truncated}", *DATA],
        1,
        r"evaluate: error: the weights file '.*truncated/model\.safetensors' is truncated or corrupt",
        id="cli-truncated-safetensors",
    ),
    pytest.param(
        lambda w: load_model(w["evil_vit"]),
        LoadError,
        r"pytorch_model\.bin in '.*evil_vit' holds objects other than tensors.*arbitrary code.*"
        r"weights_only=True.*convert it to safetensors.*safe_serialization=True",
        id="load-code-running-pickle-transformers",
    ),
    pytest.param(
        lambda w: load_model(w["evil_timm"]),
        LoadError,
        r"pytorch_model\.bin in '.*evil_timm' holds objects other than tensors.*convert it to safetensors",
        id="load-code-running-pickle-timm",
    ),
    pytest.param(
        lambda w: load_data(w["script_ds"]),
        LoadError,
        r"the dataset '.*script_ds' would be loaded by a Python script.*never runs dataset scripts.*save_to_disk",
        id="load-dataset-script-folder",
    ),
    pytest.param(
        [*CORRECT[:3], "--dataset", "{script_ds}/script_ds.py", "--alpha", "10", "--no-progress"],
        1,
        r"the dataset '.*script_ds\.py' would be loaded by a Python script.*\.parquet",
        id="cli-dataset-script-file",
    ),
    pytest.param(
        lambda w: load_model(w["deep_config"]),
        LoadError,
        r"'.*deep_config/config\.json' nests JSON arrays/objects too deeply.*replace it with the config\.json",
        id="load-deeply-nested-model-config",
    ),
    pytest.param(
        lambda w: CorrectionConfig.load(w["deep_cc"]),
        ConfigError,
        r"'.*deep_cc\.json' nests JSON arrays/objects too deeply.*CorrectionConfig\.save\? Fix or delete it",
        id="config-deeply-nested-correction-config",
    ),
    pytest.param(
        [*UNLOADED, "--selector-kwargs", DEEP],
        2,
        r"argument --selector-kwargs: expected a JSON object such as",
        id="cli-deeply-nested-selector-kwargs",
    ),
    pytest.param(
        [*CORRECT, "--noisy-labels", "{deep_labels}", "--alpha", "10"],
        1,
        r"cannot read integer labels from '.*deep_labels\.json'.*one integer class id per line",
        id="cli-deeply-nested-label-file",
    ),
    pytest.param(
        [*CORRECT, "--trusted", "{deep_trusted}", "--alpha", "10"],
        1,
        r"cannot read trusted row indices from '.*deep_trusted\.json' \(RecursionError.*expected `select` output",
        id="cli-deeply-nested-trusted-file",
    ),
    # ---- 2. a statistics device this machine does not have, refused by fit before any data is read
    pytest.param(
        lambda w: ProjectionCorrector(nn.Linear(2, 2), statistics_device=MISSING_GPU).fit(None),
        ConfigError,
        rf"statistics_device='{MISSING_GPU}' is not available on this machine \(available: \['cpu'.*\]\); pass "
        r"statistics_device=None \(the model's device\) or 'cpu'",
        id="config-statistics-device-missing-gpu",
    ),
    pytest.param(
        lambda w: ProjectionCorrector(nn.Linear(2, 2), statistics_device="meta").fit(None),
        ConfigError,
        r"statistics_device='meta' is not available on this machine.*statistics_device=None",
        id="config-statistics-device-meta",
    ),
    # ---- 3. selector keyword arguments and devices, refused before anything is loaded
    pytest.param(
        [*UNLOADED, "--selector-kwargs", '{"bogus": 1}'],
        2,
        r"--selector-kwargs \{\"bogus\": 1\} does not fit the 'loss' selector \(.*'bogus'.*\): it accepts no keyword "
        r"arguments; fix or drop --selector-kwargs",
        id="cli-selector-kwargs-unknown-for-loss",
    ),
    pytest.param(
        [*UNLOADED, "--selector", "curvature", "--selector-kwargs", '{"m": 3}'],
        2,
        r"does not fit the 'curvature' selector .*: it accepts n, h;",
        id="cli-selector-kwargs-unknown-for-curvature",
    ),
    pytest.param(
        [*UNLOADED, "--selector", "curvature", "--selector-kwargs", '{"n": -1}'],
        2,
        r"--selector-kwargs \{\"n\": -1\}: the 'curvature' selector rejects them \(n \(the number of Rademacher "
        r"directions\) must be an integer >= 1, got -1.*\); it accepts n, h",
        id="cli-selector-kwargs-rejected-value",
    ),
    pytest.param(
        [*UNLOADED, "--selector", "expert"],
        2,
        r"does not fit the 'expert' selector \(missing a required argument: 'indices'\): it accepts indices "
        r"\(required\)",
        id="cli-selector-kwargs-missing-required",
    ),
    pytest.param(
        ["select", "--model", "{missing}", *DATA, "--selector-kwargs", '{"bogus": 1}', "--output", "{root}/t.json"],
        2,
        r"select: error: --selector-kwargs \{\"bogus\": 1\} does not fit the 'loss' selector",
        id="cli-select-selector-kwargs-unknown",
    ),
    pytest.param(
        [*UNLOADED, "--device", "tpu"],
        2,
        r"--device 'tpu' is not a torch device \(.*\); available devices: cpu.*omit --device",
        id="cli-device-not-a-device",
    ),
    pytest.param(
        [*UNLOADED, "--device", MISSING_GPU],
        2,
        rf"--device '{MISSING_GPU}' is not available on this machine; available devices: cpu.*omit --device",
        id="cli-device-not-available",
    ),
    pytest.param(
        ["evaluate", "--model", "{missing}", *DATA, "--device", "meta"],
        2,
        r"evaluate: error: --device 'meta' is not available on this machine; available devices: cpu",
        id="cli-evaluate-device-meta",
    ),
    # ---- 4. output paths of the wrong kind, refused before anything is loaded
    pytest.param(
        [*UNLOADED, "--output-dir", "{a_file}"],
        1,
        r"--output-dir '.*a_file\.txt' is a file, not a folder; choose another --output-dir.*nothing was computed",
        id="cli-output-dir-is-a-file",
    ),
    pytest.param(
        [*UNLOADED, "--output-dir", "{a_file}/out"],
        1,
        r"--output-dir '.*a_file\.txt/out' cannot be created: '.*a_file\.txt' is a file, not a folder",
        id="cli-output-dir-inside-a-file",
    ),
    pytest.param(
        ["evaluate", "--model", "{missing}", *DATA, "--output", "{a_dir}"],
        1,
        r"--output '.*a_dir' is a folder; pass a file path inside it such as '.*a_dir/scores\.json'",
        id="cli-evaluate-output-is-a-folder",
    ),
    pytest.param(
        ["select", "--model", "{missing}", *DATA, "--output", "{dir_json}"],
        1,
        r"--output '.*dir\.json' is a folder; pass a file path inside it such as '.*dir\.json/trusted\.json'",
        id="cli-select-output-is-a-folder",
    ),
    # ---- option values (argparse and CorrectionConfig), refused before anything is loaded
    pytest.param([*UNLOADED, "--frobnicate"], 2, r"unrecognized arguments: --frobnicate", id="cli-unknown-flag"),
    pytest.param(
        [*UNLOADED, "--alphas", "1e3,abc"],
        2,
        r"argument --alphas: expected numbers separated by commas such as 1e3,3e4,1e6, got '1e3,abc'",
        id="cli-alphas-not-numbers",
    ),
    pytest.param(
        [*UNLOADED, "--alphas", "1e3,-5"],
        2,
        r"argument --alphas: every α must be a finite number > 0, got '1e3,-5'",
        id="cli-alphas-negative",
    ),
    pytest.param(
        [*UNLOADED, "--alphas", ",,"], 2, r"every α must be a finite number > 0, got ',,'", id="cli-alphas-empty"
    ),
    pytest.param([*UNLOADED, "--alpha", "nan"], 2, r"every α must be a finite number > 0", id="cli-alpha-nan"),
    pytest.param(
        [*UNLOADED, "--n-trusted", "-5"],
        2,
        r"argument --n-trusted: expected a positive integer, got '-5'",
        id="cli-n-trusted-negative",
    ),
    pytest.param(
        [*UNLOADED, "--batch-size", "0"],
        2,
        r"argument --batch-size: expected a positive integer, got '0'",
        id="cli-batch-size-zero",
    ),
    pytest.param(
        [*UNLOADED, "--limit", "ten"], 2, r"argument --limit: expected a positive integer, got 'ten'", id="cli-limit"
    ),
    pytest.param(
        [*UNLOADED, "--selector", "nope"],
        2,
        r"--selector 'nope' is not a registered selector; choose one of \[.*'loss'.*\]",
        id="cli-unknown-selector",
    ),
    pytest.param(
        [*UNLOADED, "--seed", "-1"],
        2,
        r"correct: error: --seed: seed must be an integer in \[0, 2\*\*64 - 1\] \(e\.g\. 0\), got -1",
        id="cli-seed-negative-before-loading",
    ),
    pytest.param(
        [*UNLOADED, "--target-modules", "layer(", "--alpha", "10"],
        2,
        r"--target-modules: target_modules entry 'layer\(' is not a valid regular expression .*fix the pattern",
        id="cli-target-modules-bad-regex-before-loading",
    ),
    pytest.param(
        [*UNLOADED, "--push-to-hub", "not a repo"],
        2,
        r"--push-to-hub expects a repo ID such as me/model-sap, got 'not a repo'",
        id="cli-push-to-hub-bad-id",
    ),
    pytest.param(
        [*UNLOADED, "--eval-noisy-labels", "{eval_noisy}"],
        2,
        r"--eval-noisy-labels labels the rows of --eval-split: add --eval-split SPLIT",
        id="cli-eval-noisy-labels-without-eval-split",
    ),
    # ---- models and data that cannot be loaded
    pytest.param(
        [*UNLOADED, "--alpha", "10"],
        1,
        r"'.*no-such-model' is neither an existing local path nor a valid Hub model ID \(org/name\); check the path",
        id="cli-model-path-missing",
    ),
    pytest.param(
        ["evaluate", "--model", "{no_weights}", *DATA],
        1,
        r"the model folder '.*no_weights' has a config\.json but no weights file \(model\.safetensors, .*\); copy "
        r"the weights next to it, or save the model again",
        id="cli-model-folder-without-weights",
    ),
    pytest.param(
        lambda w: load_model(w["vit_no_weights"]),
        LoadError,
        r"the model folder '.*vit_no_weights' has a config\.json but no weights file .*save_pretrained",
        id="load-transformers-folder-without-weights",
    ),
    pytest.param(
        ["evaluate", "--model", "{text_config}", *DATA],
        1,
        r"cannot read '.*text_config/config\.json' as JSON \(.*\); is the model folder complete\?",
        id="cli-config-not-json",
    ),
    pytest.param(
        ["evaluate", "--model", "{other_config}", *DATA],
        1,
        r"'.*other_config/config\.json' has neither 'model_type' \(transformers\) nor 'architecture' \(timm\)",
        id="cli-config-of-no-library",
    ),
    pytest.param(
        ["evaluate", "--model", "{notes}", *DATA],
        1,
        r"'.*notes\.txt' is not a model folder nor a weights file \(\.safetensors, .*\); pass a folder",
        id="cli-model-is-a-text-file",
    ),
    pytest.param(
        ["evaluate", "--model", "{checkpoint}", *DATA],
        1,
        r"'.*checkpoint\.pth' holds weights only; name its timm architecture \(--architecture resnet18",
        id="cli-checkpoint-without-architecture",
    ),
    pytest.param(
        ["evaluate", "--model", "{checkpoint}", "--architecture", "no_such_net", *DATA],
        1,
        r"timm has no model 'no_such_net' \(.*\); see timm\.list_models\(\)",
        id="cli-unknown-architecture",
    ),
    pytest.param(
        [*CORRECT, "--eval-split", "nope", "--n-trusted", "3", "--alpha", "10"],
        1,
        r"'.*images'.*nope.*Pass --split an existing split",
        id="cli-eval-split-missing",
    ),
    pytest.param(
        [*CORRECT, "--label-column", "fine_label", "--alpha", "10"],
        1,
        r"label column 'fine_label' is not in the dataset.*\['image', 'label'\]",
        id="cli-label-column-missing",
    ),
    pytest.param(
        [*CORRECT, "--image-column", "pixels", "--alpha", "10"],
        1,
        r"image column 'pixels' is not in the dataset.*\['image', 'label'\]",
        id="cli-image-column-missing",
    ),
    pytest.param(
        [*CORRECT, "--noisy-labels", "{root}/no-labels.txt", "--alpha", "10"],
        1,
        r"no label file at '.*no-labels\.txt'; pass a \.txt \(one integer per line\), \.npy or \.json file",
        id="cli-noisy-label-file-missing",
    ),
    pytest.param(
        [*CORRECT, "--n-trusted", "50", "--alpha", "10", "--output-dir", "{root}/too-many"],
        1,
        r"n_trusted=50 is larger than the data \(12 samples\); lower n_trusted",
        id="cli-n-trusted-larger-than-data",
    ),
    pytest.param(["push", "{root}/nothing-here", "--repo", "me/x"], 1, r"nothing to push", id="cli-push-missing"),
]


@pytest.mark.parametrize(("call", "expected", "pattern"), CASES)
def test_bad_input_fails_with_a_typed_error_naming_the_fix(
    call: list[str] | Callable[[dict[str, str]], Any],
    expected: int | type[BaseException],
    pattern: str,
    work: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    if isinstance(expected, int):
        assert isinstance(call, list)
        code, err = _cli(call, work, capsys)
        assert code == expected, err
        assert re.search(pattern, err, re.S), err
        assert "Traceback" not in err and "run with --debug" not in err  # a known error, not a crash
    else:
        assert callable(call)
        with pytest.raises(expected, match=pattern) as raised:
            call(work)
        assert type(raised.value) is expected
    assert not Path(work["marker"]).exists(), "code from a pickle or a dataset script ran"


# ------------------------------------------------------------------------------------------------------ temp files
def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    from hf_verifix.utils.staging import atomic_write as _write_text

    folder = tmp_path / "scores.json"  # a folder where the file should go: os.replace fails
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        _write_text(folder, "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]
    _write_text(tmp_path / "ok.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.json", "scores.json"]
    assert (tmp_path / "ok.json").read_text() == "{}\n"


# ----------------------------------------------------------------------------------------------------- local paths
def test_card_reports_and_command_name_local_paths_by_base_name(
    work: dict[str, str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch, capsys
) -> None:
    from safetensors.torch import load_file

    output = tmp_path / "out"
    argv = [
        *CORRECT, "--eval-split", "validation", "--noisy-labels", "{noisy}", "--eval-noisy-labels", "{eval_noisy}",
        "--n-trusted", "6", "--alphas", "10,1e3", "--device", "cpu", "--output-dir", str(output),
    ]  # fmt: skip
    code, err = _cli(argv, work, capsys)
    assert code == 0, err
    written = {p.name: p.read_text(encoding="utf-8") for p in output.iterdir() if p.suffix in (".md", ".json")}
    assert {"README.md", "correction_report.json", "correction_config.json"} <= set(written)
    local_roots = {str(tmp_path_factory.getbasetemp()), tempfile.gettempdir(), work["root"], str(tmp_path)}
    for name, text in written.items():
        assert not [root for root in local_roots if root in text], name

    card = written["README.md"]
    command = card.split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert command == (
        "hf-verifix correct --model timm --dataset images --split train --eval-split validation "
        "--eval-noisy-labels eval_noisy.json --image-column image --label-column label --noisy-labels noisy.txt "
        "--selector loss --n-trusted 6 --alphas 10,1e3 --batch-size 64 --seed 0 --output-dir out"
    )
    assert "This model is `timm` repaired" in card and "Accuracy on `images`, split `validation`" in card

    # Run from the folder holding the model and data, the card's command reproduces the same weights.
    monkeypatch.chdir(work["root"])
    again = tmp_path / "again"
    rerun = shlex.split(command)[1:]
    rerun[rerun.index("--output-dir") + 1] = str(again)
    code, err = _cli([*rerun, "--dataset-cache-dir", "{dcache}", "--no-progress"], work, capsys)
    assert code == 0, err
    first, second = load_file(str(output / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_hub_ids_stay_as_given_in_the_card() -> None:
    from hf_verifix.reporting.model_card import CardInfo, render_model_card

    report = {"config": {}, "applied_alpha": 1e4, "trusted": {"count": 1, "selector": "loss"}, "layers": {}}
    hub = CardInfo("m", base_model="org/vit", base_model_is_hub=True, dataset="org/data", dataset_is_hub=True,
                   eval_split="test", accuracy_before=0.5, accuracy_after=0.6)  # fmt: skip
    local = CardInfo("m", base_model="/home/ana/runs/vit", dataset="/home/ana/data/images", eval_split="test",
                     accuracy_before=0.5, accuracy_after=0.6)  # fmt: skip
    hub_card, local_card = str(render_model_card(report, hub)), str(render_model_card(report, local))
    assert "[org/vit](https://huggingface.co/org/vit)" in hub_card and "Accuracy on `org/data`" in hub_card
    assert "/home/ana" not in local_card
    assert "This model is `vit` repaired" in local_card and "Accuracy on `images`, split `test`" in local_card


# ---------------------------------------------------------------------------------------------------------- loading
def test_a_pickled_state_dict_of_tensors_still_loads(tmp_path: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    _vit_config(tmp_path)
    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig.from_pretrained(tmp_path))
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded = load_model(tmp_path)
    assert (loaded.library, loaded.num_classes) == ("transformers", CLASSES)
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())


def test_statistics_device_cpu_and_none_are_accepted() -> None:
    assert CorrectionConfig(statistics_device="cpu").statistics_device == "cpu"
    assert CorrectionConfig().statistics_device is None
    assert CorrectionConfig.from_dict({"statistics_device": "cpu:0"}).statistics_device == "cpu:0"
    # A config saved on a GPU machine loads anywhere; only fit needs the device.
    assert CorrectionConfig.from_dict({"statistics_device": "cuda:7"}).statistics_device == "cuda:7"
