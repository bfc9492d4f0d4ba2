"""M-DYR-H and its BMM-guided mixup variants (hf_verifix.training.bootstrapping).

The math is checked against hand computations and, for the random mixing weights, against the analytical mean and
variance of their distributions. Inside a real ``transformers.Trainer``, every loss the Trainer backpropagated is
recomputed independently (plain torch, the snapshot of the weights at that step, the pairs and coefficients it drew,
and a beta mixture fitted here to that epoch's losses), so the posteriors, their wiring into the loss and the warm-up
are all pinned. A timm model through ``TimmWrapperForImageClassification`` with a ``datasets.Dataset``, the argument
errors, and 2 CPU processes under ``accelerate launch`` (this file is also the worker) are covered too.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
import torch.nn.functional as F
from testing_utils import pixel_dataset, run_launched, tiny_timm_wrapper
from torch import nn
from torch.utils.data import Dataset, IterableDataset, TensorDataset
from transformers import (
    PrinterCallback,
    TrainerCallback,
    TrainingArguments,
)

from hf_verifix.algorithms.mixture import BetaMixture
from hf_verifix.errors import ConfigError, DataError
from hf_verifix.training.bootstrapping import (
    INDEX_KEY,
    BootstrappingConfig,
    BootstrappingTrainer,
    IndexedDataset,
    beta_guided_weights,
    binomial_guided_weights,
    bootstrapped_targets,
    class_prior_regularizer,
    dynamic_mixup_weights,
    mixup_bootstrapping_loss,
    static_mixup_weights,
)
from hf_verifix.training.crust import CrustTrainer

# These models are tiny: one thread is faster than two on a shared 2-core machine (conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# the loss of eq. 8, by hand
# ---------------------------------------------------------------------------------------------

LABELS = torch.tensor([0, 2])
PLAIN_LOGITS = torch.tensor([[0.1, 2.0, 0.3], [1.0, 0.0, 0.5]])  # predictions on the un-mixed inputs: classes 1, 0
NOISY = torch.tensor([0.2, 0.7])
H = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])  # softmax on the mixed inputs
PERMUTATION = torch.tensor([1, 0])


def test_hard_bootstrapping_mixup_loss_equals_a_hand_computation():
    targets = bootstrapped_targets(LABELS, PLAIN_LOGITS, NOISY, "hard")
    # (1 - w) y + w z, z = one-hot(argmax): sample 0 has label 0 and predicts 1, sample 1 has label 2 and predicts 0.
    torch.testing.assert_close(targets, torch.tensor([[0.8, 0.2, 0.0], [0.7, 0.0, 0.3]]))
    loss = mixup_bootstrapping_loss(H.log(), targets, targets[PERMUTATION], torch.tensor([0.6, 0.6]))
    log = math.log
    first = -0.6 * (0.8 * log(0.5) + 0.2 * log(0.3)) - 0.4 * (0.7 * log(0.5) + 0.3 * log(0.2))
    second = -0.6 * (0.7 * log(0.1) + 0.3 * log(0.8)) - 0.4 * (0.8 * log(0.1) + 0.2 * log(0.1))
    assert float(loss) == pytest.approx((first + second) / 2, rel=1e-6)
    # A scalar coefficient is the same as one per pair; per-pair coefficients weight each row separately.
    assert float(mixup_bootstrapping_loss(H.log(), targets, targets[PERMUTATION], 0.6)) == pytest.approx(float(loss))
    per_pair = mixup_bootstrapping_loss(H.log(), targets, targets[PERMUTATION], torch.tensor([1.0, 0.0]))
    expected = -(0.8 * log(0.5) + 0.2 * log(0.3)) - (0.8 * log(0.1) + 0.2 * log(0.1))
    assert float(per_pair) == pytest.approx(expected / 2, rel=1e-6)


def softmax(values: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_soft_bootstrapping_targets_and_loss_equal_a_hand_computation(temperature):
    targets = bootstrapped_targets(LABELS, PLAIN_LOGITS, NOISY, "soft", temperature)
    z0, z1 = softmax([0.1, 2.0, 0.3], temperature), softmax([1.0, 0.0, 0.5], temperature)
    t0 = [0.8 * (c == 0) + 0.2 * z0[c] for c in range(3)]
    t1 = [0.3 * (c == 2) + 0.7 * z1[c] for c in range(3)]
    torch.testing.assert_close(targets, torch.tensor([t0, t1]))
    loss = mixup_bootstrapping_loss(H.log(), targets, targets[PERMUTATION], 0.25)
    h = H.tolist()
    cross = lambda t, row: -sum(t[c] * math.log(h[row][c]) for c in range(3))  # noqa: E731
    expected = (0.25 * cross(t0, 0) + 0.75 * cross(t1, 0) + 0.25 * cross(t1, 1) + 0.75 * cross(t0, 1)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_targets_are_the_labels_for_clean_samples_and_the_prediction_for_noisy_ones():
    clean = bootstrapped_targets(LABELS, PLAIN_LOGITS, torch.zeros(2), "soft")
    torch.testing.assert_close(clean, F.one_hot(LABELS, 3).float())
    noisy = bootstrapped_targets(LABELS, PLAIN_LOGITS, torch.ones(2), "hard")
    torch.testing.assert_close(noisy, F.one_hot(torch.tensor([1, 0]), 3).float())


def test_class_prior_regularizer_equals_a_hand_computation():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]], dtype=torch.float64)  # h̄ = (0.4, 0.35, 0.25)
    uniform = sum(1 / 3 * math.log((1 / 3) / h) for h in (0.4, 0.35, 0.25))
    assert float(class_prior_regularizer(probs)) == pytest.approx(uniform, rel=1e-6)
    skewed = 0.5 * math.log(0.5 / 0.4) + 0.5 * math.log(0.5 / 0.35)  # p = (0.5, 0.5, 0): the last class adds 0
    assert float(class_prior_regularizer(probs, [1.0, 1.0, 0.0])) == pytest.approx(skewed, rel=1e-6)
    assert float(class_prior_regularizer(torch.tensor([[0.2, 0.8], [0.8, 0.2]]))) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ConfigError, match="the class prior has 2 entries but the model predicts 3 classes"):
        class_prior_regularizer(probs, [0.5, 0.5])


# ---------------------------------------------------------------------------------------------
# mixing coefficients: eq. 9, and the distributions of sec. 5.2
# ---------------------------------------------------------------------------------------------


def test_dynamic_mixup_weights_are_the_clean_share_of_each_pair():
    clean_p = torch.tensor([0.9, 0.2, 0.5, 1e-4, 0.0])
    clean_q = torch.tensor([0.1, 0.6, 0.5, 0.9999, 0.0])
    expected = [0.9 / 1.0, 0.2 / 0.8, 0.5, 1e-4, 0.5]  # δ_p / (δ_p + δ_q); both zero: half and half
    torch.testing.assert_close(dynamic_mixup_weights(clean_p, clean_q), torch.tensor(expected))


def draw_many(sampler: Any, clean_p: float, clean_q: float, n: int = 200_000) -> torch.Tensor:
    torch.manual_seed(0)
    return sampler(torch.full((n,), clean_p), torch.full((n,), clean_q)).double()


@pytest.mark.parametrize(("clean_p", "clean_q"), [(0.15, 0.35), (0.72, 0.08)])
def test_beta_guided_weights_follow_beta_r_one_minus_r(clean_p, clean_q):
    # δ_p + δ_q ≠ 1 on purpose: Beta(δ_p, δ_q) would have the right mean but another variance.
    r = clean_p / (clean_p + clean_q)
    draws = draw_many(beta_guided_weights, clean_p, clean_q)
    assert float(draws.mean()) == pytest.approx(r, abs=3e-3)  # standard error ≈ 7e-4
    assert float(draws.var()) == pytest.approx(r * (1 - r) / 2, rel=0.02)  # Var Beta(a, b), a + b = 1: r(1 - r)/2
    assert float(draws.min()) >= 0.0 and float(draws.max()) <= 1.0


def exact_binomial_ratio_moments(n: int, r: float) -> tuple[float, float]:
    """Mean and variance of K1 / (K1 + K2), K1 ~ Bin(n, r), K2 ~ Bin(n, 1 - r), 0/0 read as r, by enumeration."""
    pmf = lambda k, p: math.comb(n, k) * p**k * (1 - p) ** (n - k)  # noqa: E731
    first, second = [pmf(k, r) for k in range(n + 1)], [pmf(k, 1 - r) for k in range(n + 1)]
    mean = square = 0.0
    for k1 in range(n + 1):
        for k2 in range(n + 1):
            value = k1 / (k1 + k2) if k1 + k2 else r
            mean += first[k1] * second[k2] * value
            square += first[k1] * second[k2] * value**2
    return mean, square - mean**2


@pytest.mark.parametrize(("clean_p", "clean_q"), [(0.15, 0.35), (0.6, 0.15)])
def test_binomial_guided_weights_follow_the_ratio_of_two_binomials(clean_p, clean_q):
    r = clean_p / (clean_p + clean_q)
    mean, variance = exact_binomial_ratio_moments(30, r)
    draws = draw_many(lambda p, q: binomial_guided_weights(p, q, n=30), clean_p, clean_q)
    assert float(draws.mean()) == pytest.approx(mean, abs=1e-3)  # standard error ≈ 1.4e-4
    assert float(draws.var()) == pytest.approx(variance, rel=0.03)
    # What a wrong reading would give is far outside those tolerances: K1 / n has variance r(1 - r)/n.
    assert abs(r * (1 - r) / 30 - variance) > 0.2 * variance
    # The seed's n = 10000: mean r, variance ≈ r(1 - r)((1 - r)² + r²)/n (delta method).
    large = draw_many(binomial_guided_weights, clean_p, clean_q, n=50_000)
    assert float(large.mean()) == pytest.approx(r, abs=2e-4)
    assert float(large.var()) == pytest.approx(r * (1 - r) * ((1 - r) ** 2 + r**2) / 10_000, rel=0.05)


def test_static_mixup_weights_follow_beta_alpha_alpha_one_draw_per_batch():
    torch.manual_seed(0)
    batches = torch.stack([static_mixup_weights(4, alpha=32.0) for _ in range(4000)]).double()
    assert bool((batches == batches[:, :1]).all())  # one coefficient for the whole batch
    draws = batches[:, 0]
    assert float(draws.mean()) == pytest.approx(0.5, abs=4e-3)
    assert float(draws.var()) == pytest.approx(1 / (4 * (2 * 32 + 1)), rel=0.08)  # Var Beta(α, α) = 1/(4(2α + 1))
    torch.manual_seed(0)
    uniform = torch.stack([static_mixup_weights(1, alpha=1.0) for _ in range(4000)]).double()
    assert float(uniform.var()) == pytest.approx(1 / 12, rel=0.08)


def test_the_trainer_mixes_with_its_configured_alpha_and_dynamic_modes_are_static_in_the_warm_up(tmp_path):
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    for alpha, variance in ((1.0, 1 / 12), (32.0, 1 / 260)):
        for mixup in ("static", "binomial"):  # binomial without posteriors (warm-up): static Beta(α, α) too
            config = BootstrappingConfig(alpha=alpha, mixup=mixup)
            trainer = BootstrappingTrainer(mlp(), training_args(tmp_path), train_dataset=data, bootstrapping=config)
            torch.manual_seed(0)
            draws = [trainer.sample_mixup(4, None, torch.device("cpu")) for _ in range(2000)]
            assert all(sorted(perm.tolist()) == [0, 1, 2, 3] for perm, _ in draws)
            deltas = torch.stack([delta for _, delta in draws]).double()
            assert bool((deltas == deltas[:, :1]).all())
            assert float(deltas[:, 0].var()) == pytest.approx(variance, rel=0.1), (alpha, mixup)


# ---------------------------------------------------------------------------------------------
# options and data errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bootstrap": "medium"}, r"bootstrap must be one of \['hard', 'soft', 'soft_to_hard'\], got 'medium'"),
        ({"mixup": "cutmix"}, r"mixup must be one of \['static', 'dynamic', 'beta', 'binomial'\]"),
        ({"warmup": "none"}, r"warmup must be one of \['mixup', 'ce'\]"),
        ({"alpha": 0.0}, r"alpha must be a finite number > 0, got 0\.0"),
        ({"alpha": math.inf}, "alpha must be a finite number > 0"),
        ({"reg_weight": -1.0}, "reg_weight must be a finite number >= 0"),
        ({"warmup_epochs": -1}, "warmup_epochs must be an integer >= 0"),
        ({"warmup_epochs": 2.5}, "warmup_epochs must be an integer >= 0"),
        ({"binomial_n": 0}, "binomial_n must be an integer >= 1"),
        ({"final_temperature": 0.0}, r"final_temperature must be a number in \(0, 1\]"),
        ({"bmm_max_iters": 0}, "bmm_max_iters must be an integer >= 1"),
        ({"prior": (0.5, -0.5, 1.0)}, "prior must be None .* non-negative number per class"),
        ({"prior": (0.0, 0.0)}, "positive sum"),
        ({"progress": "yes"}, "progress must be True or False"),
    ],
)
def test_bad_options_raise_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BootstrappingConfig(**kwargs)


def test_config_defaults_are_the_papers_m_dyr_h_and_methods_have_names():
    config = BootstrappingConfig()
    assert (config.bootstrap, config.mixup, config.alpha, config.reg_weight, config.prior) == (
        "hard", "static", 32.0, 1.0, None,
    )  # fmt: skip
    assert (config.binomial_n, config.bmm_max_iters, config.warmup) == (10000, 10, "mixup")
    assert BootstrappingConfig(prior=[2, 1, 1]).prior == (2.0, 1.0, 1.0)
    sh = BootstrappingConfig.for_method("MD-DYR-SH-binomial", warmup_epochs=2)
    assert (sh.bootstrap, sh.mixup, sh.warmup_epochs) == ("soft_to_hard", "binomial", 2)
    with pytest.raises(ConfigError, match=r"unknown method 'M-DYR-X'; choose one of \['M-DYR-H'"):
        BootstrappingConfig.for_method("M-DYR-X")


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(2), 0


class Scalars(Dataset):
    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int) -> float:
        return float(index)


def test_bad_trainer_arguments_and_data_raise_clear_errors(tmp_path):
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    args = training_args(tmp_path)
    with pytest.raises(
        ConfigError, match=r"bootstrapping must be a BootstrappingConfig or None, got \{'warmup_epochs'"
    ):
        BootstrappingTrainer(mlp(), args, train_dataset=data, bootstrapping={"warmup_epochs": 1})
    with pytest.raises(ConfigError, match="computes its own loss"):
        BootstrappingTrainer(mlp(), args, train_dataset=data, compute_loss_func=lambda *a, **k: 0)
    with pytest.raises(ConfigError, match=r"label_smoothing_factor=0\.1 is not used"):
        BootstrappingTrainer(mlp(), training_args(tmp_path, label_smoothing_factor=0.1), train_dataset=data)
    with pytest.raises(DataError, match="needs train_dataset"):
        BootstrappingTrainer(mlp(), args)
    with pytest.raises(DataError, match="must be a map-style dataset"):
        BootstrappingTrainer(mlp(), args, train_dataset=Stream())
    with pytest.raises(ConfigError, match="scoring_dataset has 5 samples but train_dataset has 8"):
        BootstrappingTrainer(mlp(), args, train_dataset=data, scoring_dataset=TensorDataset(*data[:5]))
    with pytest.raises(DataError, match=r"must be a dict .* or an \(input, label\) pair, got float at index 1"):
        IndexedDataset(Scalars())[1]
    with pytest.raises(DataError, match="already have a 'sample_index' key"):
        IndexedDataset([{"pixel_values": torch.zeros(2), "labels": 0, INDEX_KEY: 5}])[0]
    trainer = BootstrappingTrainer(mlp(), args, train_dataset=data)
    model = mlp().train()
    with pytest.raises(DataError, match=r"needs batches with 'pixel_values' and 'labels' tensors, got keys \['image'"):
        trainer.compute_loss(model, {"image": torch.zeros(2, 4), "labels": torch.tensor([0, 1])})
    with pytest.raises(DataError, match=r"labels must be one integer class id per sample, got a torch\.float32"):
        trainer.compute_loss(model, {"pixel_values": torch.zeros(2, 4), "labels": torch.eye(2)})
    trainer._posterior_on_device = torch.full((8,), 0.5)  # as after a mixture fit
    with pytest.raises(DataError, match="the training batch has no 'sample_index' key"):
        trainer.compute_loss(model, {"pixel_values": torch.zeros(2, 4), "labels": torch.tensor([0, 1])})


class Pairs(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(2), index


def test_a_map_style_dataset_named_iterabledataset_is_accepted():
    named = type("IterableDataset", (Pairs,), {})  # only the streams of torch and datasets are refused
    assert IndexedDataset(named())[1]["labels"] == 1


@pytest.mark.parametrize("warmup", ["mixup", "ce"])
def test_a_prior_of_the_wrong_length_fails_at_the_first_step(warmup, tmp_path):
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    config = BootstrappingConfig(prior=(0.5, 0.5), warmup_epochs=1, warmup=warmup, progress=False)
    trainer = BootstrappingTrainer(mlp(), training_args(tmp_path), train_dataset=data, bootstrapping=config)
    trainer.remove_callback(PrinterCallback)
    with pytest.raises(ConfigError, match=r"prior=\.\.\.\) has 2 entries but the model predicts 3 classes.*pass 3 va"):
        trainer.train()
    assert trainer.state.global_step == 0  # not after the warm-up: no epoch of work lost


def test_a_prior_of_the_wrong_length_fails_in_the_first_loss_pass_without_warm_up(tmp_path):
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    config = BootstrappingConfig(prior=(0.2, 0.3, 0.1, 0.4), warmup_epochs=0, progress=False)
    trainer = BootstrappingTrainer(mlp(), training_args(tmp_path), train_dataset=data, bootstrapping=config)
    with pytest.raises(ConfigError, match="has 4 entries but the model predicts 3 classes"):
        trainer.score_samples()


def test_target_options_errors_say_what_is_allowed_and_the_fix():
    logits = torch.zeros(1, 2)
    with pytest.raises(ConfigError, match=r"mode must be 'hard' \(one-hot arg-max\) or 'soft'.*'argmax'.*pass mode="):
        bootstrapped_targets(torch.tensor([0]), logits, torch.tensor([0.5]), mode="argmax")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"temperature must be a finite number > 0 .*got 0.0 .*e.g. temperature=1.0"):
        bootstrapped_targets(torch.tensor([0]), logits, torch.tensor([0.5]), mode="soft", temperature=0.0)


def test_training_shorter_than_the_warm_up_warns(tmp_path):
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    trainer = BootstrappingTrainer(
        mlp(), training_args(tmp_path, num_train_epochs=1), train_dataset=data,
        bootstrapping=BootstrappingConfig(warmup_epochs=1),
    )  # fmt: skip
    with pytest.warns(UserWarning, match="runs 1 epoch.* but warmup_epochs=1, so it never bootstraps"):
        trainer.train()
    assert trainer.noisy_posterior is None and not bootstrapping_logs(trainer)


@pytest.mark.parametrize("trainer_class", [BootstrappingTrainer, CrustTrainer])
@pytest.mark.parametrize(("max_grad_norm", "warned"), [(1.0, True), (0.0, False), (5.0, False)])
def test_the_trainers_default_gradient_clipping_is_logged_as_a_warning(
    trainer_class, max_grad_norm, warned, tmp_path, caplog
):
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    with caplog.at_level(logging.WARNING, logger="hf_verifix.training._common"):
        trainer_class(mlp(), training_args(tmp_path, max_grad_norm=max_grad_norm), train_dataset=data)
    messages = [record.getMessage() for record in caplog.records if record.name == "hf_verifix.training._common"]
    assert len(messages) == int(warned)
    if warned:
        assert messages[0].startswith(f"{trainer_class.__name__}: TrainingArguments(max_grad_norm=1.0)")
        assert "pass TrainingArguments(max_grad_norm=0)" in messages[0]


# ---------------------------------------------------------------------------------------------
# inside a real Trainer: every loss recomputed independently
# ---------------------------------------------------------------------------------------------


def noisy_blobs(n: int, seed: int, noise: float = 0.25) -> TensorDataset:
    """Three Gaussian blobs in 4-D; a ``noise`` share of the labels moved to another class."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.arange(n) % 3
    inputs = torch.randn(n, 4, generator=generator) * 0.7
    inputs[torch.arange(n), clean] += 2.0
    flip = torch.rand(n, generator=generator) < noise
    labels = torch.where(flip, (clean + torch.randint(1, 3, (n,), generator=generator)) % 3, clean)
    return TensorDataset(inputs, labels)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))  # no dropout/BN: train mode == eval mode


def training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir), use_cpu=True, report_to=[], per_device_train_batch_size=16,
        per_device_eval_batch_size=32, learning_rate=0.05, save_strategy="no", eval_strategy="no",
        logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0, num_train_epochs=3,
    )  # fmt: skip
    values.update(overrides)
    return TrainingArguments(**values)


def bootstrapping_logs(trainer: BootstrappingTrainer) -> list[dict[str, Any]]:
    return [entry for entry in trainer.state.log_history if "bootstrapping/noisy_share" in entry]


class Snapshots(TrainerCallback):
    """Added before the trainer's own callback: the weights at each epoch start and before each step."""

    def __init__(self) -> None:
        self.epochs: list[tuple[int, dict[str, torch.Tensor]]] = []
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        self.epochs.append((round(state.epoch), copy.deepcopy(model.state_dict())))

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self.steps.append(copy.deepcopy(model.state_dict()))


class RecordingTrainer(BootstrappingTrainer):
    """Records every training loss with its batch, and the pairs and coefficients drawn for it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[dict[str, Any]] = []
        self.pending: dict[str, Any] = {}

    def sample_mixup(self, batch_size, clean, device):
        permutation, weights = super().sample_mixup(batch_size, clean, device)
        self.pending.update(permutation=permutation.clone(), weights=weights.clone())
        return permutation, weights

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.pending = {}
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            self.records.append(
                {
                    **self.pending, "loss": float(loss.detach()), "inputs": inputs["pixel_values"].clone(),
                    "labels": inputs["labels"].clone(), "indices": inputs[INDEX_KEY].clone(),
                    "temperature": self.temperature,
                }
            )  # fmt: skip
        return loss


def independent_posterior(model: nn.Module, data: TensorDataset) -> tuple[torch.Tensor, BetaMixture]:
    """Per-sample cross-entropy in plain torch, a fresh beta mixture, p(noisy) clamped like the reference."""
    inputs, labels = data.tensors
    with torch.no_grad():
        losses = F.cross_entropy(model.eval()(inputs), labels, reduction="none").double()
    mixture = BetaMixture().fit(losses)
    return mixture.noisy_posterior(losses).clamp(1e-4, 1 - 1e-4).float(), mixture


def expected_loss(
    model: nn.Module, record: dict[str, Any], noisy: torch.Tensor | None, bootstrap: str, warmup: bool
) -> float:
    """Eq. 8 + R (or plain mixup in the warm-up), written out in plain torch."""
    x, y, perm, delta = record["inputs"], record["labels"], record["permutation"], record["weights"]
    one_hot = F.one_hot(y, 3).float()
    with torch.no_grad():
        if warmup:
            targets = one_hot
        else:
            w = noisy[record["indices"]][:, None]
            plain = model(x)
            if bootstrap == "hard":
                z = F.one_hot(plain.argmax(-1), 3).float()
            else:
                z = torch.softmax(plain / record["temperature"], -1)
            targets = (1 - w) * one_hot + w * z
        log_h = torch.log_softmax(model(delta[:, None] * x + (1 - delta[:, None]) * x[perm]), -1)
        loss = (-(delta * (targets * log_h).sum(-1)) - (1 - delta) * (targets[perm] * log_h).sum(-1)).mean()
        if not warmup:
            mean = log_h.exp().mean(0)
            loss = loss + (1 / 3 * torch.log((1 / 3) / mean)).sum()
    return float(loss)


@pytest.mark.parametrize("method", ["M-DYR-H", "MD-DYR-SH"])
def test_trainer_losses_are_eq_8_with_the_posteriors_of_that_epochs_mixture(method, tmp_path):
    data = noisy_blobs(60, seed=0)
    config = BootstrappingConfig.for_method(method, warmup_epochs=1, progress=False)
    snapshots = Snapshots()
    model = mlp()
    trainer = RecordingTrainer(
        model, training_args(tmp_path), train_dataset=data, bootstrapping=config, callbacks=[snapshots]
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()

    # One mixture per epoch after the warm-up, fitted at the start of epochs 1 and 2 (0-based), logged each time.
    logs = bootstrapping_logs(trainer)
    assert [entry["epoch"] for entry in logs] == [1.0, 2.0]
    posteriors = {}
    for epoch, state in snapshots.epochs:
        if epoch < 1:
            continue
        snapshot = mlp()
        snapshot.load_state_dict(state)
        posteriors[epoch], mixture = independent_posterior(snapshot, data)
        entry = logs[epoch - 1]
        assert entry["bootstrapping/noisy_share"] == pytest.approx(float((posteriors[epoch] > 0.5).double().mean()))
        assert entry["bootstrapping/noisy_mean"] == pytest.approx(float(mixture.means.max()), abs=1e-5)
        assert entry["bootstrapping/clean_mean"] == pytest.approx(float(mixture.means.min()), abs=1e-5)
        assert entry["bootstrapping/noisy_mean"] > entry["bootstrapping/clean_mean"]
    # The trainer keeps the last epoch's values: the same losses and posteriors, by sample index.
    torch.testing.assert_close(trainer.noisy_posterior, posteriors[2], rtol=1e-4, atol=1e-5)
    snapshot = mlp()
    snapshot.load_state_dict(snapshots.epochs[-1][1])
    inputs, labels = data.tensors
    with torch.no_grad():
        losses = F.cross_entropy(snapshot(inputs), labels, reduction="none").double()
    torch.testing.assert_close(trainer.sample_losses, losses, rtol=1e-5, atol=1e-6)
    assert 0 < float((trainer.noisy_posterior > 0.5).float().mean()) < 1

    # Every loss the Trainer backpropagated, recomputed from the weights at that step: 4 steps per epoch.
    assert len(trainer.records) == len(snapshots.steps) == 12
    for step, (record, state) in enumerate(zip(trainer.records, snapshots.steps, strict=True)):
        epoch = step // 4
        snapshot = mlp()
        snapshot.load_state_dict(state)
        warmup = epoch == 0
        expected = expected_loss(snapshot, record, posteriors.get(epoch), config.bootstrap, warmup)
        assert record["loss"] == pytest.approx(expected, rel=1e-5), step
        if warmup or config.mixup == "static":
            assert bool((record["weights"] == record["weights"][0]).all())  # δ ~ Beta(32, 32), one per batch
        else:  # eq. 9 with the clean posteriors 1 - p(noisy) of this epoch's mixture
            clean = 1 - posteriors[epoch][record["indices"]]
            share = clean / (clean + clean[record["permutation"]])
            torch.testing.assert_close(record["weights"], share, rtol=1e-4, atol=1e-5)
    if config.bootstrap == "soft_to_hard":  # linear from 1 to final_temperature over the bootstrapping epochs
        assert [entry["bootstrapping/temperature"] for entry in logs] == [1.0, 0.001]
        assert [record["temperature"] for record in trainer.records[4::4]] == [1.0, 0.001]

    # Training changed the weights during the bootstrapping epochs.
    final = model.state_dict()
    assert all(not torch.equal(final[name], value) for name, value in snapshots.epochs[1][1].items())


def test_warm_up_with_cross_entropy_uses_the_labels_only(tmp_path):
    data = noisy_blobs(30, seed=1)
    config = BootstrappingConfig(warmup_epochs=1, warmup="ce", progress=False)
    snapshots = Snapshots()
    trainer = RecordingTrainer(
        mlp(), training_args(tmp_path, num_train_epochs=1, per_device_train_batch_size=30),
        train_dataset=data, bootstrapping=config, callbacks=[snapshots],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)
    with pytest.warns(UserWarning, match="never bootstraps"):
        trainer.train()
    assert len(trainer.records) == 1 and "permutation" not in trainer.records[0]  # no mixing (no sample_mixup)
    snapshot = mlp()
    snapshot.load_state_dict(snapshots.steps[0])
    inputs, labels = data.tensors
    with torch.no_grad():
        expected = F.cross_entropy(snapshot(inputs), labels)
    logged = trainer.state.log_history[-1]["train_loss"]
    assert logged == pytest.approx(float(expected), rel=1e-5)


def test_the_loss_pass_reads_the_scoring_dataset_in_order_when_given(tmp_path):
    data = noisy_blobs(21, seed=3)
    inputs, labels = data.tensors
    plain = TensorDataset(inputs.flip(0) * 0.5, labels.flip(0))  # "un-augmented" view: another tensor per sample
    model = mlp()
    args = training_args(tmp_path, per_device_eval_batch_size=4)  # several batches, the last one short
    with torch.no_grad():
        for scoring, (x, y) in ((None, (inputs, labels)), (plain, plain.tensors)):
            trainer = BootstrappingTrainer(model, args, train_dataset=data, scoring_dataset=scoring)
            expected = F.cross_entropy(model(x), y, reduction="none").double()
            torch.testing.assert_close(trainer.score_samples(), expected, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# a timm model with a datasets.Dataset, and evaluation
# ---------------------------------------------------------------------------------------------

SHAPE = (3, 16, 16)


def image_dataset(n: int, seed: int) -> datasets.Dataset:
    """Colour-coded 3-class images with about 25% wrong labels, plus a text column the model does not take."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.arange(n) % 3
    images = torch.randn(n, *SHAPE, generator=generator)
    for c in range(3):
        images[clean == c, c] += 1.5
    flip = torch.rand(n, generator=generator) < 0.25
    labels = torch.where(flip, (clean + 1) % 3, clean)
    return pixel_dataset(images, labels, notes=[f"image {i}" for i in range(n)])


def test_timm_model_trains_with_binomial_guided_mixup_on_a_datasets_dataset(tmp_path):
    model = tiny_timm_wrapper()  # timm's test_resnet, 3 labels, seed 0
    before = {name: value.detach().clone() for name, value in model.state_dict().items()}
    train, held_out = image_dataset(36, seed=0), image_dataset(18, seed=1)
    config = BootstrappingConfig.for_method("MD-DYR-SH-binomial", warmup_epochs=1, progress=False)
    trainer = BootstrappingTrainer(
        model, training_args(tmp_path, num_train_epochs=2, per_device_train_batch_size=12, learning_rate=0.01),
        train_dataset=train, eval_dataset=held_out, bootstrapping=config,
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    (entry,) = bootstrapping_logs(trainer)
    assert entry["epoch"] == 1.0 and entry["bootstrapping/temperature"] == 0.001
    assert trainer.noisy_posterior is not None and trainer.noisy_posterior.shape == (36,)
    bounds = torch.tensor([1e-4, 1 - 1e-4])  # the reference's clamp, in float32
    assert bool((trainer.noisy_posterior >= bounds[0]).all() and (trainer.noisy_posterior <= bounds[1]).all())
    assert trainer.train_dataset.dataset is train  # the index wrapper keeps the user's data
    changed = [name for name, value in model.state_dict().items() if not torch.equal(value, before[name])]
    assert "timm_model.fc.weight" in changed and any("conv" in name for name in changed)
    # Evaluation is the plain cross-entropy of the (un-mixed) held-out data.
    metrics = trainer.evaluate()
    model.eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(held_out["pixel_values"][:]).logits, held_out["labels"][:])
    assert metrics["eval_loss"] == pytest.approx(float(expected), rel=1e-4)


# ---------------------------------------------------------------------------------------------
# 2 CPU processes under accelerate launch: every process fits the same mixture (this file is the worker)
# ---------------------------------------------------------------------------------------------


def worker(output: str) -> None:
    from hf_verifix.utils.distributed import process_rank_and_count

    torch.set_num_threads(1)
    data = noisy_blobs(45, seed=2)  # odd: the shards of the loss pass are unequal
    model = mlp()
    config = BootstrappingConfig(warmup_epochs=0, progress=False)
    args = training_args(
        Path(output) / "trainer", num_train_epochs=1, per_device_train_batch_size=8, ddp_find_unused_parameters=False
    )
    trainer = BootstrappingTrainer(model, args, train_dataset=data, bootstrapping=config)
    trainer.train()
    rank, world = process_rank_and_count()
    torch.save(
        {
            "world": world,
            "losses": trainer.sample_losses,
            "posterior": trainer.noisy_posterior,
            "weights": {name: value.detach().clone() for name, value in model.state_dict().items()},
        },
        Path(output) / f"rank{rank}.pt",
    )


@pytest.mark.distributed
def test_two_processes_fit_the_same_mixture_as_one(tmp_path):
    done = run_launched([__file__, str(tmp_path)], timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    load = lambda path: torch.load(path, weights_only=False)  # noqa: E731 - files this test just wrote
    rank0, rank1 = load(tmp_path / "rank0.pt"), load(tmp_path / "rank1.pt")
    assert (rank0["world"], rank1["world"]) == (2, 2)
    assert torch.equal(rank0["losses"], rank1["losses"]) and torch.equal(rank0["posterior"], rank1["posterior"])
    # What one process computes: the initial model's losses over all 45 samples, and their mixture.
    data = noisy_blobs(45, seed=2)
    inputs, labels = data.tensors
    with torch.no_grad():
        losses = F.cross_entropy(mlp()(inputs), labels, reduction="none").double()
    torch.testing.assert_close(rank0["losses"], losses, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(rank0["posterior"], independent_posterior(mlp(), data)[0], rtol=1e-5, atol=1e-6)
    for name, value in rank0["weights"].items():  # DDP kept the replicas identical through the two forward passes
        assert torch.equal(value, rank1["weights"][name]), name
        assert not torch.equal(value, mlp().state_dict()[name]), name


if __name__ == "__main__":
    worker(sys.argv[1])
