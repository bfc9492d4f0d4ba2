"""Pushing to the Hub (hf_verifix.integrations.hub, through the hf_verifix.hub facade and ``hf-verifix push``).

Pushes go to ``tests/hub_server.py`` (a Hub-compatible server on 127.0.0.1) through the real ``huggingface_hub``
client, with a planted fake token that must never show. The models and data are conftest.py's session-scoped
``work`` and ``corrected_vit``. The end-to-end run that needs ``HF_ENDPOINT`` at import time runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from testing_utils import FAKE_TOKEN, HAS_MATPLOTLIB, free_port
from testing_utils import assert_no_token as _assert_no_token
from testing_utils import cli_data_args as _data_args

from hf_verifix import ProjectionCorrector
from hf_verifix.commands.cli import main
from hf_verifix.hub import HubError, load_data, push_folder, push_to_hub

# Tiny models run as fast on one thread, and stay fast when other jobs share the CPU (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


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
