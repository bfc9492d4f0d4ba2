"""M-DYR-H and its BMM-guided mixup variants (Arazo et al., 2019) for the Hugging Face ``Trainer``.

Noisy labels are learned later than clean ones, so early in training a two-component beta mixture (BMM) fitted to the
per-sample losses tells each sample's probability of being mislabelled. M-DYR-H (mixup + dynamic hard bootstrapping
+ regularisation) trains on mixed pairs (x = λx_p + (1 − λ)x_q) with, for each sample, a target that moves from its
label towards the model's own prediction as that probability grows (seed eqs. 2 and 8), plus a class-prior
regulariser that stops the model from predicting one class for everything. The dynamic-mixup variants (MD-DYR-SH,
seed sec. 4.4 and 5.2) also weight each pair by how likely its samples are clean.

What :class:`BootstrappingTrainer` does (a ``transformers.Trainer`` subclass):

1. For ``warmup_epochs`` epochs: plain mixup with λ ~ Beta(α, α) on the labels (the reference code's warm-up for the
   mixup methods; ``warmup="ce"`` trains with plain cross-entropy instead).
2. At the start of every later epoch: one pass over the whole training set in eval mode without gradients (exact
   shards per process, summed, so every process holds the same vector), the per-sample cross-entropy under the
   given labels, a :class:`~hf_verifix.mixture.BetaMixture` fitted to it (the same code as the ``bmm`` selector:
   5th/95th percentile normalisation, at most 10 EM iterations, noisy component = the larger mean), and each
   sample's p(noisy | loss) kept by sample index. The BMM's means, the share of samples with p(noisy) > 0.5 and the
   pass's duration are logged through ``Trainer.log`` (``bootstrapping/*``).
3. Each training step of those epochs: an extra forward pass without gradients on the un-mixed batch gives the
   predictions z; the batch is mixed with a random permutation; the loss is eq. 8 with the kept posteriors plus
   η·R (the class-prior regulariser).

Each sample's index travels with it: the training set is wrapped in :class:`IndexedDataset`, whose items are dicts
with a ``"sample_index"`` key (``(input, label)`` tuples become ``{"pixel_values", "labels"}``), and the Trainer's
``remove_unused_columns`` keeps that key, ``pixel_values`` and ``labels`` (they are added to its signature columns).

Recipe for a benchmark script (a timm model wrapped as ``TimmWrapperForImageClassification``, or any ``nn.Module``
whose ``forward(pixel_values)`` returns logits; data a ``TensorDataset(images, labels)`` or a ``datasets.Dataset``
with ``pixel_values``/``labels`` columns in torch format)::

    from transformers import TrainingArguments
    from hf_verifix.training.bootstrapping import BootstrappingConfig, BootstrappingTrainer

    args = TrainingArguments(
        output_dir="out", num_train_epochs=E, per_device_train_batch_size=128, per_device_eval_batch_size=512,
        optim="sgd", optim_args="momentum=0.9", learning_rate=0.1, weight_decay=1e-4, lr_scheduler_type="cosine",
        save_strategy="no", report_to=[], logging_strategy="epoch", seed=0,
        max_grad_norm=0.0,   # the reference code does not clip; the Trainer's default clips to norm 1.0
    )
    trainer = BootstrappingTrainer(
        model, args, train_dataset=TensorDataset(images, noisy_labels),
        bootstrapping=BootstrappingConfig(warmup_epochs=E // 3),   # M-DYR-H; see BootstrappingConfig.for_method
    )
    trainer.train()   # trains ``model`` in place; trainer.noisy_posterior holds the last epoch's p(noisy)

Example:
    >>> bootstrapped_targets(torch.tensor([0]), torch.tensor([[0.0, 2.0]]), torch.tensor([0.25])).tolist()
    [[0.75, 0.25]]
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..config import _is_number, _valid_int
from ..data.source import as_source
from ..errors import ConfigError, DataError, describe_value
from ..mixture import BetaMixture
from ..models.forward import logits_of
from ..selection.loss import per_sample_losses
from ._common import KeepColumnsTrainer, as_row, current_epoch, is_map_style

__all__ = [
    "INDEX_KEY",
    "LOG_PREFIX",
    "METHODS",
    "BootstrappingConfig",
    "BootstrappingTrainer",
    "IndexedDataset",
    "beta_guided_weights",
    "binomial_guided_weights",
    "bootstrapped_targets",
    "class_prior_regularizer",
    "dynamic_mixup_weights",
    "mixup_bootstrapping_loss",
    "static_mixup_weights",
]

INDEX_KEY = "sample_index"
"""The key under which :class:`IndexedDataset` adds each item's position in the training set.

Example:
    >>> INDEX_KEY
    'sample_index'
"""

LOG_PREFIX = "bootstrapping/"
"""Prefix of the metrics :class:`BootstrappingTrainer` logs at each mixture fit.

Example:
    >>> LOG_PREFIX + "noisy_share"
    'bootstrapping/noisy_share'
"""

POSTERIOR_BOUNDS = (1e-4, 1.0 - 1e-4)  # the reference code clamps the posteriors so that no weight is exactly 0 or 1

BootstrapMode = Literal["hard", "soft", "soft_to_hard"]
MixupMode = Literal["static", "dynamic", "beta", "binomial"]

METHODS: dict[str, dict[str, str]] = {
    "M-DYR-H": {"bootstrap": "hard", "mixup": "static"},
    "M-DYR-S": {"bootstrap": "soft", "mixup": "static"},
    "MD-DYR-SH": {"bootstrap": "soft_to_hard", "mixup": "dynamic"},
    "MD-DYR-SH-beta": {"bootstrap": "soft_to_hard", "mixup": "beta"},
    "MD-DYR-SH-binomial": {"bootstrap": "soft_to_hard", "mixup": "binomial"},
}
"""The named methods of the seeds and the :class:`BootstrappingConfig` options they stand for.

Example:
    >>> METHODS["M-DYR-H"]
    {'bootstrap': 'hard', 'mixup': 'static'}
"""


# ---------------------------------------------------------------------------------------------------------------------
# the math: pure functions
# ---------------------------------------------------------------------------------------------------------------------


def bootstrapped_targets(
    labels: torch.Tensor,
    logits: torch.Tensor,
    noisy_posterior: torch.Tensor,
    mode: Literal["hard", "soft"] = "hard",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Return the dynamic bootstrapping targets (1 − w)·y + w·z of seed eq. 2 (the brackets of eq. 8).

    y is the one-hot label, w the sample's p(noisy | loss), and z the model's prediction on the un-mixed sample:
    the one-hot of its arg-max (``"hard"``) or its softmax ``softmax(logits / temperature)`` (``"soft"``; a
    temperature near 0 approaches the hard target, as the soft-to-hard schedule of MD-DYR-SH does).

    Args:
        labels: Integer labels, shape ``(B,)``.
        logits: The model's logits on the un-mixed inputs, shape ``(B, C)`` (used without gradients).
        noisy_posterior: Each sample's w in [0, 1], shape ``(B,)``.
        mode: ``"hard"`` or ``"soft"``.
        temperature: Softmax temperature of ``"soft"`` (> 0).

    Returns:
        A ``(B, C)`` float tensor whose rows sum to 1.

    Example:
        >>> logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
        >>> bootstrapped_targets(torch.tensor([0, 0]), logits, torch.tensor([0.5, 1.0])).tolist()
        [[0.5, 0.5], [1.0, 0.0]]
    """
    if mode not in ("hard", "soft"):
        raise ConfigError(
            f"mode must be 'hard' (one-hot arg-max) or 'soft' (softmax), got {describe_value(mode)}; pass "
            "mode='hard' or mode='soft'"
        )
    if not (_is_number(temperature) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(
            f"temperature must be a finite number > 0 (the softmax temperature of mode='soft'), got "
            f"{describe_value(temperature)}; pass e.g. temperature=1.0 (a value near 0 approaches mode='hard')"
        )
    logits = logits.detach().float()
    num_classes = logits.shape[-1]
    one_hot = F.one_hot(labels.long(), num_classes).to(logits.dtype)
    if mode == "hard":
        prediction = F.one_hot(logits.argmax(dim=-1), num_classes).to(logits.dtype)
    else:
        prediction = torch.softmax(logits / temperature, dim=-1)
    w = noisy_posterior.to(logits.dtype).reshape(-1, 1)
    return (1.0 - w) * one_hot + w * prediction


def mixup_bootstrapping_loss(
    log_probs: torch.Tensor, targets_p: torch.Tensor, targets_q: torch.Tensor, weights: torch.Tensor | float
) -> torch.Tensor:
    """Return the mixup bootstrapping loss of seed eq. 8, averaged over the batch.

    l* = −δ·t_pᵀ log h − (1 − δ)·t_qᵀ log h, where h is the prediction on the mixed input δx_p + (1 − δ)x_q and
    t_p, t_q the targets of the two mixed samples (:func:`bootstrapped_targets`; one-hot labels give plain mixup).

    Args:
        log_probs: ``log_softmax`` of the model's logits on the mixed inputs, shape ``(B, C)``.
        targets_p: Targets of the first samples of the pairs, shape ``(B, C)``.
        targets_q: Targets of the second samples, shape ``(B, C)``.
        weights: The mixing coefficient δ of each pair (shape ``(B,)``) or one for the whole batch.

    Example:
        >>> log_h = torch.log(torch.tensor([[0.8, 0.2]]))
        >>> y_p, y_q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> round(float(mixup_bootstrapping_loss(log_h, y_p, y_q, 0.75)), 4)  # -(0.75 log 0.8 + 0.25 log 0.2)
        0.5697
    """
    delta = torch.as_tensor(weights, dtype=log_probs.dtype, device=log_probs.device).reshape(-1)
    cross_p = -(targets_p.to(log_probs.dtype) * log_probs).sum(dim=-1)
    cross_q = -(targets_q.to(log_probs.dtype) * log_probs).sum(dim=-1)
    return (delta * cross_p + (1.0 - delta) * cross_q).mean()


def class_prior_regularizer(probs: torch.Tensor, prior: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """Return R = Σ_c p_c log(p_c / h̄_c) (seed sec. 4.3; Tanaka et al. 2018), h̄ the batch's mean softmax.

    The seed defines h̄_c over the whole dataset; as in the reference code it is taken over the (mixed) batch, so the
    gradient stays cheap. Classes with p_c = 0 contribute 0.

    Args:
        probs: Softmax probabilities, shape ``(B, C)``.
        prior: The class prior p (C values, normalised to sum to 1); uniform when None.

    Example:
        >>> round(float(class_prior_regularizer(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))), 4)  # h̄ = (0.75, 0.25)
        0.1438
    """
    mean = probs.mean(dim=0)
    if prior is None:
        p = torch.full_like(mean, 1.0 / mean.numel())
    else:
        p = torch.as_tensor(prior, dtype=mean.dtype, device=mean.device)
        if p.shape != mean.shape:
            raise ConfigError(
                f"the class prior has {p.numel()} entries but the model predicts {mean.numel()} classes; pass one "
                "prior probability per class (or None for a uniform prior)"
            )
        p = p / p.sum()
    return (torch.xlogy(p, p) - p * torch.log(mean)).sum()


def static_mixup_weights(batch_size: int, alpha: float = 32.0) -> torch.Tensor:
    """Return mixup's coefficient δ ~ Beta(α, α), one draw for the batch, repeated ``batch_size`` times (seed eq. 7).

    One draw per batch as in the reference code; Arazo et al. use α = 32 for M-DYR-H. Uses torch's global RNG.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> w = static_mixup_weights(3)
        >>> w.shape, bool((w == w[0]).all())
        (torch.Size([3]), True)
    """
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha must be a finite number > 0, got {alpha!r}; Arazo et al. use 32")
    draw = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample()
    return draw.expand(batch_size).clone()


def _clean_share(clean_p: torch.Tensor, clean_q: torch.Tensor) -> torch.Tensor:
    """δ_p / (δ_p + δ_q) as float, 1/2 where both are 0."""
    p, q = clean_p.float(), clean_q.float()
    total = p + q
    return torch.where(total > 0, p / total.clamp_min(torch.finfo(p.dtype).tiny), torch.full_like(p, 0.5))


def dynamic_mixup_weights(clean_p: torch.Tensor, clean_q: torch.Tensor) -> torch.Tensor:
    """Return the dynamic mixup coefficients δ_p / (δ_p + δ_q) of seed eq. 9 (MD-DYR-SH).

    δ_p = p(clean | ℓ_p) and δ_q = p(clean | ℓ_q): the sample more likely clean dominates the mixed input
    x = δ_p/(δ_p + δ_q)·x_p + δ_q/(δ_p + δ_q)·x_q. Where both are 0 the pair is mixed half and half.

    Example:
        >>> w = dynamic_mixup_weights(torch.tensor([0.9, 0.2, 0.0]), torch.tensor([0.1, 0.6, 0.0]))
        >>> [round(v, 4) for v in w.tolist()]
        [0.9, 0.25, 0.5]
    """
    return _clean_share(clean_p, clean_q)


def beta_guided_weights(clean_p: torch.Tensor, clean_q: torch.Tensor) -> torch.Tensor:
    """Return mixing coefficients λ ~ Beta(r, 1 − r), r = δ_p / (δ_p + δ_q), one draw per pair (seed sec. 5.2).

    E[λ] = r (the dynamic mixup coefficient of eq. 9) and Var[λ] = r(1 − r)/2. r is kept in [1e-6, 1 − 1e-6] so
    both Beta parameters stay positive. Uses torch's global RNG.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> w = beta_guided_weights(torch.full((20000,), 0.3), torch.full((20000,), 0.7))
        >>> round(float(w.mean()), 2)
        0.3
    """
    r = _clean_share(clean_p, clean_q).clamp(1e-6, 1.0 - 1e-6)
    return torch.distributions.Beta(r, 1.0 - r).sample()


def binomial_guided_weights(clean_p: torch.Tensor, clean_q: torch.Tensor, n: int = 10000) -> torch.Tensor:
    """Return mixing coefficients λ = K_1 / (K_1 + K_2), K_1 ~ Bin(n, r), K_2 ~ Bin(n, 1 − r) (seed sec. 5.2).

    r = δ_p / (δ_p + δ_q); the seed draws λ_1 and λ_2 "by the same procedure" from r and 1 − r (with n = 10000) and
    weights x_p by λ_1 / (λ_1 + λ_2), x_q by λ_2 / (λ_1 + λ_2); the 1/n scaling of each draw cancels in the ratio.
    Where both draws are 0 (probability (r(1 − r))ⁿ) the coefficient is r. Uses torch's global RNG.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> w = binomial_guided_weights(torch.full((1000,), 0.3), torch.full((1000,), 0.7))
        >>> round(float(w.mean()), 2), bool(w.std() < 0.01)
        (0.3, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}; the seed uses n = 10000")
    r = _clean_share(clean_p, clean_q)
    first = torch.distributions.Binomial(total_count=n, probs=r).sample()
    second = torch.distributions.Binomial(total_count=n, probs=1.0 - r).sample()
    total = first + second
    return torch.where(total > 0, first / total.clamp_min(1.0), r)


# ---------------------------------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BootstrappingConfig:
    """Hyperparameters of M-DYR-H and its variants (defaults: M-DYR-H as in Arazo et al., 2019).

    | method (:data:`METHODS`) | ``bootstrap`` | ``mixup`` |
    |---|---|---|
    | M-DYR-H | ``"hard"`` | ``"static"`` |
    | M-DYR-S | ``"soft"`` | ``"static"`` |
    | MD-DYR-SH | ``"soft_to_hard"`` | ``"dynamic"`` (eq. 9) |
    | MD-DYR-SH, Beta / Binomial-guided (sec. 5.2) | ``"soft_to_hard"`` | ``"beta"`` / ``"binomial"`` |

    Args:
        bootstrap: The prediction z in the targets (1 − w)y + wz: ``"hard"`` (one-hot arg-max), ``"soft"``
            (softmax), or ``"soft_to_hard"`` (softmax with a temperature falling linearly from 1 at the first
            bootstrapping epoch to ``final_temperature`` at the last one, as the reference's MD-DYR-SH).
        mixup: How pairs are mixed after the warm-up: ``"static"`` (δ ~ Beta(α, α) per batch), ``"dynamic"``
            (δ = δ_p/(δ_p + δ_q), eq. 9), ``"beta"`` (δ ~ Beta(r, 1 − r)) or ``"binomial"`` (sec. 5.2).
        alpha: α of static mixup, also used in the warm-up (the paper: 32).
        reg_weight: η, the weight of the class-prior regulariser R (the paper: 1; 0 turns it off).
        prior: The class prior p_c of R (one value per class, normalised); None is uniform.
        warmup_epochs: Epochs trained before the first mixture fit (the paper: 105 of 300 with mixup, 30 of 120
            without; scale it with your schedule so the model fits the clean samples but not yet the noisy ones).
        warmup: ``"mixup"`` (static mixup on the labels, the reference code for the mixup methods) or ``"ce"``
            (cross-entropy on the labels).
        binomial_n: n of the Binomial-guided weights (the seed: 10000).
        final_temperature: The last temperature of ``"soft_to_hard"`` (the reference: 0.001).
        bmm_max_iters: EM iterations at most per mixture fit (the paper: 10).
        progress: Show a progress bar for each per-epoch loss pass (main process; hidden by ``disable_tqdm``).

    Raises:
        ConfigError: An option out of range (the message says what is allowed).

    Example:
        >>> BootstrappingConfig().bootstrap, BootstrappingConfig().alpha
        ('hard', 32.0)
        >>> BootstrappingConfig(mixup="uniform")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigError: mixup must be one of ['static', 'dynamic', 'beta', 'binomial'], got 'uniform' (str)
    """

    bootstrap: BootstrapMode = "hard"
    mixup: MixupMode = "static"
    alpha: float = 32.0
    reg_weight: float = 1.0
    prior: tuple[float, ...] | None = None
    warmup_epochs: int = 10
    warmup: Literal["mixup", "ce"] = "mixup"
    binomial_n: int = 10000
    final_temperature: float = 0.001
    bmm_max_iters: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (
            ("bootstrap", ("hard", "soft", "soft_to_hard")),
            ("mixup", ("static", "dynamic", "beta", "binomial")),
            ("warmup", ("mixup", "ce")),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {describe_value(value)}")
        for name, low_open in (("alpha", True), ("reg_weight", False)):
            value = getattr(self, name)
            ok = _is_number(value) and math.isfinite(value)
            if not ok or (value <= 0 if low_open else value < 0):
                bound = "> 0" if low_open else ">= 0"
                raise ConfigError(f"{name} must be a finite number {bound}, got {describe_value(value)}")
            object.__setattr__(self, name, float(value))
        temperature = self.final_temperature
        if not _is_number(temperature) or not 0 < temperature <= 1:
            raise ConfigError(
                f"final_temperature must be a number in (0, 1], got {describe_value(temperature)}; e.g. 0.001"
            )
        object.__setattr__(self, "final_temperature", float(temperature))
        for name, low, example, hint in (
            ("warmup_epochs", 0, 10, "the number of epochs before the first mixture fit"),
            ("binomial_n", 1, 10000, "the seed uses 10000"),
            ("bmm_max_iters", 1, 10, "the paper uses 10"),
        ):
            object.__setattr__(self, name, _valid_int(getattr(self, name), name, low, example, hint=hint))
        if not isinstance(self.progress, bool):
            raise ConfigError(f"progress must be True or False, got {describe_value(self.progress)}")
        if self.prior is not None:
            values = list(self.prior) if isinstance(self.prior, (list, tuple)) else None
            ok = values is not None and len(values) >= 2
            ok = ok and all(_is_number(v) for v in values or [])
            ok = ok and all(math.isfinite(v) and v >= 0 for v in values or []) and sum(values or []) > 0
            if not ok:
                raise ConfigError(
                    f"prior must be None (uniform) or one non-negative number per class with a positive sum, e.g. "
                    f"(0.5, 0.3, 0.2); got {describe_value(self.prior)}"
                )
            object.__setattr__(self, "prior", tuple(float(v) for v in values or []))

    @classmethod
    def for_method(cls, name: str, **overrides: Any) -> BootstrappingConfig:
        """Return the config of a named method of :data:`METHODS`, with ``overrides`` applied.

        Example:
            >>> BootstrappingConfig.for_method("MD-DYR-SH-beta", warmup_epochs=3).mixup
            'beta'
        """
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
        return cls(**{**METHODS[name], **overrides})


# ---------------------------------------------------------------------------------------------------------------------
# data: every item knows its index
# ---------------------------------------------------------------------------------------------------------------------


class IndexedDataset(Dataset):
    """A map-style dataset whose items are dicts carrying their own position under :data:`INDEX_KEY`.

    Dict items (a ``datasets.Dataset`` row, with or without ``with_transform``) keep their keys; ``(input, label,
    ...)`` tuples (a ``TensorDataset``) become ``{"pixel_values": input, "labels": label}``.

    Raises:
        DataError: An iterable dataset, an item that is neither a dict nor an ``(input, label)`` pair, or an item that
            already has a ``"sample_index"`` key.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> item = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1])))[2]
        >>> sorted(item), int(item["labels"]), item["sample_index"]
        (['labels', 'pixel_values', 'sample_index'], 1, 2)
    """

    def __init__(self, dataset: Any) -> None:
        if not is_map_style(dataset):
            raise DataError(
                f"the training data must be a map-style dataset (datasets.Dataset, or a torch Dataset with "
                f"__getitem__ and __len__) so each sample keeps its index across epochs, got {type(dataset).__name__}"
            )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = as_row(self.dataset[index], index)
        if INDEX_KEY in row:
            raise DataError(
                f"the training items already have a {INDEX_KEY!r} key, which BootstrappingTrainer adds itself; "
                "rename that column"
            )
        row[INDEX_KEY] = int(index)
        return row


# ---------------------------------------------------------------------------------------------------------------------
# the Trainer
# ---------------------------------------------------------------------------------------------------------------------


class _EpochStart(TrainerCallback):
    """Fits the mixture at the start of every epoch after the warm-up (registered by BootstrappingTrainer)."""

    def __init__(self, trainer: BootstrappingTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        self.trainer._start_training(state)
        return control

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        self.trainer._start_epoch(current_epoch(state))
        return control


class BootstrappingTrainer(KeepColumnsTrainer):
    """A ``transformers.Trainer`` that trains with M-DYR-H or a BMM-guided mixup variant (Arazo et al., 2019).

    Takes every ``Trainer`` argument plus ``bootstrapping`` (a :class:`BootstrappingConfig`) and
    ``scoring_dataset``. The training data is wrapped in :class:`IndexedDataset` (``trainer.train_dataset``; the
    original stays in ``trainer.train_dataset.dataset``). Batches must provide ``pixel_values`` (the model is called
    as ``model(pixel_values)``, so transformers image classifiers, ``TimmWrapperForImageClassification`` and plain
    ``nn.Module``s all work; logits are read with :func:`~hf_verifix.models.forward.logits_of`) and integer
    ``labels``. Evaluation (``trainer.evaluate``) reports the plain cross-entropy.

    Per epoch after the warm-up it sets :attr:`sample_losses` (each sample's cross-entropy, eval mode),
    :attr:`mixture` (the fitted :class:`~hf_verifix.mixture.BetaMixture`) and :attr:`noisy_posterior` (each sample's
    p(noisy | loss), clamped to [1e-4, 1 − 1e-4] as in the reference code), and logs ``bootstrapping/clean_mean``,
    ``bootstrapping/noisy_mean`` (the components' means on the normalised loss scale), ``bootstrapping/noisy_share``
    (share of samples with p(noisy) > 0.5), ``bootstrapping/loss_pass_s`` and, for ``"soft_to_hard"``,
    ``bootstrapping/temperature``.

    Under ``accelerate launch`` / ``torchrun`` (DDP), the loss pass runs on the unwrapped model over exact shards
    and is summed once, so every process fits the same mixture; the training steps go through the wrapped model as
    usual. The posteriors are not saved in checkpoints: a resumed run fits the mixture again at the start of its
    first epoch. FSDP and DeepSpeed ZeRO-3 (sharded parameters) are not supported by the loss pass.

    Differences from the reference code, on purpose: p(noisy) is looked up per sample from the epoch-start pass
    (the seed: "estimated ... after each epoch"), where the reference re-evaluates each batch's losses with the
    current weights; the loss of the dynamic variants weights each pair's targets by the mixing coefficient actually
    used (eq. 8 with eq. 9), where the reference's MD-DYR-SH weights both by 1/2.

    Args:
        model: The model to train (see above for what it must accept and return).
        args: ``TrainingArguments``; ``per_device_eval_batch_size`` is the batch size of the loss pass.
        data_collator: As for ``Trainer``; it must keep the ``"sample_index"`` key (``default_data_collator`` does).
        train_dataset: Map-style training data labelled as you have it (noisy): a ``datasets.Dataset`` with
            ``pixel_values``/``labels`` (torch format or ``with_transform``), a torch dataset of such dicts, or a
            ``TensorDataset(inputs, labels)``.
        eval_dataset: As for ``Trainer``.
        bootstrapping: The method's hyperparameters (``BootstrappingConfig()``, i.e. M-DYR-H, when None).
        scoring_dataset: The same samples in the same order without random augmentation, for the loss pass (the
            training data when None).
        **kwargs: Any other ``Trainer`` argument (``callbacks``, ``optimizers``, ``optimizer_cls_and_kwargs``, ...).

    Attributes:
        bootstrapping: The :class:`BootstrappingConfig` (never changed by training).
        noisy_posterior: p(noisy | loss) per training sample for the current epoch (CPU, float32), None in warm-up.
        mixture: The mixture fitted at the start of the current epoch, None in warm-up.
        sample_losses: The per-sample losses it was fitted to (CPU, float64), None in warm-up.
        temperature: The current soft-to-hard temperature (1.0 unless ``bootstrap="soft_to_hard"``).

    Raises:
        ConfigError: A bad ``bootstrapping``, a ``compute_loss_func`` or label smoothing (this Trainer computes its
            own loss), or a ``scoring_dataset`` of another length.
        DataError: Missing or iterable training data.

    Example:
        >>> import tempfile
        >>> from torch.utils.data import TensorDataset
        >>> from transformers import PrinterCallback
        >>> _ = torch.manual_seed(0)
        >>> data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
        >>> args = TrainingArguments(tempfile.mkdtemp(), num_train_epochs=2, per_device_train_batch_size=8,
        ...     report_to=[], use_cpu=True, disable_tqdm=True, save_strategy="no", max_grad_norm=0.0)
        >>> trainer = BootstrappingTrainer(nn.Linear(4, 2), args, train_dataset=data,
        ...     bootstrapping=BootstrappingConfig(warmup_epochs=1))
        >>> trainer.remove_callback(PrinterCallback)  # keep the doctest's output clean
        >>> _ = trainer.train()
        >>> trainer.noisy_posterior.shape, sorted(trainer.state.log_history[0])[:2]
        (torch.Size([16]), ['bootstrapping/clean_mean', 'bootstrapping/loss_pass_s'])
    """

    kept_columns = ("pixel_values", "labels", INDEX_KEY)  # the column filter keeps them (see KeepColumnsTrainer)

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        *,
        bootstrapping: BootstrappingConfig | None = None,
        scoring_dataset: Any = None,
        **kwargs: Any,
    ) -> None:
        if bootstrapping is None:
            bootstrapping = BootstrappingConfig()
        if not isinstance(bootstrapping, BootstrappingConfig):
            raise ConfigError(
                f"bootstrapping must be a BootstrappingConfig or None, got {describe_value(bootstrapping)}; "
                "build one with "
                "BootstrappingConfig(warmup_epochs=..., ...) or BootstrappingConfig.for_method('M-DYR-H')"
            )
        if kwargs.get("compute_loss_func") is not None:
            raise ConfigError(
                "BootstrappingTrainer computes its own loss (mixup bootstrapping); drop compute_loss_func or use a "
                "plain Trainer"
            )
        if args is not None and float(getattr(args, "label_smoothing_factor", 0) or 0) > 0:
            raise ConfigError(
                f"label_smoothing_factor={args.label_smoothing_factor} is not used by BootstrappingTrainer's loss; "
                "set it to 0 (bootstrapping already softens the targets of likely-noisy samples)"
            )
        if train_dataset is None:
            raise DataError("BootstrappingTrainer needs train_dataset=... (the noisily labelled training data)")
        indexed = train_dataset if isinstance(train_dataset, IndexedDataset) else IndexedDataset(train_dataset)
        if len(indexed) < 2:
            raise DataError(f"the training data has {len(indexed)} sample(s); fitting a mixture needs at least 2")
        scoring = None
        if scoring_dataset is not None:
            scoring = (
                scoring_dataset if isinstance(scoring_dataset, IndexedDataset) else IndexedDataset(scoring_dataset)
            )
            if len(scoring) != len(indexed):
                raise ConfigError(
                    f"scoring_dataset has {len(scoring)} samples but train_dataset has {len(indexed)}; it must hold "
                    "the same samples in the same order (without random augmentation)"
                )
        super().__init__(model, args, data_collator, indexed, eval_dataset, **kwargs)
        # Hyperparameters (never changed by training).
        self.bootstrapping = bootstrapping
        self.scoring_dataset = scoring
        self._indexed_train = indexed
        # The loss is a per-batch mean: let the Trainer divide it by the gradient accumulation steps.
        self.loss_is_scaled_for_ga = False
        if not self.label_names:  # a plain nn.Module: evaluation still gets its loss through compute_loss
            self.label_names = ["labels"]
        # State (set during training).
        self.noisy_posterior: torch.Tensor | None = None
        self.mixture: BetaMixture | None = None
        self.sample_losses: torch.Tensor | None = None
        self.temperature = 1.0
        self._posterior_on_device: torch.Tensor | None = None
        self._num_epochs = 0
        self.add_callback(_EpochStart(self))

    # ------------------------------------------------------------------ per-epoch mixture
    def _start_training(self, state: TrainerState) -> None:
        self.noisy_posterior = self.mixture = self.sample_losses = self._posterior_on_device = None
        self.temperature = 1.0
        self._num_epochs = int(state.num_train_epochs or 0)
        if self._num_epochs <= self.bootstrapping.warmup_epochs:
            warnings.warn(
                f"BootstrappingTrainer: training runs {self._num_epochs} epoch(s) but warmup_epochs="
                f"{self.bootstrapping.warmup_epochs}, so it never bootstraps (plain {self.bootstrapping.warmup} "
                "training); lower warmup_epochs or train longer",
                UserWarning,
                stacklevel=2,
            )

    def _start_epoch(self, epoch: int) -> None:
        """Fit the mixture to this epoch's per-sample losses (from the first epoch after the warm-up)."""
        config = self.bootstrapping
        if epoch < config.warmup_epochs:
            self.noisy_posterior = self.mixture = self.sample_losses = self._posterior_on_device = None
            return
        started = time.perf_counter()
        losses = self.score_samples()
        mixture = BetaMixture(max_iters=config.bmm_max_iters).fit(losses)
        noisy = mixture.noisy_posterior(losses).clamp(*POSTERIOR_BOUNDS).float()
        self.sample_losses, self.mixture, self.noisy_posterior = losses, mixture, noisy
        self._posterior_on_device = noisy.to(self.args.device)
        logs = {
            "clean_mean": float(mixture.means[mixture.clean_component]),
            "noisy_mean": float(mixture.means[mixture.noisy_component]),
            "noisy_share": float((noisy > 0.5).double().mean()),
            "loss_pass_s": time.perf_counter() - started,
        }
        if config.bootstrap == "soft_to_hard":
            self.temperature = self._soft_to_hard_temperature(epoch)
            logs["temperature"] = self.temperature
        self.log({LOG_PREFIX + key: value for key, value in logs.items()})

    def _soft_to_hard_temperature(self, epoch: int) -> float:
        config = self.bootstrapping
        span = self._num_epochs - config.warmup_epochs
        if span <= 1:
            return config.final_temperature
        share = min(1.0, (epoch - config.warmup_epochs) / (span - 1))
        return (1.0 - share) + share * config.final_temperature

    def score_samples(self) -> torch.Tensor:
        """Return every training sample's cross-entropy under its label (eval mode, no gradients), float64 on CPU.

        Runs over ``scoring_dataset`` (else the training data) in order with ``per_device_eval_batch_size`` through
        the Trainer's collator; with several processes each one scores its exact shard and the results are summed,
        so all processes return the same vector (:func:`~hf_verifix.selection.per_sample_losses`).

        Example:
            >>> import tempfile
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1]))
            >>> args = TrainingArguments(tempfile.mkdtemp(), report_to=[], use_cpu=True)
            >>> model = nn.Linear(2, 2)
            >>> _ = nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
            >>> [round(v, 4) for v in BootstrappingTrainer(model, args, train_dataset=data).score_samples().tolist()]
            [0.6931, 0.6931, 0.6931]
        """
        dataset = self.scoring_dataset if self.scoring_dataset is not None else self._indexed_train
        collator = self._get_collator_with_removed_columns(self.data_collator, description="loss pass")
        loader = DataLoader(
            dataset, batch_size=self.args.per_device_eval_batch_size, shuffle=False, collate_fn=collator
        )
        model = self.model
        if not isinstance(model, nn.Module):
            raise DataError(f"BootstrappingTrainer needs a model (an nn.Module), got {describe_value(model)}")
        source = as_source(loader, model, self.args.per_device_eval_batch_size)
        source.num_workers = self.args.dataloader_num_workers
        progress = self.bootstrapping.progress and not self.args.disable_tqdm
        losses, _, num_classes = per_sample_losses(model, source, progress)
        self._check_prior(num_classes)
        return losses

    def _check_prior(self, num_classes: int) -> None:
        """Refuse a ``prior`` whose length is not the model's class count (checked at the first step, not later)."""
        prior = self.bootstrapping.prior
        if prior is not None and len(prior) != num_classes:
            raise ConfigError(
                f"BootstrappingConfig(prior=...) has {len(prior)} entries but the model predicts {num_classes} "
                f"classes (the width of its logits); the prior needs one probability per class: pass "
                f"{num_classes} values, or prior=None for a uniform prior"
            )

    # ------------------------------------------------------------------ the loss
    def sample_mixup(
        self, batch_size: int, clean: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the pairs and mixing coefficients of one batch: ``(permutation, δ)``, both of length ``batch_size``.

        Sample i is mixed with sample ``permutation[i]`` as δ_i·x_i + (1 − δ_i)·x_permutation[i]. ``clean`` holds the
        batch's p(clean | loss) (None in the warm-up, where mixing is static). Override to change the pairing.

        Example:
            >>> import tempfile
            >>> from torch.utils.data import TensorDataset
            >>> args = TrainingArguments(tempfile.mkdtemp(), report_to=[], use_cpu=True)
            >>> config = BootstrappingConfig(mixup="dynamic")
            >>> trainer = BootstrappingTrainer(nn.Linear(2, 2), args, train_dataset=TensorDataset(
            ...     torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)), bootstrapping=config)
            >>> perm, delta = trainer.sample_mixup(2, torch.tensor([0.9, 0.3]), torch.device("cpu"))
            >>> sorted(perm.tolist()), [round(d, 2) for d in (delta + delta[perm]).tolist()]
            ([0, 1], [1.0, 1.0])
        """
        config = self.bootstrapping
        permutation = torch.randperm(batch_size, device=device)
        if clean is None or config.mixup == "static":
            return permutation, static_mixup_weights(batch_size, config.alpha).to(device)
        clean_q = clean[permutation]
        if config.mixup == "dynamic":
            weights = dynamic_mixup_weights(clean, clean_q)
        elif config.mixup == "beta":
            weights = beta_guided_weights(clean, clean_q)
        else:
            weights = binomial_guided_weights(clean, clean_q, config.binomial_n)
        return permutation, weights.to(device)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Return the batch's loss: eq. 8 + η·R after the warm-up, plain mixup (or CE) before, CE in eval mode.

        Example:
            >>> import tempfile
            >>> from torch.utils.data import TensorDataset
            >>> args = TrainingArguments(tempfile.mkdtemp(), report_to=[], use_cpu=True)
            >>> model = nn.Linear(2, 2)
            >>> _ = nn.init.zeros_(model.weight), nn.init.zeros_(model.bias)
            >>> trainer = BootstrappingTrainer(model.eval(), args, train_dataset=TensorDataset(
            ...     torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)))
            >>> batch = {"pixel_values": torch.zeros(2, 2), "labels": torch.tensor([0, 1])}
            >>> round(float(trainer.compute_loss(model, batch).detach()), 4)  # eval mode: cross-entropy
            0.6931
        """
        pixel_values, labels = self._inputs_and_labels(inputs)
        if not model.training:
            logits = logits_of(model(pixel_values)).float()
            loss = F.cross_entropy(logits, labels)
            return (loss, {"logits": logits}) if return_outputs else loss
        config = self.bootstrapping
        noisy = None
        if self._posterior_on_device is not None:
            if INDEX_KEY not in inputs:
                raise DataError(
                    f"the training batch has no {INDEX_KEY!r} key (got {sorted(inputs)}); BootstrappingTrainer adds "
                    "it to every item, so a custom data_collator must keep it"
                )
            indices = torch.as_tensor(inputs[INDEX_KEY], device=self._posterior_on_device.device).long()
            noisy = self._posterior_on_device[indices].to(pixel_values.device)
        if noisy is None and config.warmup == "ce":
            logits = logits_of(model(pixel_values)).float()
            self._check_prior(logits.shape[-1])
            loss = F.cross_entropy(logits, labels)
            return (loss, {"logits": logits}) if return_outputs else loss
        if noisy is not None:
            with torch.no_grad():
                plain_logits = logits_of(model(pixel_values)).float()
            mode: Literal["hard", "soft"] = "hard" if config.bootstrap == "hard" else "soft"
            targets = bootstrapped_targets(labels, plain_logits, noisy, mode, self.temperature)
        else:
            targets = None
        permutation, weights = self.sample_mixup(
            labels.shape[0], None if noisy is None else 1.0 - noisy, pixel_values.device
        )
        shape = (-1,) + (1,) * (pixel_values.dim() - 1)
        delta = weights.to(pixel_values.dtype).reshape(shape)
        mixed = delta * pixel_values + (1.0 - delta) * pixel_values[permutation]
        logits = logits_of(model(mixed)).float()
        self._check_prior(logits.shape[-1])  # from the first step: a wrong prior would fail only after the warm-up
        log_probs = torch.log_softmax(logits, dim=-1)
        if targets is None:  # warm-up: plain mixup on the labels
            targets = F.one_hot(labels, logits.shape[-1]).to(log_probs.dtype)
        loss = mixup_bootstrapping_loss(log_probs, targets, targets[permutation], weights)
        if noisy is not None and config.reg_weight > 0:
            loss = loss + config.reg_weight * class_prior_regularizer(log_probs.exp(), config.prior)
        return (loss, {"logits": logits}) if return_outputs else loss

    @staticmethod
    def _inputs_and_labels(inputs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_values = inputs.get("pixel_values")
        labels = inputs.get("labels", inputs.get("label"))
        if not isinstance(pixel_values, torch.Tensor) or not isinstance(labels, torch.Tensor):
            raise DataError(
                f"BootstrappingTrainer needs batches with 'pixel_values' and 'labels' tensors, got keys "
                f"{sorted(inputs)}; name the input column pixel_values (or pass (input, label) pairs)"
            )
        if labels.is_floating_point() or labels.dim() != 1:
            raise DataError(
                f"labels must be one integer class id per sample, got a {labels.dtype} tensor of shape "
                f"{tuple(labels.shape)}; pass class ids, not one-hot or soft labels"
            )
        return pixel_values, labels.long()
