"""What the training methods share: the epoch callback, the epoch number, the map-style check, rows and columns.

Example:
    >>> from transformers import TrainerState
    >>> current_epoch(TrainerState(epoch=2.6)), as_row((1, 0), 0)
    (2, {'pixel_values': 1, 'labels': 0})
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..data.source import is_iterable_dataset
from ..errors import ConfigError, DataError, describe_value

__all__ = [
    "INPUT_KEY",
    "LABELS_KEY",
    "EpochCallback",
    "EpochHooks",
    "KeepColumnsTrainer",
    "as_row",
    "clipping_warning",
    "config_or_default",
    "current_epoch",
    "is_map_style",
    "log_clipping_warning",
]

logger = logging.getLogger(__name__)

INPUT_KEY, LABELS_KEY = "pixel_values", "labels"
"""The names a plain ``(input, label)`` sample gets (:func:`as_row`)."""

ConfigT = TypeVar("ConfigT")


def current_epoch(state: TrainerState) -> int:
    """The 0-based epoch the Trainer is in: ``state.epoch`` floored (1e-6 absorbs float noise; None is 0).

    A run resumed from a checkpoint saved in the second half of epoch 2 (``state.epoch == 2.6``) is in epoch 2.

    Example:
        >>> current_epoch(TrainerState(epoch=2.6)), current_epoch(TrainerState(epoch=2.9999999)), current_epoch(
        ...     TrainerState(epoch=None))
        (2, 3, 0)
    """
    return math.floor((state.epoch or 0.0) + 1e-6)


def is_map_style(dataset: Any) -> bool:
    """Whether ``dataset`` can be read by index: not a stream, and has ``__getitem__`` and ``__len__``.

    Example:
        >>> is_map_style([1, 2]), is_map_style(iter([1, 2]))
        (True, False)
    """
    return not is_iterable_dataset(dataset) and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")


def as_row(item: Any, index: int | None = None) -> dict[str, Any]:
    """Sample ``index`` as the collators take it: dicts as they are, ``(input, label, ...)`` as pixel_values/labels.

    Raises:
        DataError: Neither a dict nor an ``(input, label)`` pair.

    Example:
        >>> as_row({"pixel_values": 1, "labels": 0}, 3)
        {'pixel_values': 1, 'labels': 0}
    """
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return {INPUT_KEY: item[0], LABELS_KEY: item[1]}
    raise DataError(
        f"each training sample must be a dict (e.g. with 'pixel_values' and 'labels') or an (input, label) pair, got "
        f"{type(item).__name__}{'' if index is None else f' at index {index}'}; wrap the dataset so that it returns "
        "one of those"
    )


def config_or_default(value: Any, kind: type[ConfigT], name: str, expected: str, fix: str) -> ConfigT:
    """A trainer's config argument: ``value`` itself, or ``kind()`` when it is None.

    Args:
        value: What the trainer received.
        kind: The config class (called without arguments for the default).
        name: The argument's name, for the message.
        expected: What it must be, for the message (e.g. ``"a CrustConfig"``).
        fix: How to build one, for the message.

    Raises:
        ConfigError: ``value`` is neither None nor a ``kind``: "<name> must be <expected> or None, got ...; <fix>".

    Example:
        >>> config_or_default(None, list, "items", "a list", "pass items=[...]")
        []
        >>> config_or_default(3, list, "items", "a list", "pass items=[...]")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigError: items must be a list or None, got 3 (int); pass items=[...]
    """
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be {expected} or None, got {describe_value(value)}; {fix}")
    return value


def clipping_warning(args: TrainingArguments, trainer: str) -> str | None:
    """The warning a trainer logs when ``args`` clip gradients at the Trainer's default norm 1.0, else None.

    The seeds' training loops do not clip; on a resnet18 trained from scratch the default clipping shrinks the early
    steps severalfold (gradient norms 5-15). A norm the user chose (any value but 1.0), or 0 (off), gets no warning.

    Example:
        >>> clipping_warning(TrainingArguments("out", max_grad_norm=0.0), "CrustTrainer") is None
        True
        >>> clipping_warning(TrainingArguments("out"), "CrustTrainer").split(";")[0]
        "CrustTrainer: TrainingArguments(max_grad_norm=1.0), the Trainer's default, clips every gradient to norm 1.0"
    """
    if float(args.max_grad_norm or 0.0) != 1.0:
        return None
    return (
        f"{trainer}: TrainingArguments(max_grad_norm=1.0), the Trainer's default, clips every gradient to norm 1.0; "
        "the paper's training does not clip, and on a model trained from scratch the clipping can shrink the early "
        "steps severalfold; pass TrainingArguments(max_grad_norm=0) to train as the paper does (any other value "
        "keeps your choice and silences this)"
    )


def log_clipping_warning(args: TrainingArguments, trainer: str) -> None:
    """Log :func:`clipping_warning` (a ``logging`` warning, not a Python warning: the run is valid as it is).

    Example:
        >>> log_clipping_warning(TrainingArguments("out", max_grad_norm=0.0), "CrustTrainer")  # no clipping: silent
    """
    message = clipping_warning(args, trainer)
    if message is not None:
        logger.warning(message)


class EpochHooks(Protocol):
    """What :class:`EpochCallback` calls: a hook when ``train()`` begins and one when each epoch begins.

    Example:
        >>> all(hasattr(KeepColumnsTrainer, hook) for hook in ("_start_training", "_start_epoch"))  # no-ops there
        True
    """

    def _start_training(self, state: TrainerState) -> None: ...

    def _start_epoch(self, epoch: int) -> None: ...


class EpochCallback(TrainerCallback):
    """The training methods' one callback: runs the trainer's per-run and per-epoch work at the Trainer's events.

    ``on_train_begin`` calls ``trainer._start_training(state)`` (reset the run's state); ``on_epoch_begin`` calls
    ``trainer._start_epoch(epoch)`` with the 0-based epoch of :func:`current_epoch`, before the Trainer iterates the
    epoch's dataloader (fit the loss mixture, select the coreset). :class:`KeepColumnsTrainer` registers one on
    itself, after the callbacks passed to the Trainer (so theirs see each event first).

    Example:
        >>> from transformers import TrainerControl
        >>> class Hooks:
        ...     def _start_training(self, state): print("run starts")
        ...     def _start_epoch(self, epoch): print("epoch", epoch)
        >>> callback, control = EpochCallback(Hooks()), TrainerControl()
        >>> args = TrainingArguments("out")
        >>> _ = callback.on_train_begin(args, TrainerState(), control)
        run starts
        >>> _ = callback.on_epoch_begin(args, TrainerState(epoch=2.6), control)  # resumed mid-epoch 2
        epoch 2
    """

    def __init__(self, trainer: EpochHooks) -> None:
        self.trainer = trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Reset the trainer's per-run state (``trainer._start_training(state)``).

        Example:
            >>> class Hooks:
            ...     def _start_training(self, state): print("run starts")
            >>> _ = EpochCallback(Hooks()).on_train_begin(None, TrainerState(), None)
            run starts
        """
        self.trainer._start_training(state)
        return control

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Run the trainer's per-epoch work for the 0-based epoch starting (``trainer._start_epoch(epoch)``).

        Example:
            >>> class Hooks:
            ...     def _start_epoch(self, epoch): print("epoch", epoch)
            >>> _ = EpochCallback(Hooks()).on_epoch_begin(None, TrainerState(epoch=1.0), None)
            epoch 1
        """
        self.trainer._start_epoch(current_epoch(state))
        return control


class KeepColumnsTrainer(Trainer):
    """The base of the seeds' training methods: a ``Trainer`` whose column filter (``remove_unused_columns``) also
    keeps :attr:`kept_columns`, which logs :func:`clipping_warning` once (main process) when it is built, and which
    registers an :class:`EpochCallback` for its ``_start_training`` / ``_start_epoch`` hooks (no-ops here).

    A plain module's ``forward(x)`` names neither ``pixel_values`` nor ``labels``, and the training methods add keys
    of their own; the Trainer would drop them all.

    Example:
        >>> KeepColumnsTrainer.kept_columns
        ('pixel_values', 'labels')
    """

    kept_columns: tuple[str, ...] = (INPUT_KEY, LABELS_KEY)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.args.process_index == 0:  # once, not once per process
            log_clipping_warning(self.args, type(self).__name__)
        self.add_callback(EpochCallback(self))

    def _start_training(self, state: TrainerState) -> None:
        """Called by :class:`EpochCallback` when ``train()`` begins; a training method resets its run's state."""

    def _start_epoch(self, epoch: int) -> None:
        """Called by :class:`EpochCallback` when epoch ``epoch`` (0-based) begins, before its batches are drawn."""

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        columns: list[str] = list(self._signature_columns or [])
        columns += [key for key in self.kept_columns if key not in columns]
        self._signature_columns = columns  # type: ignore[assignment]  # declared None by Trainer.__init__
