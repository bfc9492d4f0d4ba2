"""SAPCallback inside a real ``transformers.Trainer``: it corrects, logs, writes its report, and saves round-trip.

A tiny ViT is fine-tuned a few steps on seeded synthetic 3-class images with about 25% random labels; the callback
corrects it at the end of training. Logged accuracies are checked against an independent computation, the saved
model against the in-memory corrected weights. Data paths (``set_format("torch")``, ``with_transform``, torch
datasets of dicts), a timm model through ``TimmWrapperForImageClassification``, epoch-end corrections, argument
errors, and 2 CPU processes under ``accelerate launch`` against 1 process are covered too.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from testing_utils import coded_images, finish, image_dataset, pixel_dataset, start_worker, tiny_timm_wrapper, tiny_vit
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset
from transformers import (
    TimmWrapperForImageClassification,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    ViTForImageClassification,
    default_data_collator,
)

from hf_verifix import CorrectionConfig, ProjectionCorrector
from hf_verifix.errors import ConfigError, DataError, VerifixError
from hf_verifix.integrations import LOG_PREFIX, SAPCallback

SHAPE = (3, 16, 16)
ALPHAS = [1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 1e2, 1e3, 1e4]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


# These models are tiny: one thread is several times faster than two on a shared 2-core machine (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def images_and_labels(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Colour- and stripe-coded 3-class (3, 16, 16) images, their noisy labels (25% redrawn, each to another class)
    and their clean labels."""
    return coded_images(n, seed, stripe_class_1=True, flip_to_other=True)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Plain top-1 accuracy in eval mode, computed without hf_verifix."""
    mode = model.training
    model.eval()
    with torch.no_grad():
        batches = zip(images.split(32), labels.split(32), strict=True)
        correct = sum(int((model(x).logits.argmax(-1) == y).sum()) for x, y in batches)
    model.train(mode)
    return correct / len(labels)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def config(**overrides: Any) -> CorrectionConfig:
    return CorrectionConfig(**{"n_trusted": 30, "per_class": True, "batch_size": 32, "progress": False, **overrides})


def training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir), use_cpu=True, report_to=[], per_device_train_batch_size=16,
        per_device_eval_batch_size=32, learning_rate=3e-3, save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    values.update(overrides)
    return TrainingArguments(**values)


def sap_entries(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in log_history if LOG_PREFIX + "trusted" in entry]


class Snapshot(TrainerCallback):
    """Placed before SAPCallback: records the weights and eval accuracy right before the correction."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.weights: dict[str, torch.Tensor] = {}
        self.accuracy: float | None = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.weights = weights(model)
        self.accuracy = accuracy(model, self.images, self.labels)


class Recorder(TrainerCallback):
    """Stands for a reporting integration: keeps every dict passed to ``on_log``."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


# ---------------------------------------------------------------------------------------------
# a Trainer run with the callback (shared by the first tests)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    output = tmp_path_factory.mktemp("trainer")
    train_x, train_y, _ = images_and_labels(240, seed=0)
    eval_x, eval_y, _ = images_and_labels(120, seed=1)
    model = tiny_vit()
    snapshot, recorder = Snapshot(eval_x, eval_y), Recorder()
    callback = SAPCallback(config(), alphas=ALPHAS)
    trainer = Trainer(
        model=model,
        args=training_args(output, num_train_epochs=8),
        train_dataset=pixel_dataset(train_x, train_y),
        eval_dataset=pixel_dataset(eval_x, eval_y),
        callbacks=[snapshot, callback, recorder],
    )
    trainer.train()  # no set_trainer, no evaluation during training: the callback finds the Trainer and its data
    return SimpleNamespace(
        trainer=trainer, model=model, callback=callback, snapshot=snapshot, recorder=recorder, output=output,
        after=accuracy(model, eval_x, eval_y), corrected=weights(model),
    )  # fmt: skip


def test_the_callback_binds_its_trainer_without_set_trainer(run):
    assert run.callback.trainer is run.trainer
    assert run.trainer.args.eval_strategy == "no"  # so no eval_dataloader ever reached the events
    (entry,) = sap_entries(run.trainer.state.log_history)
    assert "sap/accuracy_before" in entry  # α was searched on the Trainer's eval_dataset


def test_the_trainers_model_card_reports_the_correction(run):
    run.trainer.create_model_card(model_name="tiny-vit-sap")
    card = (Path(run.trainer.args.output_dir) / "README.md").read_text(encoding="utf-8")
    (entry,) = sap_entries(run.trainer.state.log_history)
    assert "## Label-noise correction (hf_verifix)" in card
    assert f"| before the correction | {entry['sap/accuracy_before']:.2%} |" in card
    assert f"| after the correction | {entry['sap/accuracy_after']:.2%} |" in card
    assert "model-index" in card  # the Trainer's own card, with the section added
    run.trainer.create_model_card(model_name="tiny-vit-sap")  # again: the section once, not twice
    assert (Path(run.trainer.args.output_dir) / "README.md").read_text().count("Label-noise correction") == 1


def test_a_corrected_model_carries_the_library_tags(run):
    # trainer.push_to_hub() passes model.model_tags to the card it writes (transformers' Trainer.push_to_hub).
    assert {"hf-verifix", "scaled-activation-projection"} <= set(run.model.model_tags)


def test_the_callback_corrects_the_model_in_place(run):
    (entry,) = sap_entries(run.trainer.state.log_history)
    assert entry["sap/corrected"] == 1.0 and entry["sap/alpha"] in ALPHAS
    assert run.callback.corrector.applied_alpha == entry["sap/alpha"]
    changed = [name for name, w in run.snapshot.weights.items() if not torch.equal(w, run.corrected[name])]
    assert "classifier.weight" in changed
    assert any(".attention." in name or ".mlp." in name or "intermediate" in name for name in changed), changed
    assert entry["sap/trusted"] == 30 and entry["sap/layers"] == 14  # 2 × (q, k, v, o, fc1, fc2) + patch + classifier


def test_logged_accuracies_equal_an_independent_computation(run):
    (entry,) = sap_entries(run.trainer.state.log_history)
    assert entry["sap/accuracy_before"] == run.snapshot.accuracy
    assert entry["sap/accuracy_after"] == run.after
    assert entry["sap/accuracy_after"] > entry["sap/accuracy_before"]  # an α is only kept when it wins
    assert entry["step"] == run.trainer.state.global_step and entry["epoch"] == run.trainer.state.epoch == 8.0
    timings = {k for k in entry if k.endswith("_s")}
    phases = ("selection_s", "collection_s", "decomposition_s", "alpha_search_s", "total_s")
    assert timings == {f"sap/{phase}" for phase in phases}
    assert all(entry[k] >= 0 for k in timings)
    # The metrics went through trainer.log, so callbacks watching on_log (reporting integrations) got them too.
    seen = [logs for logs in run.recorder.logs if "sap/alpha" in logs]
    assert len(seen) == 1 and seen[0]["sap/accuracy_after"] == run.after
    assert run.callback.history == [{k: v for k, v in entry.items() if k.startswith("sap/")}]


def test_report_and_config_are_written_next_to_the_trainer_output(run):
    folder = run.output / "sap_correction"
    assert sorted(p.name for p in folder.iterdir()) == ["correction_config.json", "correction_report.json"]
    report = json.loads((folder / "correction_report.json").read_text())
    (entry,) = sap_entries(run.trainer.state.log_history)
    # The configuration as applied: the callback's, with the α the search chose.
    assert CorrectionConfig.load(folder) == dataclasses.replace(run.callback.config, alpha=entry["sap/alpha"])
    assert report["metrics"] == {k: v for k, v in entry.items() if k.startswith("sap/")}
    assert report["applied_alpha"] == entry["sap/alpha"] == report["alpha_search"]["best_alpha"]
    assert report["alpha_search"]["curve"][str(entry["sap/alpha"])] == entry["sap/accuracy_after"]
    assert report["trusted"]["count"] == 30 and report["trusted"]["class_counts"] == [10, 10, 10]
    assert report["trainer"] == {"event": "train_end", "global_step": run.trainer.state.global_step, "epoch": 8.0}


def test_save_model_saves_the_corrected_weights(run, tmp_path):
    run.trainer.save_model(str(tmp_path))
    reloaded = ViTForImageClassification.from_pretrained(str(tmp_path))
    assert reloaded.state_dict().keys() == run.corrected.keys()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, run.corrected[name]), name


# ---------------------------------------------------------------------------------------------
# data paths: what the Trainer trains on reaches ProjectionCorrector unchanged
# ---------------------------------------------------------------------------------------------


class DictImages(Dataset):
    """A torch dataset of ``{"pixel_values", "labels"}`` items, as Trainer users write them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"pixel_values": self.images[index], "labels": int(self.labels[index])}


def with_transform(raw: np.ndarray, labels: torch.Tensor) -> datasets.Dataset:
    """Raw uint8 HWC images turned into normalised ``pixel_values`` on the fly, as in transformers' image guide."""
    stored = datasets.Dataset.from_dict({"image": list(raw), "label": labels.numpy()})

    def preprocess(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pixels = [
            (torch.as_tensor(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 255 - 0.3) / 0.2
            for im in batch["image"]
        ]
        return {"pixel_values": pixels, "labels": batch["label"]}

    return stored.with_transform(preprocess)


@pytest.mark.parametrize("kind", ["torch_format", "with_transform", "torch_dict_dataset", "trainer_loader"])
def test_trainer_style_datasets_give_the_same_correction_as_tensors(kind, tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, size=(45, 16, 16, 3), dtype=np.uint8)
    images = (torch.as_tensor(raw, dtype=torch.float32).permute(0, 3, 1, 2) / 255 - 0.3) / 0.2
    labels = torch.arange(45) % 3
    expected = tiny_vit(1)
    ProjectionCorrector(expected, config()).fit(TensorDataset(images, labels)).apply(alpha=10.0)

    model = tiny_vit(1)
    kwargs: dict[str, Any] = {}
    callback = SAPCallback(config(alpha=10.0), search_alpha=False)
    if kind == "torch_format":
        callback.train_dataset = pixel_dataset(images, labels)
    elif kind == "with_transform":
        callback.train_dataset = with_transform(raw, labels)
    elif kind == "torch_dict_dataset":
        callback.train_dataset = DictImages(images, labels)
    else:  # no dataset given: the Trainer's shuffled loader is read in order through its dataset and collate_fn
        loader = DataLoader(with_transform(raw, labels), batch_size=7, shuffle=True, collate_fn=default_data_collator)
        kwargs["train_dataloader"] = loader
    callback.on_train_end(training_args(tmp_path), TrainerState(), TrainerControl(), model=model, **kwargs)
    assert callback.history[0]["sap/alpha"] == 10.0
    for name, tensor in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(model.classifier.weight, tiny_vit(1).classifier.weight)


# ---------------------------------------------------------------------------------------------
# timm through the Trainer, epoch-end corrections
# ---------------------------------------------------------------------------------------------


class ClosingIntegration(Recorder):
    """Stands for MLflow/trackio/ClearML: a reporting integration that closes its run in on_train_end."""

    __module__ = "transformers.integrations.integration_utils"

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.closed:
            super().on_log(args, state, control, logs=logs, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        self.closed = True


def test_timm_model_through_the_trainer_with_an_epoch_end_correction(tmp_path):
    model = tiny_timm_wrapper()  # timm's test_resnet, 3 labels, seed 0
    train_x, train_y, _ = images_and_labels(36, seed=2)
    eval_x, eval_y, _ = images_and_labels(21, seed=3)
    callback = SAPCallback(config(n_trusted=12), alphas=[1e2, 1e4], on_epochs=[1])
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, num_train_epochs=2, per_device_train_batch_size=18),
        train_dataset=pixel_dataset(train_x, train_y),
        eval_dataset=pixel_dataset(eval_x, eval_y),
        callbacks=[callback],
    )
    integration = ClosingIntegration()
    trainer.callback_handler.callbacks.insert(1, integration)  # where report_to puts integrations
    callback.set_trainer(trainer)
    assert trainer.callback_handler.callbacks.index(callback) < trainer.callback_handler.callbacks.index(integration)
    trainer.train()
    entries = sap_entries(trainer.state.log_history)
    assert [(e["epoch"], e["step"]) for e in entries] == [(1.0, 2), (2.0, 4)]  # after epoch 1, at the end
    assert [logs["sap/trusted"] for logs in integration.logs if "sap/trusted" in logs] == [12, 12]  # before closing
    assert entries[1]["sap/accuracy_after"] == accuracy(model, eval_x, eval_y)
    assert (tmp_path / "sap_correction" / "epoch-1" / "correction_report.json").is_file()
    assert json.loads((tmp_path / "sap_correction" / "correction_report.json").read_text())["trainer"]["epoch"] == 2.0
    trainer.save_model(str(tmp_path / "saved"))
    reloaded = TimmWrapperForImageClassification.from_pretrained(str(tmp_path / "saved"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_no_second_correction_at_the_step_of_an_epoch_end_one(tmp_path):
    callback = SAPCallback(config(n_trusted=20), train_dataset=linear_data(), on_epochs=[3])
    args, control = training_args(tmp_path), TrainerControl()
    model = nn.Linear(5, 3)
    callback.on_epoch_end(args, TrainerState(global_step=4, epoch=2.0), control, model=model)
    assert callback.history == []
    callback.on_epoch_end(args, TrainerState(global_step=6, epoch=3.0), control, model=model)
    corrected = model.weight.detach().clone()
    callback.on_train_end(args, TrainerState(global_step=6, epoch=3.0), control, model=model)
    assert len(callback.history) == 1 and torch.equal(model.weight, corrected)
    assert (tmp_path / "sap_correction" / "epoch-3").is_dir()
    callback.on_train_end(args, TrainerState(global_step=7, epoch=3.5), control, model=model)  # trained on since
    assert len(callback.history) == 2 and (tmp_path / "sap_correction" / "correction_report.json").is_file()


# ---------------------------------------------------------------------------------------------
# direct calls: no evaluation data, fixed α, main process only, errors
# ---------------------------------------------------------------------------------------------


def linear_data(n: int = 40, seed: int = 0) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator))


def test_without_evaluation_data_config_alpha_is_applied(tmp_path):
    model = nn.Linear(5, 3)
    before = model.weight.detach().clone()
    callback = SAPCallback(config(n_trusted=20, alpha=50.0), train_dataset=linear_data())
    state = TrainerState(global_step=7, epoch=1.5)
    callback.on_train_end(training_args(tmp_path), state, TrainerControl(), model=model)
    (entry,) = state.log_history
    assert entry["sap/alpha"] == 50.0 and entry["sap/corrected"] == 1.0 and "sap/update_s" in entry
    assert "sap/accuracy_before" not in entry and (entry["step"], entry["epoch"]) == (7, 1.5)
    expected = nn.Linear(5, 3)
    expected.load_state_dict({"weight": before, "bias": model.bias})
    ProjectionCorrector(expected, config(n_trusted=20)).fit(linear_data()).apply(alpha=50.0)
    assert torch.equal(model.weight, expected.weight)


def test_fixed_alpha_with_evaluation_data_logs_before_and_after(tmp_path):
    model = nn.Linear(5, 3)
    data, held_out = linear_data(), linear_data(30, seed=1)
    x, y = held_out.tensors
    with torch.no_grad():
        before = int((model(x).argmax(-1) == y).sum()) / len(y)
    callback = SAPCallback(config(n_trusted=20, alpha=2.0), data, held_out, search_alpha=False)
    state = TrainerState()
    callback.on_train_end(training_args(tmp_path), state, TrainerControl(), model=model)
    entry = state.log_history[-1]
    with torch.no_grad():
        after = int((model(x).argmax(-1) == y).sum()) / len(y)
    assert (entry["sap/accuracy_before"], entry["sap/accuracy_after"]) == (before, after)
    assert "sap/alpha_search_s" not in entry and "sap/update_s" in entry


def test_only_the_main_process_writes_files(tmp_path):
    callback = SAPCallback(config(n_trusted=20), train_dataset=linear_data())
    state = TrainerState(is_world_process_zero=False)
    callback.on_train_end(training_args(tmp_path), state, TrainerControl(), model=nn.Linear(5, 3))
    assert len(callback.history) == 1
    assert not (tmp_path / "sap_correction").exists()


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(5), 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"config": {"alpha": 1e4}}, "config must be a hf_verifix.CorrectionConfig"),
        ({"search_alpha": "yes"}, "search_alpha must be True or False"),
        ({"alphas": [1e4, -1.0]}, "every entry of alphas"),
        ({"alphas": []}, "alphas is empty"),
        ({"alphas": [1e4], "search_alpha": False}, "alphas is only used by the α search"),
        ({"on_epochs": [0, 2]}, "1-based epoch numbers"),
        ({"on_epochs": "1"}, "list of 1-based epoch numbers"),
        ({"on_epochs": [1.5]}, "ints >= 1"),
        ({"output_subdir": ""}, "non-empty relative folder"),
        ({"output_subdir": "../elsewhere"}, "inside the Trainer's output_dir"),
        ({"transform": "resize"}, "transform must be a callable"),
    ],
)
def test_bad_arguments_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SAPCallback(**kwargs)


def test_unusable_data_and_calls_raise_clear_errors(tmp_path):
    args, state, control = training_args(tmp_path), TrainerState(), TrainerControl()
    with pytest.raises(DataError, match="found no training data"):
        SAPCallback(config()).on_train_end(args, state, control, model=nn.Linear(5, 3))
    with pytest.raises(DataError, match=r"iterable \(streaming\)"):
        SAPCallback(config(), train_dataset=Stream())
    with pytest.raises(VerifixError, match="needs the model"):
        SAPCallback(config(), train_dataset=linear_data()).on_train_end(args, state, control)
    with pytest.raises(DataError, match=r"raw image column of a datasets\.Dataset"):
        SAPCallback(config(), train_dataset=linear_data(), transform=lambda image: image).on_train_end(
            args, state, control, model=nn.Linear(5, 3)
        )
    with pytest.raises(DataError, match="n_trusted=30 is larger than the data"):
        SAPCallback(config(), train_dataset=linear_data(12)).on_train_end(args, state, control, model=nn.Linear(5, 3))
    with pytest.raises(ConfigError, match=r"set_trainer expects a transformers\.Trainer"):
        SAPCallback().set_trainer(object())
    bound = SAPCallback(config(), train_dataset=linear_data()).set_trainer(
        SimpleNamespace(log=print, train_dataset=None, eval_dataset={"a": linear_data(), "b": linear_data()})
    )
    with pytest.raises(DataError, match=r"eval_dataset is a dict of 2 datasets \(\['a', 'b'\]\)"):
        bound.on_train_end(args, state, control, model=nn.Linear(5, 3))


# ---------------------------------------------------------------------------------------------
# 2 CPU processes under accelerate launch == 1 process
# ---------------------------------------------------------------------------------------------

WORKER = Path(__file__).with_name("trainer_worker.py")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b).clamp_min(1e-300))


@pytest.mark.distributed
def test_two_processes_correct_exactly_like_one(tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    single.mkdir(), double.mkdir()
    # Side by side: the runs are independent.
    workers = [start_worker([str(WORKER), str(single)], 1), start_worker([str(WORKER), str(double)], 2)]
    for worker in workers:
        finish(worker, timeout=600)
    load = lambda path: torch.load(path, weights_only=False)  # noqa: E731 - files this test just wrote
    one, rank0, rank1 = load(single / "rank0.pt"), load(double / "rank0.pt"), load(double / "rank1.pt")
    assert (one["world"], rank0["world"], rank1["world"]) == (1, 2, 2)
    # Each rank's Trainer loader holds about half the batches of the whole dataset: the callback read the dataset.
    assert one["loader_sizes"] == (13, 101) and rank0["loader_sizes"] == rank1["loader_sizes"] == (7, 101)
    for distributed in (rank0, rank1):
        assert torch.equal(distributed["trusted"], one["trusted"])
        assert distributed["logged"] == one["logged"]  # every metric but the timings, exactly
        assert distributed["curve"] == one["curve"]
    assert one["logged"][0]["sap/corrected"] == 1.0 and len(one["logged"]) == 2
    for key in ("state", "searched_state"):
        for name, tensor in one[key].items():
            assert relative_error(rank0[key][name], tensor) <= 1e-10, name
            assert torch.equal(rank0[key][name], rank1[key][name]), name  # identical on both ranks
    changed = [name for name, w in one["trained_state"].items() if not torch.equal(w, one["state"][name])]
    assert "classifier.weight" in changed and "vit.embeddings.patch_embeddings.projection.weight" in changed


class ReflectNet(nn.Module):
    """A classifier whose first conv pads by reflection: SAP cannot correct it exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.head = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.calls += 1
        logits = self.head(self.conv(pixel_values).mean(dim=(2, 3)))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else logits.sum() * 0
        return {"loss": loss, "logits": logits}


def test_an_uncorrectable_model_is_refused_before_the_first_training_step(tmp_path):
    from hf_verifix.errors import LayerError

    model = ReflectNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, _ = images_and_labels(12, seed=0)
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, num_train_epochs=1),
        train_dataset=pixel_dataset(x, y),
        callbacks=[SAPCallback(config(n_trusted=6))],
    )
    with pytest.raises(LayerError, match=r"conv.*padding_mode='reflect'.*on_uncorrectable='skip'"):
        trainer.train()
    assert model.calls == 0 and trainer.state.global_step == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # With on_uncorrectable="skip" the same model trains and the rest of it is corrected at the end.
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, num_train_epochs=1),
        train_dataset=pixel_dataset(x, y),
        callbacks=[SAPCallback(config(n_trusted=6, on_uncorrectable="skip"), alphas=[1e4])],
    )
    with pytest.warns(UserWarning, match="conv"):
        trainer.train()
    assert not torch.equal(before["head.weight"], model.head.weight) and model.calls > 0


def test_too_few_rows_for_n_trusted_is_refused_before_the_first_training_step(tmp_path):
    model = ReflectNet()
    model.conv.padding_mode = "zeros"
    x, y, _ = images_and_labels(12, seed=0)
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, num_train_epochs=1),
        train_dataset=pixel_dataset(x, y),  # found through the Trainer's train_dataloader: no set_trainer needed
        callbacks=[SAPCallback(config(n_trusted=1000))],
    )
    refused = r"n_trusted=1000 is larger than the training data \(12 samples\).*no training"
    with pytest.raises(DataError, match=refused):
        trainer.train()
    assert model.calls == 0 and trainer.state.global_step == 0


def test_a_correction_that_fails_after_training_keeps_the_trained_model_and_says_where(tmp_path):
    from safetensors.torch import load_file

    model = ReflectNet()
    model.conv.padding_mode = "zeros"
    before = weights(model)
    x, y, _ = images_and_labels(24, seed=0)
    held_out_labels = y.clone()
    held_out_labels[3] = 7  # not a class of the model: found by the α search, after training
    features = datasets.Features(
        {"pixel_values": datasets.Array3D(SHAPE, "float32"), "labels": datasets.Value("int64")}
    )
    held_out = datasets.Dataset.from_dict(
        {"pixel_values": x.numpy(), "labels": held_out_labels.numpy()}, features=features
    ).with_format("torch")
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, num_train_epochs=1),  # save_strategy="no": no checkpoint would be left
        train_dataset=pixel_dataset(x, y),
        callbacks=[SAPCallback(config(n_trusted=6), eval_dataset=held_out, alphas=[1e4])],
    )
    with pytest.raises(DataError, match=r"labels.*7.*saved to '.*uncorrected_model' \(uncorrected\)"):
        trainer.train()
    trained = weights(model)
    assert trainer.state.global_step > 0 and not torch.equal(trained["head.weight"], before["head.weight"])
    saved = load_file(str(tmp_path / "sap_correction" / "uncorrected_model" / "model.safetensors"))
    assert set(saved) == set(trained) - {"calls"}
    for name, tensor in saved.items():
        assert torch.equal(tensor, trained[name]), name


def test_raw_images_are_preprocessed_with_the_trainers_image_processor(tmp_path):
    from transformers import ViTImageProcessor

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(36, 20, 20, 3), dtype=np.uint8)
    raw = image_dataset([Image.fromarray(p) for p in pixels], [i % 3 for i in range(36)])
    processor = ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.2] * 3, image_std=[0.3] * 3)
    weights = {}
    for name, processing_class in (("processor", processor), ("default", None)):
        model = tiny_vit()
        callback = SAPCallback(config(n_trusted=12, alpha=50.0), train_dataset=raw, search_alpha=False)
        state = TrainerState(global_step=1, epoch=1.0)
        callback.on_train_end(
            training_args(tmp_path / name), state, TrainerControl(), model=model, processing_class=processing_class
        )
        weights[name] = model.classifier.weight.detach().clone()
    expected = tiny_vit()
    ProjectionCorrector(expected, config(n_trusted=12)).fit(raw, transform=processor).apply(alpha=50.0)
    assert torch.equal(weights["processor"], expected.classifier.weight)  # read through the Trainer's processor
    assert not torch.equal(weights["default"], weights["processor"])  # ViT's 0.5/0.5 defaults give another one
