"""The ``transformers.Trainer`` of M-DYR-H and its variants: per-epoch beta mixture, bootstrapped mixup loss.

Example:
    >>> LOG_PREFIX + "noisy_share"
    'bootstrapping/noisy_share'
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from transformers import TrainerState, TrainingArguments

from ...algorithms.mixture import BetaMixture
from ...data.source import as_source
from ...errors import ConfigError, DataError, describe_value
from ...models.forward import logits_of
from ...selection.loss import per_sample_losses
from .._common import KeepColumnsTrainer, config_or_default
from . import losses
from .config import BootstrappingConfig
from .data import INDEX_KEY, IndexedDataset

__all__ = ["LOG_PREFIX", "BootstrappingTrainer"]

LOG_PREFIX = "bootstrapping/"
"""Prefix of the metrics :class:`BootstrappingTrainer` logs at each mixture fit.

Example:
    >>> LOG_PREFIX + "noisy_share"
    'bootstrapping/noisy_share'
"""

POSTERIOR_BOUNDS = (1e-4, 1.0 - 1e-4)  # the reference code clamps the posteriors so that no weight is exactly 0 or 1


class BootstrappingTrainer(KeepColumnsTrainer):
    """A ``transformers.Trainer`` that trains with M-DYR-H or a BMM-guided mixup variant (Arazo et al., 2019).

    Takes every ``Trainer`` argument plus ``bootstrapping`` (a :class:`BootstrappingConfig`) and
    ``scoring_dataset``. The training data is wrapped in :class:`IndexedDataset` (``trainer.train_dataset``; the
    original stays in ``trainer.train_dataset.dataset``). Batches must provide ``pixel_values`` (the model is called
    as ``model(pixel_values)``, so transformers image classifiers, ``TimmWrapperForImageClassification`` and plain
    ``nn.Module``s all work; logits are read with :func:`~hf_verifix.models.forward.logits_of`) and integer
    ``labels``. Evaluation (``trainer.evaluate``) reports the plain cross-entropy.

    Per epoch after the warm-up it sets :attr:`sample_losses` (each sample's cross-entropy, eval mode),
    :attr:`mixture` (the fitted :class:`~hf_verifix.algorithms.mixture.BetaMixture`) and :attr:`noisy_posterior`
    (each sample's p(noisy | loss), clamped to [1e-4, 1 − 1e-4] as in the reference code), and logs
    ``bootstrapping/clean_mean``, ``bootstrapping/noisy_mean`` (the components' means on the normalised loss scale),
    ``bootstrapping/noisy_share`` (share of samples with p(noisy) > 0.5), ``bootstrapping/loss_pass_s`` and, for
    ``"soft_to_hard"``, ``bootstrapping/temperature``.

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
        bootstrapping = config_or_default(
            bootstrapping,
            BootstrappingConfig,
            "bootstrapping",
            "a BootstrappingConfig",
            "build one with BootstrappingConfig(warmup_epochs=..., ...) or BootstrappingConfig.for_method('M-DYR-H')",
        )
        _check_no_other_loss(args, kwargs)
        indexed, scoring = _indexed_datasets(train_dataset, scoring_dataset)
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

    # ------------------------------------------------------------------ per-epoch mixture (EpochCallback's hooks)
    def _start_training(self, state: TrainerState) -> None:
        """Forget the last run's mixture; warn when the run is too short to ever bootstrap."""
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
        scores = self.score_samples()
        mixture = BetaMixture(max_iters=config.bmm_max_iters).fit(scores)
        noisy = mixture.noisy_posterior(scores).clamp(*POSTERIOR_BOUNDS).float()
        self.sample_losses, self.mixture, self.noisy_posterior = scores, mixture, noisy
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
        scores, _, num_classes = per_sample_losses(model, source, progress)
        self._check_prior(num_classes)
        return scores

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
            return permutation, losses.static_mixup_weights(batch_size, config.alpha).to(device)
        clean_q = clean[permutation]
        if config.mixup == "dynamic":
            weights = losses.dynamic_mixup_weights(clean, clean_q)
        elif config.mixup == "beta":
            weights = losses.beta_guided_weights(clean, clean_q)
        else:
            weights = losses.binomial_guided_weights(clean, clean_q, config.binomial_n)
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
            targets = losses.bootstrapped_targets(labels, plain_logits, noisy, mode, self.temperature)
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
        loss = losses.mixup_bootstrapping_loss(log_probs, targets, targets[permutation], weights)
        if noisy is not None and config.reg_weight > 0:
            loss = loss + config.reg_weight * losses.class_prior_regularizer(log_probs.exp(), config.prior)
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


def _check_no_other_loss(args: TrainingArguments | None, kwargs: Mapping[str, Any]) -> None:
    """Refuse what would replace or change BootstrappingTrainer's loss: ``compute_loss_func``, label smoothing."""
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


def _indexed_datasets(train_dataset: Any, scoring_dataset: Any) -> tuple[IndexedDataset, IndexedDataset | None]:
    """The training data and the optional scoring data as :class:`IndexedDataset`, checked for size and length."""
    if train_dataset is None:
        raise DataError("BootstrappingTrainer needs train_dataset=... (the noisily labelled training data)")
    indexed = train_dataset if isinstance(train_dataset, IndexedDataset) else IndexedDataset(train_dataset)
    if len(indexed) < 2:
        raise DataError(f"the training data has {len(indexed)} sample(s); fitting a mixture needs at least 2")
    if scoring_dataset is None:
        return indexed, None
    scoring = scoring_dataset if isinstance(scoring_dataset, IndexedDataset) else IndexedDataset(scoring_dataset)
    if len(scoring) != len(indexed):
        raise ConfigError(
            f"scoring_dataset has {len(scoring)} samples but train_dataset has {len(indexed)}; it must hold "
            "the same samples in the same order (without random augmentation)"
        )
    return indexed, scoring
