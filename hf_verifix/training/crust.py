"""CRUST for the 🤗 ``Trainer``: every epoch, train on per-class gradient coresets mixed up with their clusters.

Mirzasoleiman, Cao & Leskovec (2020), "Coresets for Robust Training of Neural Networks against Noisy Labels",
sec. 4 and Algorithm 1. At the start of every epoch τ, :class:`CrustTrainer`

1. computes the gradient proxies of every training sample under its (noisy) label, in eval mode and without
   gradients (:func:`~hf_verifix.selection.coreset.gradient_proxies`: softmax(z) - onehot(y), eq. 9, or its
   outer product with the final nn.Linear's input, that layer's exact gradient);
2. splits the samples into classes U_c (by their labels, or by the model's predictions as Algorithm 1 line 4
   writes it) and picks k·n_c medoids S_c in each by facility location (eq. 10, exact lazy greedy); k = round
   (``fraction`` × n) and n_c = |U_c| / n, the class shares rounded by largest remainder so they sum to k;
3. assigns every sample to its most similar medoid: the clusters V_j (line 8), whose sizes are the weights r_j of
   eq. 8;
4. draws R_j, ``members_per_medoid`` members of V_j \\ {j} uniformly without replacement (line 9), and mixes each
   with its medoid, x̂ = λ x_i + (1 - λ) x_j and ŷ = λ y_i + (1 - λ) y_j with λ ~ Beta(α, α) (eq. 11), each mixed
   sample weighted r = |V_j| / max(1, m), m = ``members_per_medoid`` (line 11 writes |V_j| / |R_j|; with a fixed m
   every medoid has the same number of items, so the epoch's length never changes). A cluster with fewer than m
   other members fills its m slots with the medoid itself, unmixed (member = medoid, λ = 0), so its items' weights
   still sum to |V_j|; m = 0 trains on the medoids alone, weighted |V_j|;
5. trains the epoch on those mixed samples only: the Trainer's sampler visits each once in a seeded random order,
   and the loss of a batch is the r-weighted mean of the mixed cross-entropies λ CE(z, y_i) + (1 - λ) CE(z, y_j)
   (line 15, eq. 8).

Example:
    >>> from hf_verifix.training.crust import CrustConfig
    >>> CrustConfig(fraction=0.3, members_per_medoid=2).mixup_alpha
    1.0
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..config import _is_number, _valid_int
from ..data.source import as_source
from ..distributed import broadcast_from_main, is_main_process
from ..errors import ConfigError, DataError, VerifixError, describe_value
from ..models.forward import logits_of
from ..selection.coreset import _budgets, _class_medoids, _class_points, gradient_proxies
from ._common import LABELS_KEY, KeepColumnsTrainer, as_row, current_epoch, is_map_style

__all__ = ["CrustConfig", "CrustEpoch", "CrustTrainer"]

_LOG_PREFIX = "crust/"
# Keys of the training items and batches (never passed to the model).
_MEDOID_ROW, _MEMBER_ROW = "crust_medoid_row", "crust_member_row"
_MEMBER_INPUTS = "crust_member_inputs"
_MEDOID, _MEMBER, _LAMBDA, _WEIGHT = "crust_medoid", "crust_member", "crust_lambda", "crust_weight"
_LABELS = LABELS_KEY
# What each integer option means, for its error message.
_INT_OPTIONS = {
    "members_per_medoid": (0, 1, "it is how many members of its cluster each medoid is mixed with, 0 for none"),
    "block_size": (1, 1024, "it is how many rows of distances facility location computes at once"),
    "max_dense": (0, 2**26, "it is the largest n_c² whose similarity matrix is materialised (n_c² × 4 bytes)"),
}


@dataclass
class CrustConfig:
    """Hyperparameters of CRUST training (validated on creation).

    Args:
        fraction: Coreset size k as a fraction of the training set, 0 < fraction ≤ 1 (the paper's default: 0.5).
            k = round(fraction × n) medoids per epoch, split over classes in proportion to their sizes.
        mixup_alpha: α of λ ~ Beta(α, α) in eq. 11 (> 0; the seed text gives no value, 1.0 draws λ uniformly).
        members_per_medoid: |R_j|, how many members of its cluster each medoid is mixed with (the paper uses 1).
            0 trains on the medoids themselves, weighted by their cluster sizes (the "w/o mixup" ablation).
        gradient: The gradient proxies: ``"logits"`` (softmax - onehot, eq. 9) or ``"last_layer"`` (its outer
            product with the final nn.Linear's input: that layer's exact gradient; costs more distances).
        classes: Group the samples by their noisy ``"labels"`` (default; the authors' code) or by the model's
            ``"predictions"`` at the epoch's start (Algorithm 1 line 4).
        seed: Seed of the members R_j, the λ draws and the epoch's order (with the epoch number); ``None`` uses the
            Trainer's ``args.data_seed`` or ``args.seed``.
        block_size: Rows per block of distance computations in facility location.
        max_dense: A class with n_c² ≤ max_dense gets its similarity matrix materialised (n_c² × 4 bytes).
        progress: Show a tqdm bar (main process only) on the per-epoch proxy pass, unless the Trainer's
            ``disable_tqdm`` is set.

    Raises:
        ConfigError: A value of the wrong type or out of range (the message names it and the fix).

    Example:
        >>> CrustConfig(fraction=0.5, mixup_alpha=0.2).members_per_medoid
        1
        >>> CrustConfig(fraction=0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigError: fraction must be a number in (0, 1] ...
    """

    fraction: float = field(default=0.5, metadata={"help": "Coreset size as a fraction of the training set."})
    mixup_alpha: float = field(default=1.0, metadata={"help": "α of λ ~ Beta(α, α) (eq. 11)."})
    members_per_medoid: int = field(default=1, metadata={"help": "|R_j|; 0 trains on the medoids alone."})
    gradient: Literal["logits", "last_layer"] = field(default="logits", metadata={"help": "Gradient proxies."})
    classes: Literal["labels", "predictions"] = field(default="labels", metadata={"help": "Grouping of U_c."})
    seed: int | None = field(default=None, metadata={"help": "Seed; None: the Trainer's data_seed or seed."})
    block_size: int = field(default=1024, metadata={"help": "Rows per block of distances."})
    max_dense: int = field(default=2**26, metadata={"help": "Largest n_c² with a dense similarity matrix."})
    progress: bool = field(default=True, metadata={"help": "Progress bar on the proxy pass."})

    def __post_init__(self) -> None:
        if not _is_number(self.fraction) or not 0 < self.fraction <= 1:
            raise ConfigError(
                f"fraction must be a number in (0, 1] (the share of the training set kept as coreset; the paper "
                f"uses 0.5), got {describe_value(self.fraction)}"
            )
        if not _is_number(self.mixup_alpha) or not 0 < self.mixup_alpha < math.inf:
            raise ConfigError(
                f"mixup_alpha must be a finite number > 0 (λ ~ Beta(α, α)), got {describe_value(self.mixup_alpha)}; "
                "for no mixup set members_per_medoid=0"
            )
        for name, (low, example, meaning) in _INT_OPTIONS.items():
            setattr(self, name, _valid_int(getattr(self, name), name, low=low, example=example, hint=meaning))
        if self.gradient not in ("logits", "last_layer"):
            raise ConfigError(f"gradient must be 'logits' or 'last_layer', got {describe_value(self.gradient)}")
        if self.classes not in ("labels", "predictions"):
            raise ConfigError(
                f"classes must be 'labels' (group by the noisy labels) or 'predictions' (by the model's "
                f"predictions, Algorithm 1 line 4), got {describe_value(self.classes)}"
            )
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"seed must be a non-negative integer or None, got {describe_value(self.seed)}")
        if not isinstance(self.progress, bool):
            raise ConfigError(f"progress must be True or False, got {describe_value(self.progress)}")


@dataclass(frozen=True)
class CrustEpoch:
    """What CRUST trained on in one epoch: the coreset, its clusters and the weighted mixed samples.

    Indices are positions in the training dataset. The epoch trains on ``len(item_medoids)`` items, item t being
    x̂ = λ_t x_{member_t} + (1 - λ_t) x_{medoid_t} with weight r_t; an item whose medoid had no member left to mix
    with (a cluster smaller than ``members_per_medoid + 1``, or ``members_per_medoid=0``) is the medoid itself
    (member = medoid, λ = 0).

    Attributes:
        epoch: The 0-based epoch.
        coreset: The k medoids, class by class (ascending), each class's in greedy order.
        cluster_sizes: |V_j| of each medoid: how many samples of its class are closest to it (r_j of eq. 8).
        item_medoids: The medoid j of every item (each medoid ``max(1, members_per_medoid)`` times, in a row).
        item_members: The member i of every item.
        item_lambdas: λ of every item (float64).
        item_weights: r = |V_j| / max(1, members_per_medoid) of every item (float64); per medoid they sum to |V_j|.
        selection_s: Wall time of the selection (proxy pass, facility location, draws), in seconds.
        proxies_s: The proxy pass's share of it.

    Example:
        >>> record = CrustEpoch(0, torch.tensor([3]), torch.tensor([2]), torch.tensor([3, 3]), torch.tensor([5, 3]),
        ...                     torch.tensor([0.25, 0.0]), torch.tensor([1.0, 1.0]), 0.1, 0.05)
        >>> record.coreset.tolist(), float(record.item_weights.sum())
        ([3], 2.0)
    """

    epoch: int
    coreset: torch.Tensor
    cluster_sizes: torch.Tensor
    item_medoids: torch.Tensor
    item_members: torch.Tensor
    item_lambdas: torch.Tensor
    item_weights: torch.Tensor
    selection_s: float
    proxies_s: float


class _Rows(Dataset):
    """The user's training dataset with every sample as a dict (what the collators and the proxy pass read)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return as_row(self.dataset[int(index)], int(index))


class _Items(Dataset):
    """The epoch's training items: item t holds the rows of its medoid and member, λ_t and r_t."""

    def __init__(self, rows: _Rows, size: int) -> None:
        self.rows = rows
        self.size = size
        self.plan: CrustEpoch | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, position: int) -> dict[str, Any]:
        plan = self.plan
        if plan is None:
            raise DataError(
                "CRUST's training items exist once an epoch's coreset is selected; iterate the training dataloader "
                "inside trainer.train() (or call trainer.select_coreset(epoch) first)"
            )
        medoid, member = int(plan.item_medoids[position]), int(plan.item_members[position])
        row = self.rows[medoid]
        return {
            _MEDOID_ROW: row,
            _MEMBER_ROW: row if member == medoid else self.rows[member],
            _MEDOID: medoid,
            _MEMBER: member,
            _LAMBDA: float(plan.item_lambdas[position]),
            _WEIGHT: float(plan.item_weights[position]),
        }


class _RowsCollator:
    """Collates samples as rows (:func:`as_row`): an evaluation set of ``(input, label)`` pairs reads as training's."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list[Any]) -> Any:
        return self.collate([as_row(sample) for sample in samples])


class _PairCollator:
    """Collates medoid rows and member rows separately with the Trainer's collator, plus the CRUST fields."""

    def __init__(self, rows: Callable[[list[Any]], Any]) -> None:
        self.rows = rows

    def _collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.rows(rows)
        if not isinstance(batch, Mapping):
            raise DataError(
                f"CrustTrainer needs the data collator to return a dict of batched columns (pixel_values, labels, "
                f"...), got {type(batch).__name__}; pass data_collator=transformers.default_data_collator (or "
                "none), or make yours return a dict"
            )
        return dict(batch)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collate([item[_MEDOID_ROW] for item in items])
        batch[_MEMBER_INPUTS] = self._collate([item[_MEMBER_ROW] for item in items])
        batch[_MEDOID] = torch.tensor([item[_MEDOID] for item in items], dtype=torch.long)
        batch[_MEMBER] = torch.tensor([item[_MEMBER] for item in items], dtype=torch.long)
        batch[_LAMBDA] = torch.tensor([item[_LAMBDA] for item in items], dtype=torch.float32)
        batch[_WEIGHT] = torch.tensor([item[_WEIGHT] for item in items], dtype=torch.float32)
        return batch


class _EpochSampler(Sampler[int]):
    """Every item of the epoch once, in an order seeded by (seed, epoch): the same on every process."""

    def __init__(self, items: _Items, seed: int) -> None:
        self.items = items
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[int]:
        epoch = self.items.plan.epoch if self.items.plan is not None else 0
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return iter(torch.randperm(len(self.items), generator=generator).tolist())


class _SelectEachEpoch(TrainerCallback):
    """Selects the epoch's coreset when the Trainer begins an epoch (before it iterates the dataloader)."""

    def __init__(self, trainer: CrustTrainer) -> None:
        self.trainer = trainer

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        self.trainer._begin_epoch(current_epoch(state))
        return control


def _label_key(batch: Mapping[str, Any]) -> str:
    key = next((k for k in (_LABELS, "label") if k in batch), None)
    if key is None:
        raise DataError(
            f"a CRUST training batch needs a 'labels' (or 'label') entry of class ids, got keys {sorted(batch)}; "
            "rename the dataset's label column to 'labels' (datasets: dataset.rename_column('...', 'labels'))"
        )
    return key


def _mix(medoids: dict[str, Any], members: Mapping[str, Any], lam: torch.Tensor) -> dict[str, Any]:
    """Eq. 11 on the inputs: λ x_member + (1 - λ) x_medoid for every floating-point tensor; others: the medoid's."""
    mixed = dict(medoids)
    for key, value in medoids.items():
        other = members.get(key)
        if isinstance(value, torch.Tensor) and value.is_floating_point() and isinstance(other, torch.Tensor):
            scale = lam.to(value.dtype).reshape(-1, *([1] * (value.dim() - 1)))
            mixed[key] = scale * other + (1 - scale) * value
    return mixed


def _draw_items(
    groups: torch.Tensor,
    budgets: list[int],
    errors: torch.Tensor,
    features: torch.Tensor | None,
    config: CrustConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1 lines 3-12 for every class: ``(item_medoids, item_members, item_lambdas, item_weights)``."""
    slots = max(1, config.members_per_medoid)
    medoids: list[int] = []
    members: list[int] = []
    weights: list[float] = []
    for c, budget in enumerate(budgets):
        in_class = torch.nonzero(groups == c).flatten()
        if budget == 0:
            continue
        chosen, owner, _, _ = _class_medoids(
            _class_points(errors, features, in_class), budget, config.block_size, config.max_dense
        )
        order = torch.argsort(owner, stable=True)
        clusters = torch.split(in_class[order], torch.bincount(owner, minlength=budget).tolist())
        for j, cluster in zip(in_class[chosen].tolist(), clusters, strict=True):
            others = cluster[cluster != j].numpy()
            picked = rng.choice(others, size=min(config.members_per_medoid, others.size), replace=False)
            members += picked.tolist() + [j] * (slots - picked.size)
            medoids += [j] * slots
            weights += [cluster.numel() / slots] * slots
    medoid_t, member_t = torch.tensor(medoids, dtype=torch.long), torch.tensor(members, dtype=torch.long)
    lambdas = torch.from_numpy(rng.beta(config.mixup_alpha, config.mixup_alpha, size=len(medoids)))
    lambdas[member_t == medoid_t] = 0.0
    return medoid_t, member_t, lambdas, torch.tensor(weights, dtype=torch.float64)


class CrustTrainer(KeepColumnsTrainer):
    """A ``transformers.Trainer`` that trains every epoch on CRUST coresets (Mirzasoleiman et al., 2020).

    A Trainer subclass rather than a callback, because CRUST changes what an epoch iterates (the coreset's mixed
    samples, through its own dataset view and sampler) and the loss (r-weighted mixup cross-entropy); the per-epoch
    selection itself runs from a callback this trainer adds to itself (``on_epoch_begin``). Everything else — the
    optimizer and scheduler, gradient accumulation, mixed precision, logging, checkpoints, evaluation — is the
    Trainer's. Pass the same arguments as to ``Trainer`` plus ``crust=CrustConfig(...)``.

    Every epoch has the same number of optimizer steps, as the Trainer requires: the epoch iterates
    k × max(1, ``members_per_medoid``) items with k = round(``fraction`` × n), whatever the classes' split. The
    first epoch's coreset is chosen by the model as it is at ``train()`` (at random initialisation, a nearly random
    cover). The authors' code first trains 5 epochs on all the data; to do that, train those epochs with a plain
    ``Trainer`` and hand the model to ``CrustTrainer``.

    Data: ``train_dataset`` is any map-style dataset the Trainer takes — a ``datasets.Dataset`` (e.g. with
    ``pixel_values``/``labels`` columns, ``with_format("torch")`` or ``with_transform``), a torch dataset of dicts,
    or of ``(input, label)`` pairs such as ``TensorDataset`` (read as ``pixel_values``/``labels``). Samples are
    collated by the Trainer's ``data_collator`` (``default_data_collator`` when none), whose output must be a
    dict with ``labels``; unused columns are dropped as the Trainer does. CRUST's own fields (the medoid and member
    indices, λ, r) travel next to the collated batch and are never passed to the model, so
    ``remove_unused_columns`` cannot drop them. The proxy pass reads the same dataset, in order, through the same
    collator, in batches of ``per_device_eval_batch_size`` (with a random ``with_transform`` augmentation it sees
    one draw of it, as the authors' code does).

    Every floating-point tensor of the batch (``pixel_values``) is mixed; labels are mixed through the loss,
    λ CE(z, y_i) + (1 - λ) CE(z, y_j), which equals the cross-entropy with the mixed one-hot label ŷ of eq. 11. The
    model is called with the batch's keywords (``pixel_values=...``) when its ``forward`` takes them, else — a plain
    ``nn.Module`` returning logits — with the one input tensor. The batch's loss is the r-weighted mean
    Σ r ℓ / Σ r (the authors' code normalises the weights per batch likewise, which keeps the step size of plain
    training); evaluation batches use the Trainer's own loss.

    Distributed (``accelerate launch``, ``torchrun``; DDP): every process computes the proxies of its exact shard of
    the data and they are summed once; the main process runs facility location and the draws and broadcasts the
    epoch's items, so every process holds the same coreset; the Trainer then splits the epoch's batches across
    processes. FSDP/DeepSpeed ZeRO-3, whose sharded parameters a plain forward cannot use, are not supported.
    ``dataloader_persistent_workers`` is refused (workers would keep an old epoch's items). Resuming from a
    checkpoint reselects the coreset of the epoch it resumes in with the restored weights.

    Logs at each epoch's start, through ``Trainer.log``: ``crust/coreset_size`` (k), ``crust/items``,
    ``crust/selection_s`` and ``crust/proxies_s``. :attr:`crust_history` keeps a :class:`CrustEpoch` per epoch.

    Args:
        *args: ``Trainer``'s positional arguments (``model``, ``args``, ...).
        crust: CRUST's hyperparameters (``CrustConfig()`` when None).
        **kwargs: ``Trainer``'s keyword arguments (``train_dataset``, ``data_collator``, ``optimizers``, ...).

    Attributes:
        crust: The :class:`CrustConfig` (never changed by a run).
        crust_history: One :class:`CrustEpoch` per epoch trained, in order (``coreset``, ``cluster_sizes``, the
            items and ``selection_s``), on every process.

    Raises:
        ConfigError: ``crust`` not a CrustConfig, or persistent dataloader workers.
        DataError: An iterable training dataset (CRUST revisits samples by index).

    Example:
        >>> import contextlib, io, tempfile
        >>> from torch.utils.data import TensorDataset
        >>> from transformers import TrainingArguments
        >>> data = TensorDataset(torch.randn(40, 4), torch.arange(40) % 2)
        >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=2, per_device_train_batch_size=5,
        ...                          use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no",
        ...                          max_grad_norm=0.0)  # the paper does not clip; the Trainer's default is 1.0
        >>> trainer = CrustTrainer(nn.Linear(4, 2), args, train_dataset=data, crust=CrustConfig(fraction=0.5))
        >>> with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its logs when tqdm is off
        ...     _ = trainer.train()
        >>> [len(epoch.coreset) for epoch in trainer.crust_history]
        [20, 20]
        >>> float(trainer.crust_history[0].cluster_sizes.sum())  # every sample belongs to one cluster
        40.0
    """

    # compute_loss returns a per-batch mean, which the Trainer divides by the gradient accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, crust: CrustConfig | None = None, **kwargs: Any) -> None:
        # Trainer(model, args, data_collator, train_dataset, ...): refuse a stream before the Trainer's own message.
        train_dataset = kwargs.get("train_dataset", args[3] if len(args) > 3 else None)
        if train_dataset is not None:
            _check_indexable(train_dataset)
        super().__init__(*args, **kwargs)
        if crust is None:
            crust = CrustConfig()
        if not isinstance(crust, CrustConfig):
            raise ConfigError(
                f"crust must be a hf_verifix CrustConfig or None, got {describe_value(crust)}; "
                "pass crust=CrustConfig(fraction=0.5, ...)"
            )
        if self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0:
            raise ConfigError(
                "CrustTrainer trains every epoch on new items, which persistent dataloader workers would not see; "
                "set TrainingArguments(dataloader_persistent_workers=False)"
            )
        self.crust = crust
        self.crust_history: list[CrustEpoch] = []
        self.model_accepts_loss_kwargs = False  # the loss is computed here, never by the model
        if not self.label_names:  # a plain nn.Module: evaluation still gets its loss, through compute_loss
            self.label_names = [_LABELS]
        self._items: _Items | None = None
        self.add_callback(_SelectEachEpoch(self))

    # ------------------------------------------------------------------ data
    def _row_collator(self) -> Callable[[list[Any]], Any]:
        """The Trainer's collator over single samples, dropping unused columns like the Trainer does."""
        return super()._get_collator_with_removed_columns(self.data_collator, description="training")

    def _get_collator_with_removed_columns(self, data_collator: Callable, description: str | None = None) -> Callable:
        if isinstance(data_collator, _PairCollator):  # its rows already go through the column filter
            return data_collator
        # Evaluation: (input, label) samples become rows, as the training samples do, before the column filter.
        return _RowsCollator(super()._get_collator_with_removed_columns(data_collator, description))

    def _crust_items(self) -> _Items:
        if self.train_dataset is None:
            raise DataError("CrustTrainer needs a train_dataset: pass Trainer(..., train_dataset=...)")
        _check_indexable(self.train_dataset)
        if self._items is None or self._items.rows.dataset is not self.train_dataset:
            rows = _Rows(self.train_dataset)
            self._items = _Items(rows, self._coreset_size(len(rows)) * max(1, self.crust.members_per_medoid))
        return self._items

    def _coreset_size(self, n: int) -> int:
        k = min(n, round(self.crust.fraction * n))
        if k < 1:
            raise DataError(
                f"fraction={self.crust.fraction} of {n} training samples rounds to a coreset of {k} medoids; raise "
                "CrustConfig(fraction=...) or add data"
            )
        return k

    def _seed(self) -> int:
        if self.crust.seed is not None:
            return self.crust.seed
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's training dataloader over the epoch's CRUST items (same length every epoch).

        Example:
            >>> import tempfile
            >>> from torch.utils.data import TensorDataset
            >>> from transformers import TrainingArguments
            >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to=[],
            ...                          per_device_train_batch_size=4)
            >>> data = TensorDataset(torch.randn(30, 3), torch.arange(30) % 3)
            >>> trainer = CrustTrainer(nn.Linear(3, 3), args, train_dataset=data, crust=CrustConfig(fraction=0.4))
            >>> len(trainer.get_train_dataloader())  # 12 items in batches of 4
            3
        """
        items = self._crust_items()
        saved = self.train_dataset, self.data_collator
        # The Trainer builds the loader (workers, seeding, accelerate sharding) from these two attributes.
        self.train_dataset, self.data_collator = items, _PairCollator(self._row_collator())
        try:
            return super().get_train_dataloader()
        finally:
            self.train_dataset, self.data_collator = saved

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler[int] | None:
        items = train_dataset if train_dataset is not None else self.train_dataset
        if isinstance(items, _Items):
            return _EpochSampler(items, self._seed())
        return super()._get_train_sampler(train_dataset) if train_dataset is not None else super()._get_train_sampler()

    # ------------------------------------------------------------------ selection
    def _begin_epoch(self, epoch: int) -> None:
        record = self.select_coreset(epoch)
        self.crust_history.append(record)
        self.log(
            {
                _LOG_PREFIX + "coreset_size": float(record.coreset.numel()),
                _LOG_PREFIX + "items": float(record.item_medoids.numel()),
                _LOG_PREFIX + "selection_s": record.selection_s,
                _LOG_PREFIX + "proxies_s": record.proxies_s,
            }
        )

    def select_coreset(self, epoch: int = 0) -> CrustEpoch:
        """Select the coreset of ``epoch`` with the current model and make it what the training dataloader yields.

        Called by the Trainer at the start of every epoch; call it yourself to inspect a selection. Under several
        processes every process must call it (the proxy pass and the broadcast are collective).

        Args:
            epoch: The 0-based epoch; seeds the members R_j, the λ draws and the epoch's order.

        Returns:
            The epoch's :class:`CrustEpoch` (not appended to :attr:`crust_history`; training does that).

        Raises:
            DataError: No training data, too small a coreset, labels outside [0, num_classes), or batches the
                proxy pass cannot read.
            LayerError: ``gradient="last_layer"`` on a model whose logits do not come out of a final nn.Linear.

        Example:
            >>> import tempfile
            >>> from torch.utils.data import TensorDataset
            >>> from transformers import TrainingArguments
            >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to=[])
            >>> data = TensorDataset(torch.randn(30, 3), torch.arange(30) % 3)
            >>> trainer = CrustTrainer(nn.Linear(3, 3), args, train_dataset=data, crust=CrustConfig(fraction=0.2))
            >>> record = trainer.select_coreset(epoch=0)
            >>> record.coreset.numel(), record.cluster_sizes.sum().item()
            (6, 30)
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"epoch must be a non-negative integer, got {describe_value(epoch)}")
        started = time.perf_counter()
        items = self._crust_items()
        config = self.crust
        size = len(items)
        model = self.model
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"CrustTrainer needs a torch model (an nn.Module: a transformers model, a timm model or your own "
                f"module returning logits), got {describe_value(model)}; pass one as CrustTrainer(model, args, ...)"
            )
        loader = DataLoader(
            items.rows,
            batch_size=self.args.per_device_eval_batch_size,
            shuffle=False,
            collate_fn=self._row_collator(),
            num_workers=self.args.dataloader_num_workers,
        )
        progress = config.progress and not self.args.disable_tqdm
        errors, features, labels, num_classes = gradient_proxies(
            model, as_source(loader, model), config.gradient, progress
        )
        proxies_s = time.perf_counter() - started
        plan = (
            torch.zeros(size, dtype=torch.long),
            torch.zeros(size, dtype=torch.long),
            torch.zeros(size, dtype=torch.float64),
            torch.zeros(size, dtype=torch.float64),
        )
        failure: Exception | None = None
        if is_main_process():
            try:
                groups = labels
                if config.classes == "predictions":
                    probabilities = errors.clone()
                    probabilities[torch.arange(labels.numel()), labels] += 1.0  # E = softmax - onehot(label)
                    groups = probabilities.argmax(dim=1)
                k = self._coreset_size(labels.numel())
                budgets = _budgets(torch.bincount(groups, minlength=num_classes), k, per_class=False)
                rng = np.random.default_rng([self._seed(), epoch])
                plan = _draw_items(groups, budgets, errors, features, config, rng)
            except Exception as error:  # told to the other processes first, so none waits for items never sent
                failure = error
        # Rank 0's status (0: ok, 1: failed) before its items: a rank-0 error stops every process, none hangs.
        status = int(broadcast_from_main(torch.tensor([0 if failure is None else 1], dtype=torch.long)).item())
        if failure is not None:
            raise failure
        if status != 0:
            raise VerifixError(
                f"the main process (rank 0) failed while selecting the CRUST coreset of epoch {epoch} (facility "
                "location and draws run there only), so this process stops too; fix the error in rank 0's "
                "traceback and rerun"
            )
        medoids, members, lambdas, weights = (broadcast_from_main(t) for t in plan)
        slots = max(1, config.members_per_medoid)
        record = CrustEpoch(
            epoch=epoch,
            coreset=medoids[::slots].clone(),
            cluster_sizes=torch.round(weights[::slots] * slots).long(),
            item_medoids=medoids,
            item_members=members,
            item_lambdas=lambdas,
            item_weights=weights,
            selection_s=time.perf_counter() - started,
            proxies_s=proxies_s,
        )
        items.plan = record
        return record

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """CRUST batches: the r-weighted mean of λ CE(z, y_member) + (1 - λ) CE(z, y_medoid) on mixed inputs.

        Other batches (evaluation) get the Trainer's own loss when the model's ``forward`` takes the batch's
        keywords (a transformers model computes it), else — a plain ``nn.Module`` — the cross-entropy of its logits.

        Example:
            >>> import tempfile
            >>> from transformers import TrainingArguments
            >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, report_to=[])
            >>> model = nn.Linear(2, 2)
            >>> trainer = CrustTrainer(model, args)
            >>> batch = {"pixel_values": torch.ones(1, 2), "labels": torch.tensor([0]),
            ...          "crust_member_inputs": {"pixel_values": torch.zeros(1, 2), "labels": torch.tensor([1])},
            ...          "crust_medoid": torch.tensor([0]), "crust_member": torch.tensor([1]),
            ...          "crust_lambda": torch.tensor([0.25]), "crust_weight": torch.tensor([3.0])}
            >>> logits = model(torch.full((1, 2), 0.75))
            >>> expected = 0.25 * F.cross_entropy(logits, torch.tensor([1])) + 0.75 * F.cross_entropy(
            ...     logits, torch.tensor([0]))
            >>> torch.allclose(trainer.compute_loss(model, batch), expected)
            True
        """
        if _MEMBER_INPUTS not in inputs:
            if self._takes_keywords(model, inputs):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            batch = dict(inputs)
            labels = batch.pop(_label_key(batch))
            logits = logits_of(self._call_model(model, batch)).float()
            loss = F.cross_entropy(logits, labels)
            return (loss, {"logits": logits}) if return_outputs else loss
        medoids = dict(inputs)
        members = dict(medoids.pop(_MEMBER_INPUTS))
        lam, weight = medoids.pop(_LAMBDA).float(), medoids.pop(_WEIGHT).float()
        medoids.pop(_MEDOID)
        medoids.pop(_MEMBER)
        y_medoid = medoids.pop(_label_key(medoids))
        y_member = members.pop(_label_key(members))
        outputs = self._call_model(model, _mix(medoids, members, lam))
        logits = logits_of(outputs).float()
        per_item = lam * F.cross_entropy(logits, y_member, reduction="none") + (1 - lam) * F.cross_entropy(
            logits, y_medoid, reduction="none"
        )
        loss = (weight * per_item).sum() / weight.sum().clamp_min(torch.finfo(torch.float32).tiny)
        return (loss, outputs) if return_outputs else loss

    def _takes_keywords(self, model: nn.Module, inputs: Mapping[str, Any]) -> bool:
        """Whether the model's ``forward`` accepts every key of ``inputs`` as a keyword."""
        parameters = inspect.signature(self.accelerator.unwrap_model(model).forward).parameters
        keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        return keywords or all(key in parameters for key in inputs)

    def _call_model(self, model: nn.Module, inputs: dict[str, Any]) -> Any:
        if self._takes_keywords(model, inputs):
            return model(**inputs)
        if len(inputs) == 1:
            return model(next(iter(inputs.values())))
        parameters = inspect.signature(self.accelerator.unwrap_model(model).forward).parameters
        raise DataError(
            f"the model's forward takes {list(parameters)}, but a training batch holds {sorted(inputs)}; name the "
            "dataset's columns after the forward's arguments (or return a single input and labels)"
        )


def _check_indexable(dataset: Any) -> None:
    if not is_map_style(dataset):
        raise DataError(
            f"CRUST revisits training samples by index every epoch, but train_dataset is a "
            f"{type(dataset).__name__}; pass a map-style dataset (datasets.Dataset without streaming, a torch "
            "Dataset with __getitem__ and __len__)"
        )
