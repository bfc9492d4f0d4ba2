"""CRUST training (hf_verifix.training.crust) against independent computations.

The per-epoch coreset is compared with per-class ``facility_location`` on gradient proxies computed here by hand
(softmax - onehot, and its outer product with the final layer's input); clusters, members and weights with a
nearest-medoid assignment computed here; λ with Beta(α, α) (mean, variance, Kolmogorov-Smirnov); and a real
``transformers.Trainer`` run with the inputs the model received, which must be exactly λ x_member + (1 - λ) x_medoid
of that epoch's items, with the loss recomputed from the raw data. 2 CPU processes under ``accelerate launch`` must
select exactly the coreset of 1 process and split its items between them.

Run as a script (``python tests/test_training_crust.py OUT``), this file is the distributed test's worker.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
import torch.nn.functional as F
from testing_utils import coded_images, finish, pixel_dataset, start_worker, tiny_timm_wrapper, tiny_vit
from torch import nn
from torch.utils.data import IterableDataset, TensorDataset
from transformers import (
    TrainerControl,
    TrainerState,
    TrainingArguments,
    ViTForImageClassification,
)

from hf_verifix.algorithms.facility_location import facility_location
from hf_verifix.errors import ConfigError, DataError, VerifixError
from hf_verifix.training._common import EpochCallback, current_epoch
from hf_verifix.training.crust import CrustConfig, CrustEpoch, CrustTrainer
from hf_verifix.training.crust import data as crust

# Tiny models: one thread is faster than two on a shared 2-core machine (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir), use_cpu=True, report_to=[], per_device_train_batch_size=6,
        per_device_eval_batch_size=8, learning_rate=0.05, num_train_epochs=1, save_strategy="no",
        eval_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    values.update(overrides)
    return TrainingArguments(**values)


def train(trainer: CrustTrainer) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its logs when tqdm is off
        trainer.train()


def blobs(counts: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """4-D points around one centre per class, ``counts[c]`` of class c, and about 20% of the labels redrawn."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = torch.randn(len(labels), 4, generator=generator) + 2.0 * torch.eye(4)[labels]
    flip = torch.rand(len(labels), generator=generator) < 0.2
    noisy = torch.where(flip, torch.randint(0, len(counts), (len(labels),), generator=generator), labels)
    return x, noisy


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def largest_remainder(counts: list[int], k: int) -> list[int]:
    """k split in proportion to ``counts``: floors, then +1 by largest remainder (ties: the lower class)."""
    n = sum(counts)
    budgets = [k * c // n for c in counts]
    order = sorted(range(len(counts)), key=lambda c: (-(k * counts[c] % n), c))
    for c in order[: k - sum(budgets)]:
        budgets[c] += 1
    return budgets


def images_and_labels(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour- and stripe-coded 3-class (3, 16, 16) images with about 25% of the labels redrawn."""
    images, labels, _ = coded_images(n, seed)
    return images, labels


def noted_dataset(images: torch.Tensor, labels: torch.Tensor) -> datasets.Dataset:
    """``pixel_values``/``labels`` in torch format, plus a column the model does not take (the Trainer drops it)."""
    return pixel_dataset(images, labels, notes=["x"] * len(labels))


def small_vit(seed: int = 0) -> ViTForImageClassification:
    """1 layer, 16 wide, 16x16 images in 8x8 patches, 3 labels."""
    return tiny_vit(seed, patch_size=8, hidden_size=16, num_hidden_layers=1, intermediate_size=32)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


class Recording(CrustTrainer):
    """Records, for every training batch, the CRUST fields, the tensor the model received and the loss."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[dict[str, Any]] = []
        self._received: list[torch.Tensor] = []
        self.model.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if module.training:  # the proxy pass runs in eval mode
            self._received.append((kwargs.get("pixel_values") if "pixel_values" in kwargs else args[0]).detach())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        fields = {
            k: inputs[k].detach().cpu() for k in ("crust_medoid", "crust_member", "crust_lambda", "crust_weight")
        }
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.batches.append(
            {**fields, "epoch": self.crust_history[-1].epoch, "input": self._received[-1], "loss": loss}
        )
        return loss


# ---------------------------------------------------------------------------------------------
# selection = per-class facility location on independently computed proxies
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gradient", ["logits", "last_layer"])
@pytest.mark.parametrize("classes", ["labels", "predictions"])
def test_coreset_is_per_class_facility_location_on_the_proxies(gradient, classes, tmp_path):
    x, y = blobs([30, 21, 15], seed=0)
    x = x.double()
    model = mlp(1).double()
    config = CrustConfig(fraction=0.4, gradient=gradient, classes=classes, progress=False)
    trainer = CrustTrainer(model, training_args(tmp_path), train_dataset=TensorDataset(x, y), crust=config)
    record = trainer.select_coreset(epoch=0)

    with torch.no_grad():  # the proxies, by hand: E = softmax(z) - onehot(y); H = [penultimate features, 1]
        logits = model(x).float()
        errors = torch.softmax(logits, dim=1) - F.one_hot(y, 3).float()
        hidden = torch.cat([model[:-1](x).float(), torch.ones(len(y), 1)], dim=1)
    groups = y if classes == "labels" else logits.argmax(dim=1)
    counts = torch.bincount(groups, minlength=3).tolist()
    budgets = largest_remainder(counts, 26)  # k = round(0.4 × 66)
    if classes == "labels":  # 26 × (28, 21, 17) / 66 = (11.03, 8.27, 6.70): floors 25, +1 to the largest remainder
        assert counts == [28, 21, 17] and budgets == [11, 8, 7]
    coreset, sizes = [], []
    for c in range(3):
        members = torch.nonzero(groups == c).flatten()
        points = errors[members] if gradient == "logits" else (errors[members], hidden[members])
        expected = facility_location(points, budgets[c])
        coreset.append(members[expected.indices])
        sizes.append(expected.weights)
    assert record.coreset.tolist() == torch.cat(coreset).tolist()  # same medoids, same (greedy) order
    assert record.cluster_sizes.tolist() == torch.cat(sizes).tolist()  # weights r_j = cluster sizes
    assert torch.bincount(groups[record.coreset], minlength=3).tolist() == budgets  # sizes = budgets
    assert int(record.cluster_sizes.sum()) == 66


def test_clusters_members_and_weights_follow_algorithm_1(tmp_path):
    x, y = blobs([25, 25, 20], seed=3)
    model = mlp(2)
    config = CrustConfig(fraction=0.3, members_per_medoid=2, mixup_alpha=0.5, progress=False)
    trainer = CrustTrainer(model, training_args(tmp_path, seed=7), train_dataset=TensorDataset(x, y), crust=config)
    record = trainer.select_coreset(epoch=0)
    assert len(record.item_medoids) == 2 * 21 == len(trainer.get_train_dataloader().dataset)

    with torch.no_grad():
        errors = (torch.softmax(model(x), dim=1) - F.one_hot(y, 3)).double()
    mixed_items = 0
    for c in range(3):
        in_class = torch.nonzero(y == c).flatten()
        medoids = record.coreset[y[record.coreset] == c]  # in greedy order
        # V_j: the class's samples whose nearest medoid is j (ties: the earlier pick), computed here.
        owner = torch.cdist(errors[in_class], errors[medoids]).argmin(dim=1)
        for position, j in enumerate(medoids.tolist()):
            cluster = set(in_class[owner == position].tolist())
            rows = torch.nonzero(record.item_medoids == j).flatten()
            assert rows.tolist() == [rows[0].item(), rows[0].item() + 1]  # |R_j| = 2 slots, in a row
            assert record.cluster_sizes[record.coreset == j].item() == len(cluster)
            assert record.item_weights[rows].tolist() == [len(cluster) / 2] * 2  # r_i = |V_j| / |R_j|
            members = record.item_members[rows].tolist()
            real = [i for i in members if i != j]
            assert len(real) == min(2, len(cluster) - 1) and len(set(real)) == len(real)  # without replacement
            assert set(real) <= cluster - {j}
            lambdas = record.item_lambdas[rows]
            for i, lam in zip(members, lambdas.tolist(), strict=True):
                assert (0 < lam < 1) if i != j else lam == 0.0  # the medoid alone is not mixed
            mixed_items += len(real)
        assert float(record.item_weights[y[record.item_medoids] == c].sum()) == pytest.approx(len(in_class))
    assert 20 <= mixed_items < 42  # both kinds of items occur: mixed ones and medoids of small clusters alone

    again = trainer.select_coreset(epoch=0)
    assert torch.equal(again.item_members, record.item_members) and torch.equal(
        again.item_lambdas, record.item_lambdas
    )
    other = trainer.select_coreset(epoch=1)  # same weights, so the same coreset; new draws
    assert torch.equal(other.coreset, record.coreset) and not torch.equal(other.item_lambdas, record.item_lambdas)


@pytest.mark.parametrize("alpha", [0.4, 3.0])
def test_mixup_coefficients_follow_beta_alpha_alpha(alpha, tmp_path):
    from scipy import stats

    # A model with zero weights gives every sample of a class the same proxy: one medoid per class (its first
    # sample) whose cluster is the whole class, and |R_j| = |V_j| - 1 = 1200 members mixed with it.
    n_class = 1201
    model = nn.Linear(2, 3)
    nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
    x = torch.randn(3 * n_class, 2, generator=torch.Generator().manual_seed(0))
    y = torch.arange(3).repeat_interleave(n_class)
    config = CrustConfig(fraction=3 / (3 * n_class), members_per_medoid=n_class - 1, mixup_alpha=alpha)
    args = training_args(tmp_path, per_device_eval_batch_size=1024)
    record = CrustTrainer(model, args, train_dataset=TensorDataset(x, y), crust=config).select_coreset(0)
    assert record.coreset.tolist() == [0, n_class, 2 * n_class]
    for c, j in enumerate(record.coreset.tolist()):
        rows = record.item_medoids == j
        assert sorted(record.item_members[rows].tolist()) == [
            i for i in range(c * n_class, (c + 1) * n_class) if i != j
        ]
    assert torch.all(record.item_weights == n_class / (n_class - 1))

    lambdas = record.item_lambdas.numpy()
    assert len(lambdas) == 3600
    variance = 1 / (4 * (2 * alpha + 1))  # of Beta(α, α), whose mean is 1/2
    assert abs(lambdas.mean() - 0.5) < 4 * (variance / len(lambdas)) ** 0.5
    assert abs(lambdas.var() - variance) < 0.1 * variance
    assert stats.kstest(lambdas, "beta", args=(alpha, alpha)).pvalue > 1e-3


# ---------------------------------------------------------------------------------------------
# the Trainer trains only on the epoch's mixed coreset items
# ---------------------------------------------------------------------------------------------


def test_trainer_steps_see_only_the_mixed_coreset_and_change_the_weights(tmp_path):
    images, labels = images_and_labels(36, seed=1)
    model = small_vit(0)
    before = snapshot(model)
    trainer = Recording(
        model,
        training_args(tmp_path, num_train_epochs=2, logging_strategy="epoch"),
        train_dataset=noted_dataset(images, labels),
        crust=CrustConfig(fraction=0.5, mixup_alpha=1.0, progress=False),
    )
    train(trainer)

    assert trainer.state.global_step == 6  # 18 items a epoch, in batches of 6
    assert [record.epoch for record in trainer.crust_history] == [0, 1]
    logged = [entry for entry in trainer.state.log_history if "crust/coreset_size" in entry]
    assert [(e["crust/coreset_size"], e["crust/items"], e["epoch"]) for e in logged] == [(18, 18, 0), (18, 18, 1.0)]
    assert all(e["crust/selection_s"] >= e["crust/proxies_s"] > 0 for e in logged)
    changed = [name for name, tensor in snapshot(model).items() if not torch.equal(tensor, before[name])]
    assert "classifier.weight" in changed and "vit.embeddings.patch_embeddings.projection.weight" in changed

    for record in trainer.crust_history:
        batches = [b for b in trainer.batches if b["epoch"] == record.epoch]
        assert len(batches) == 3
        seen = Counter(
            item
            for b in batches
            for item in zip(
                b["crust_medoid"].tolist(),
                b["crust_member"].tolist(),
                b["crust_lambda"].numpy().round(6).tolist(),
                b["crust_weight"].numpy().round(6).tolist(),
                strict=True,
            )
        )
        planned = Counter(
            zip(
                record.item_medoids.tolist(),
                record.item_members.tolist(),
                record.item_lambdas.float().numpy().round(6).tolist(),
                record.item_weights.float().numpy().round(6).tolist(),
                strict=True,
            )
        )
        assert seen == planned  # every item of the epoch exactly once (with its λ and r), nothing else
        assert {item[0] for item in seen} == set(record.coreset.tolist())
        for batch in batches:
            medoid, member = batch["crust_medoid"], batch["crust_member"]
            lam = batch["crust_lambda"].view(-1, 1, 1, 1)
            expected = lam * images[member] + (1 - lam) * images[medoid]  # eq. 11
            torch.testing.assert_close(batch["input"], expected, rtol=1e-6, atol=1e-6)
    # The first step's loss, recomputed from the initial weights and the dataset's own labels: the r-weighted mean
    # of λ CE(z, y_member) + (1 - λ) CE(z, y_medoid).
    first = trainer.batches[0]
    model_at_start = small_vit(0)
    with torch.no_grad():
        logits = model_at_start(pixel_values=first["input"]).logits
        lam, weight = first["crust_lambda"], first["crust_weight"]
        ce = lam * F.cross_entropy(logits, labels[first["crust_member"]], reduction="none") + (
            1 - lam
        ) * F.cross_entropy(logits, labels[first["crust_medoid"]], reduction="none")
        expected_loss = (weight * ce).sum() / weight.sum()
    torch.testing.assert_close(first["loss"].detach(), expected_loss, rtol=1e-5, atol=1e-6)


def with_transform(images: torch.Tensor, labels: torch.Tensor) -> datasets.Dataset:
    """Stored as raw uint8 arrays and a ``label`` column; ``pixel_values`` exist only through ``with_transform``."""
    raw = ((images.clamp(-2, 2) + 2) * 63).to(torch.uint8).numpy()
    stored = datasets.Dataset.from_dict({"raw": raw, "label": labels.numpy()})

    def preprocess(batch: dict[str, Any]) -> dict[str, Any]:
        pixels = [torch.as_tensor(a, dtype=torch.float32) / 63 - 2 for a in batch["raw"]]
        return {"pixel_values": pixels, "label": batch["label"]}

    return stored.with_transform(preprocess)


@pytest.mark.parametrize("data", ["torch_format", "with_transform"])
def test_timm_model_trains_with_last_layer_proxies(data, tmp_path):
    model = tiny_timm_wrapper()  # timm's test_resnet, 3 labels, seed 0
    before = snapshot(model)
    images, labels = images_and_labels(24, seed=2)
    trainer = Recording(
        model,
        training_args(tmp_path, per_device_train_batch_size=4),
        train_dataset=noted_dataset(images, labels) if data == "torch_format" else with_transform(images, labels),
        crust=CrustConfig(fraction=0.5, gradient="last_layer", progress=False),
    )
    train(trainer)
    assert trainer.state.global_step == 3 and trainer.crust_history[0].coreset.numel() == 12
    changed = [name for name, tensor in snapshot(model).items() if not torch.equal(tensor, before[name])]
    assert any(name.endswith("fc.weight") for name in changed) and len(changed) > 5
    if data == "with_transform":  # the model received the mixed transformed images
        pixels = ((images.clamp(-2, 2) + 2) * 63).to(torch.uint8).float() / 63 - 2
        for batch in trainer.batches:
            lam = batch["crust_lambda"].view(-1, 1, 1, 1)
            expected = lam * pixels[batch["crust_member"]] + (1 - lam) * pixels[batch["crust_medoid"]]
            torch.testing.assert_close(batch["input"], expected, rtol=1e-6, atol=1e-6)


def test_plain_module_on_a_tensor_dataset_with_sgd_and_accumulation(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    before = snapshot(model)
    images, labels = images_and_labels(40, seed=4)
    trainer = CrustTrainer(
        model,
        training_args(tmp_path, num_train_epochs=2, per_device_train_batch_size=5, gradient_accumulation_steps=2),
        train_dataset=TensorDataset(images, labels),
        optimizers=(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), None),
        crust=CrustConfig(fraction=0.5, members_per_medoid=0, progress=False),  # medoids alone, weighted
    )
    train(trainer)
    assert trainer.state.global_step == 4  # 20 items = 4 batches = 2 updates per epoch
    for record in trainer.crust_history:
        assert torch.equal(record.item_medoids, record.coreset) and torch.equal(record.item_members, record.coreset)
        assert torch.all(record.item_lambdas == 0) and torch.equal(record.item_weights.long(), record.cluster_sizes)
    assert all(not torch.equal(tensor, before[name]) for name, tensor in snapshot(model).items())


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fraction": 0}, r"fraction must be a number in \(0, 1\].*got 0 \(int\)"),
        ({"fraction": 1.5}, r"fraction must be a number in \(0, 1\]"),
        ({"fraction": "half"}, r"fraction .* got 'half' \(str\)"),
        ({"mixup_alpha": 0.0}, r"mixup_alpha must be a finite number > 0.*members_per_medoid=0"),
        ({"mixup_alpha": float("inf")}, r"mixup_alpha must be a finite number > 0"),
        ({"members_per_medoid": -1}, r"members_per_medoid must be an integer >= 0 \(e.g. 1\), got -1; it is how many"),
        ({"members_per_medoid": 1.0}, r"members_per_medoid must be an integer >= 0 \(e.g. 1\), got 1.0 \(float\)"),
        ({"gradient": "full"}, r"gradient must be 'logits' or 'last_layer', got 'full'"),
        ({"classes": "clean"}, r"classes must be 'labels' .* or 'predictions'"),
        ({"seed": -2}, r"seed must be a non-negative integer or None"),
        ({"block_size": 0}, r"block_size must be an integer >= 1"),
        ({"progress": "yes"}, r"progress must be True or False"),
    ],
)
def test_bad_options_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CrustConfig(**kwargs)


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(2), 0


def test_bad_trainer_arguments_and_data_raise_clear_errors(tmp_path):
    x, y = blobs([5, 5, 5], seed=0)
    data = TensorDataset(x, y)
    with pytest.raises(ConfigError, match=r"crust must be a hf_verifix CrustConfig or None, got \{'fraction'"):
        CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=data, crust={"fraction": 0.5})
    persistent = training_args(tmp_path, dataloader_num_workers=1, dataloader_persistent_workers=True)
    with pytest.raises(ConfigError, match="dataloader_persistent_workers=False"):
        CrustTrainer(mlp(0), persistent, train_dataset=data)
    with pytest.raises(DataError, match="train_dataset is a Stream; pass a map-style dataset"):
        CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=Stream())
    tiny = CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=data, crust=CrustConfig(fraction=0.01))
    with pytest.raises(DataError, match=r"fraction=0.01 of 15 training samples rounds to a coreset of 0 medoids"):
        tiny.select_coreset(0)
    with pytest.raises(ConfigError, match="epoch must be a non-negative integer, got -1"):
        tiny.select_coreset(-1)
    bad_labels = CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=TensorDataset(x, y + 3))
    with pytest.raises(DataError, match=r"labels must be in \[0, 3\)"):
        bad_labels.select_coreset(0)
    no_data = CrustTrainer(mlp(0), training_args(tmp_path))
    with pytest.raises(DataError, match="CrustTrainer needs a train_dataset"):
        no_data.select_coreset(0)
    unpaired = CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=[(x[0],)] * 4)
    with pytest.raises(DataError, match=r"a dict .* or an \(input, label\) pair, got tuple at index 0"):
        unpaired.select_coreset(0)


def test_errors_say_what_was_received_what_is_allowed_and_the_fix(tmp_path):
    x, y = blobs([5, 5, 5], seed=0)
    with pytest.raises(DataError, match=r"return a dict .*got list; pass data_collator=transformers.default_data_"):
        crust._PairCollator(lambda rows: [row["labels"] for row in rows])._collate([{"labels": 0}])
    with pytest.raises(DataError, match=r"needs a 'labels' .*got keys \['label_id'.*rename the dataset's label colu"):
        crust._label_key({"label_id": torch.tensor([0]), "pixel_values": torch.zeros(1, 4)})
    trainer = CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=TensorDataset(x, y))
    trainer.model = "resnet18"
    with pytest.raises(ConfigError, match=r"needs a torch model \(an nn.Module.*got 'resnet18'.*CrustTrainer\(model"):
        trainer.select_coreset(0)


# ---------------------------------------------------------------------------------------------
# epochs, evaluation and rank 0's failures
# ---------------------------------------------------------------------------------------------


def test_current_epoch_floors_the_trainer_epoch():
    assert current_epoch(TrainerState(epoch=2.6)) == 2  # resumed in the second half of epoch 2
    assert current_epoch(TrainerState(epoch=3.0)) == 3
    assert current_epoch(TrainerState(epoch=2.9999999)) == 3  # float noise at an epoch's start
    assert current_epoch(TrainerState(epoch=None)) == 0


def test_an_epoch_resumed_in_its_second_half_selects_with_its_own_number(tmp_path):
    x, y = blobs([10, 10, 10], seed=0)
    trainer = CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=TensorDataset(x, y))
    (select,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, EpochCallback)]
    with contextlib.redirect_stdout(io.StringIO()):
        select.on_epoch_begin(trainer.args, TrainerState(epoch=2.6), TrainerControl())
    assert trainer.crust_history[-1].epoch == 2


@pytest.mark.parametrize("as_dicts", [False, True])
def test_plain_module_evaluates_to_the_cross_entropy(as_dicts, tmp_path):
    x, y = blobs([10, 10, 10], seed=0)
    x_eval, y_eval = blobs([7, 6, 7], seed=1)
    held_out: Any = TensorDataset(x_eval, y_eval)
    if as_dicts:
        held_out = [{"pixel_values": a, "labels": b} for a, b in zip(x_eval, y_eval, strict=True)]
    model = mlp(0)
    trainer = CrustTrainer(model, training_args(tmp_path), train_dataset=TensorDataset(x, y), eval_dataset=held_out)
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = trainer.evaluate()
    with torch.no_grad():
        expected = F.cross_entropy(model.eval()(x_eval), y_eval)
    assert metrics["eval_loss"] == pytest.approx(float(expected), rel=1e-5)


def record_broadcasts(monkeypatch, replies: list[torch.Tensor] | None = None) -> list[list[int]]:
    """Replace crust's broadcast_from_main: records what is sent; returns ``replies`` in turn (else the input)."""
    sent: list[list[int]] = []

    def broadcast(tensor: torch.Tensor) -> torch.Tensor:
        sent.append(tensor.tolist())
        return replies.pop(0) if replies else tensor

    monkeypatch.setattr(crust, "broadcast_from_main", broadcast)
    return sent


def test_a_failure_on_rank_0_is_broadcast_before_it_is_raised(monkeypatch, tmp_path):
    x, y = blobs([10, 10, 10], seed=0)
    trainer = CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=TensorDataset(x, y))
    sent = record_broadcasts(monkeypatch)

    def fail(*args: Any) -> None:
        raise RuntimeError("facility location ran out of memory")

    monkeypatch.setattr(crust, "_draw_items", fail)
    with pytest.raises(RuntimeError, match="ran out of memory"):
        trainer.select_coreset(0)
    assert sent == [[1]]  # the status, so the other ranks stop instead of waiting for the items


def test_other_ranks_raise_when_rank_0_failed(monkeypatch, tmp_path):
    x, y = blobs([10, 10, 10], seed=0)
    trainer = CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=TensorDataset(x, y))
    monkeypatch.setattr(crust, "is_main_process", lambda: False)
    sent = record_broadcasts(monkeypatch, replies=[torch.tensor([1])])
    with pytest.raises(VerifixError, match=r"the main process \(rank 0\) failed .* epoch 0"):
        trainer.select_coreset(0)
    assert sent == [[0]]  # this rank's status is ignored; it waited for rank 0's and sent nothing after it


def test_one_process_sends_an_ok_status_then_the_items(monkeypatch, tmp_path):
    x, y = blobs([10, 10, 10], seed=0)
    trainer = CrustTrainer(mlp(0), training_args(tmp_path), train_dataset=TensorDataset(x, y))
    expected = trainer.select_coreset(0)
    sent = record_broadcasts(monkeypatch)
    record = trainer.select_coreset(0)
    assert sent[0] == [0] and len(sent) == 5
    assert torch.equal(record.item_members, expected.item_members)
    assert torch.equal(record.item_lambdas, expected.item_lambdas)


# ---------------------------------------------------------------------------------------------
# 2 CPU processes under accelerate launch select exactly what 1 process selects
# ---------------------------------------------------------------------------------------------


def distributed_run(output: Path) -> None:
    """Worker: 1 epoch of CRUST on a tiny MLP; saves the selection and the items this rank trained on."""
    from hf_verifix.utils.distributed import process_rank_and_count

    torch.set_num_threads(1)
    x, y = blobs([41, 37, 33], seed=5)  # 111 samples: the proxy shards are unequal
    args = training_args(output / "trainer", per_device_train_batch_size=4, per_device_eval_batch_size=16)
    trainer = Recording(mlp(3), args, train_dataset=TensorDataset(x, y), crust=CrustConfig(fraction=0.4))
    train(trainer)  # k = 44 items: 11 batches of 4, split 6/5 over 2 processes (the last one padded)
    rank, world = process_rank_and_count()
    pairs = (zip(b["crust_medoid"].tolist(), b["crust_member"].tolist(), strict=True) for b in trainer.batches)
    seen = [pair for batch in pairs for pair in batch]
    torch.save({"world": world, "record": trainer.crust_history[0], "seen": seen}, output / f"rank{rank}.pt")


@pytest.mark.distributed
def test_two_processes_select_the_same_coreset_as_one_and_split_its_items(tmp_path):
    worker = start_worker([__file__, str(tmp_path)], processes=2)
    (tmp_path / "one").mkdir()
    distributed_run(tmp_path / "one")  # meanwhile, the same run in this process
    finish(worker, timeout=300)
    load = lambda path: torch.load(path, weights_only=False)  # noqa: E731 - files this test just wrote
    one, rank0, rank1 = load(tmp_path / "one" / "rank0.pt"), load(tmp_path / "rank0.pt"), load(tmp_path / "rank1.pt")
    assert (one["world"], rank0["world"], rank1["world"]) == (1, 2, 2)
    expected: CrustEpoch = one["record"]
    assert expected.coreset.numel() == 44
    for rank in (rank0, rank1):
        record: CrustEpoch = rank["record"]
        for name in ("coreset", "cluster_sizes", "item_medoids", "item_members", "item_lambdas", "item_weights"):
            assert torch.equal(getattr(record, name), getattr(expected, name)), name
    planned = set(zip(expected.item_medoids.tolist(), expected.item_members.tolist(), strict=True))
    assert len(one["seen"]) == 44 and set(one["seen"]) == planned
    assert len(rank0["seen"]) == len(rank1["seen"]) == 24  # 6 batches of 4 each (one padded batch on rank 1)
    assert set(rank0["seen"]) | set(rank1["seen"]) == planned
    assert len(set(rank0["seen"]) & set(rank1["seen"])) <= 4  # only the padding repeats items


if __name__ == "__main__":
    distributed_run(Path(sys.argv[1]))
