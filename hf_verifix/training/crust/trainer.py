"""The ``transformers.Trainer`` of CRUST: each epoch's coreset, selected when the epoch begins, and its loss.

Example:
    >>> CrustTrainer.loss_is_scaled_for_ga
    False
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ...data.source import as_source
from ...errors import ConfigError, DataError, describe_value
from ...models.forward import logits_of
from ...selection.coreset import gradient_proxies
from .._common import KeepColumnsTrainer, config_or_default
from .config import CrustConfig
from .data import (
    _LABELS,
    _LAMBDA,
    _MEDOID,
    _MEMBER,
    _MEMBER_INPUTS,
    _WEIGHT,
    CrustEpoch,
    _check_indexable,
    _EpochSampler,
    _Items,
    _label_key,
    _mix,
    _PairCollator,
    _Rows,
    _RowsCollator,
    coreset_size,
    share_items,
)

__all__ = ["CrustTrainer"]

_LOG_PREFIX = "crust/"


class CrustTrainer(KeepColumnsTrainer):
    """A ``transformers.Trainer`` that trains every epoch on CRUST coresets (Mirzasoleiman et al., 2020).

    A Trainer subclass rather than a callback, because CRUST changes what an epoch iterates (the coreset's mixed
    samples, through its own dataset view and sampler) and the loss (r-weighted mixup cross-entropy); the per-epoch
    selection itself runs from the callback this trainer adds to itself (the training methods' shared
    :class:`~hf_verifix.training._common.EpochCallback`, ``on_epoch_begin``). Everything else — the optimizer and
    scheduler, gradient accumulation, mixed precision, logging, checkpoints, evaluation — is the Trainer's. Pass the
    same arguments as to ``Trainer`` plus ``crust=CrustConfig(...)``.

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
        crust = config_or_default(
            crust, CrustConfig, "crust", "a hf_verifix CrustConfig", "pass crust=CrustConfig(fraction=0.5, ...)"
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
            slots = max(1, self.crust.members_per_medoid)
            self._items = _Items(rows, coreset_size(self.crust.fraction, len(rows)) * slots)
        return self._items

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
    def _start_epoch(self, epoch: int) -> None:
        """Select the epoch's coreset before the Trainer draws its batches (EpochCallback's hook); log it."""
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
        proxies = gradient_proxies(model, as_source(loader, model), config.gradient, progress)
        proxies_s = time.perf_counter() - started
        medoids, members, lambdas, weights = share_items(proxies, config, len(items), self._seed(), epoch)
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
