"""Correct a model at the end of ``transformers.Trainer`` training with one callback: :class:`SAPCallback`.

The callback selects trusted samples from the training data, projects the model's weights in place with
:class:`~hf_verifix.ProjectionCorrector`, searches α on the evaluation data (labelled like the training data, i.e.
noisy), logs ``sap/*`` metrics through the Trainer and writes the correction's config and report next to the
Trainer's output, so a following ``trainer.save_model()`` saves the corrected model.

transformers image classifiers (e.g. ``ViTForImageClassification``) and timm models wrapped as
``transformers.TimmWrapperForImageClassification`` (buildable offline from a ``TimmWrapperConfig``) both work.

Example:
    >>> from hf_verifix.integrations.trainer import LOG_PREFIX
    >>> LOG_PREFIX
    'sap/'
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .._validation import alpha_candidates
from ..config import CorrectionConfig
from ..corrector import ProjectionCorrector
from ..data.images import Transform
from ..data.source import as_source
from ..errors import ConfigError, DataError, VerifixError, describe_value
from ..models.adapters import check_image_model, save_model
from ..reporting.model_card import MODEL_TAGS
from ..results import REPORT_NAME, UNCORRECTED_DIR, CorrectionResult, format_alpha
from ..statistics.layers import find_target_layers
from ..utils.distributed import is_main_process
from ..utils.staging import atomic_write, staged_directory
from .trainer_data import readable, reject_unindexable, trainer_data

__all__ = ["LOG_PREFIX", "SAPCallback", "card_section"]

LOG_PREFIX = "sap/"
"""Prefix of every metric :class:`SAPCallback` logs (``sap/accuracy_before``, ``sap/alpha``, ...).

Example:
    >>> LOG_PREFIX + "alpha"
    'sap/alpha'
"""

logger = logging.getLogger(__name__)


def _valid_on_epochs(on_epochs: Any) -> frozenset[int]:
    if on_epochs is None:
        return frozenset()
    if isinstance(on_epochs, (str, bytes)) or not hasattr(on_epochs, "__iter__"):
        raise ConfigError(
            f"on_epochs must be a list of 1-based epoch numbers (e.g. [1, 3]) or None, got {describe_value(on_epochs)}"
        )
    epochs = list(on_epochs)
    bad = [e for e in epochs if isinstance(e, bool) or not isinstance(e, int) or e < 1]
    if bad:
        raise ConfigError(
            f"on_epochs must hold 1-based epoch numbers (ints >= 1, e.g. [1, 3]), got {bad[:3]} in {epochs!r}"
        )
    return frozenset(epochs)


def _valid_output_subdir(output_subdir: Any) -> str:
    if not isinstance(output_subdir, str) or not output_subdir.strip():
        raise ConfigError(
            f"output_subdir must be a non-empty relative folder name such as 'sap_correction', "
            f"got {describe_value(output_subdir)}"
        )
    path = PurePath(output_subdir)
    if path.is_absolute() or ".." in path.parts:
        raise ConfigError(
            f"output_subdir must be a folder inside the Trainer's output_dir (relative, without '..'), got "
            f"{output_subdir!r}; pass e.g. 'sap_correction'"
        )
    return output_subdir


class SAPCallback(TrainerCallback):
    """A ``transformers.TrainerCallback`` that corrects the trained model by Scaled Activation Projection.

    At ``on_train_end`` (and after each epoch listed in ``on_epochs``) the callback, on the unwrapped model the
    Trainer passes to callbacks and without gradients:

    1. selects ``config.n_trusted`` trusted samples of the training data (``config.selector``, e.g. lowest loss),
    2. collects their activation statistics and projects every targeted layer's weights in place,
    3. searches α over ``alphas`` (or ``config.alpha_grid``) on the evaluation data when ``search_alpha`` is set
       and evaluation data is found, keeping the uncorrected weights if no α beats them; otherwise applies
       ``config.alpha``,
    4. logs ``sap/accuracy_before``, ``sap/accuracy_after`` (on the evaluation data, when there is one),
       ``sap/alpha`` (the α applied; absent when the search kept the uncorrected weights), ``sap/corrected`` (1.0
       if the weights changed, else 0.0), ``sap/trusted``, ``sap/layers`` (layers corrected) and the
       timings ``sap/selection_s``, ``sap/collection_s``, ``sap/decomposition_s``, ``sap/update_s`` or
       ``sap/alpha_search_s``, ``sap/total_s``,
    5. writes ``correction_config.json`` and ``correction_report.json`` to ``args.output_dir/<output_subdir>/``
       (``<output_subdir>/epoch-<k>/`` for an epoch-end correction) on the main process only.

    ``trainer.save_model()`` afterwards saves the corrected model. Under several processes (``accelerate launch``,
    ``torchrun``) every process corrects its own copy of the model identically: each pass over the data visits an
    exact shard per process and is combined once (see :mod:`hf_verifix.utils.distributed`).

    Data: the training data is ``train_dataset``, else the bound Trainer's ``train_dataset`` (see
    :meth:`set_trainer`), else the dataset of the ``train_dataloader`` the Trainer passes to callbacks (never the
    shuffled loader itself); the evaluation data likewise (``eval_dataset``, the Trainer's, the ``eval_dataloader``'s).
    Any data ``ProjectionCorrector.fit`` accepts works (a ``datasets.Dataset``, a torch ``Dataset`` or a
    ``DataLoader(shuffle=False)``); a ``datasets.Dataset`` with ``with_transform`` (or a torch dataset when the
    Trainer has a collator) is read in order through the Trainer's ``collate_fn`` (``default_data_collator`` when
    none is known), so the callback sees exactly the tensors the model was trained on. The evaluation data must be
    labelled like the training data (noisy): a clean test set would leak into the choice of α.

    The Trainer: ``callbacks=[SAPCallback(...)]`` is enough. At ``on_train_begin`` the callback binds the Trainer
    whose event it receives (:meth:`set_trainer` does the same by hand, e.g. for events called outside
    ``trainer.train()``), so the metrics go through ``trainer.log`` (then they reach ``state.log_history``, the
    progress bar and every ``report_to`` integration, like the Trainer's own metrics; the callback also moves ahead
    of the integrations, some of which close their run in their own ``on_train_end``) and the Trainer's
    ``train_dataset`` and ``eval_dataset`` are used when none was given (its ``eval_dataloader`` only exists once it
    has evaluated). Unbound (events called by hand), the callback appends the metrics to ``state.log_history``
    (with ``epoch`` and ``step``, as ``Trainer.log`` does) but integrations do not see them.

    The hyperparameters (the arguments) are never changed by a run; what a run produces is kept in
    :attr:`corrector` (the last :class:`~hf_verifix.ProjectionCorrector`, e.g. to ``revert()``) and
    :attr:`history` (the metrics of every correction).

    Args:
        config: The correction's hyperparameters (``CorrectionConfig()`` when None). Progress bars follow
            ``config.progress`` and are hidden when the Trainer's ``args.disable_tqdm`` is set.
        train_dataset: The training data, labelled as the model was trained (noisy).
        eval_dataset: Held-out data labelled like the training data, for choosing α and the before/after metrics.
        search_alpha: Search α on the evaluation data (when there is some); otherwise apply ``config.alpha``.
        alphas: The α candidates of the search (``config.alpha_grid`` when None); needs ``search_alpha=True``.
        on_epochs: Also correct after these 1-based epochs (the epoch that ended, ``ceil(state.epoch)``). Training
            then goes on from the corrected weights. The correction at the end of training is skipped when the
            last epoch-end correction happened at the same step (and no best model was loaded since).
        transform: Preprocessing of a ``datasets.Dataset``'s raw image column (default: the image processor given
            to the Trainer as ``processing_class``, else the model's own); leave it None for data that already
            yields ``pixel_values``.
        output_subdir: Folder inside ``args.output_dir`` for the config and report.

    Raises:
        ConfigError: An argument has the wrong type or value (the message names it and the fix).

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> from transformers import TrainerControl, TrainerState, TrainingArguments
        >>> from hf_verifix import CorrectionConfig
        >>> data = TensorDataset(torch.randn(48, 4), torch.randint(0, 3, (48,)))
        >>> config = CorrectionConfig(n_trusted=24, progress=False)
        >>> callback = SAPCallback(config, train_dataset=data, eval_dataset=data, alphas=[1e2, 1e4])
        >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True)
        >>> state = TrainerState()
        >>> _ = callback.on_train_end(args, state, TrainerControl(), model=torch.nn.Linear(4, 3))
        >>> sorted(key for key in state.log_history[-1] if key.startswith("sap/accuracy"))
        ['sap/accuracy_after', 'sap/accuracy_before']
        >>> sorted(p.name for p in (Path(args.output_dir) / "sap_correction").iterdir())
        ['correction_config.json', 'correction_report.json']

        With a Trainer (the callback finds it, its datasets and its ``log``):

        >>> sap = SAPCallback(CorrectionConfig(n_trusted=1000), alphas=[1e4, 3e4, 1e5])
        >>> trainer = Trainer(model, args, train_dataset=tr, eval_dataset=va, callbacks=[sap])  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
        >>> trainer.state.log_history[-1]["sap/accuracy_after"]  # doctest: +SKIP
        0.87
        >>> trainer.save_model()  # the corrected model  # doctest: +SKIP
    """

    def __init__(
        self,
        config: CorrectionConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        search_alpha: bool = True,
        alphas: Sequence[float] | None = None,
        on_epochs: Sequence[int] | None = None,
        transform: Transform | None = None,
        output_subdir: str = "sap_correction",
    ) -> None:
        if config is None:
            config = CorrectionConfig()
        if not isinstance(config, CorrectionConfig):
            raise ConfigError(
                f"config must be a hf_verifix.CorrectionConfig or None, got {describe_value(config)}; "
                "build one with CorrectionConfig(n_trusted=..., ...)"
            )
        if not isinstance(search_alpha, bool):
            raise ConfigError(f"search_alpha must be True or False, got {describe_value(search_alpha)}")
        if alphas is not None and not search_alpha:
            raise ConfigError(
                "alphas is only used by the α search, but search_alpha=False; pass search_alpha=True, or drop "
                "alphas and set CorrectionConfig(alpha=...) for a fixed α"
            )
        if transform is not None and not callable(transform):
            raise ConfigError(
                f"transform must be a callable mapping an image to a tensor (e.g. a torchvision transform or an "
                f"image processor) or None, got {describe_value(transform)}"
            )
        for name, data in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            reject_unindexable(data, name)
        # Hyperparameters: set here, never changed by a run.
        self.config = config
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.search_alpha = search_alpha
        self.alphas: tuple[float, ...] | None = None if alphas is None else alpha_candidates(alphas)
        self.on_epochs = _valid_on_epochs(on_epochs)
        self.transform = transform
        self.output_subdir = _valid_output_subdir(output_subdir)
        # State: what the runs produced.
        self.trainer: Any = None
        self.corrector: ProjectionCorrector | None = None
        self.history: list[dict[str, float]] = []
        self._corrected_at_step: int | None = None

    def set_trainer(self, trainer: Any, before_integrations: bool = True) -> SAPCallback:
        """Bind the Trainer: metrics then go through ``trainer.log`` and its datasets are used when none was given.

        Args:
            trainer: The ``transformers.Trainer`` this callback was added to.
            before_integrations: Move this callback ahead of the reporting integrations in the Trainer's callback
                list. They run their own ``on_train_end`` first otherwise, and some of them (MLflow, trackio,
                ClearML) close their run there, before the ``sap/*`` metrics are logged.

        Returns:
            ``self``, for chaining.

        Example:
            >>> callback = SAPCallback()
            >>> class FakeTrainer:  # anything with log(); a transformers.Trainer in practice
            ...     def log(self, logs):
            ...         print(logs)
            >>> callback.set_trainer(FakeTrainer()) is callback
            True
        """
        if not callable(getattr(trainer, "log", None)):
            raise ConfigError(
                "set_trainer expects a transformers.Trainer (an object with a log() method), got "
                f"{describe_value(trainer)}"
            )
        self.trainer = trainer
        _add_card_section(trainer, self)
        callbacks = getattr(getattr(trainer, "callback_handler", None), "callbacks", None)
        if before_integrations and isinstance(callbacks, list) and any(cb is self for cb in callbacks):
            mine = next(i for i, cb in enumerate(callbacks) if cb is self)
            first = next((i for i, cb in enumerate(callbacks) if _is_reporting_integration(cb)), None)
            if first is not None and first < mine:
                callbacks.insert(first, callbacks.pop(mine))
        return self

    # ------------------------------------------------------------------ events
    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Refuse, before any training step, a model whose targeted layers cannot all be corrected exactly.

        With ``config.on_uncorrectable="error"`` (the default) a ``LayerError`` names every such layer, why, and the
        fix, so no training time is spent on a model the correction would refuse at the end.

        Example:
            >>> import tempfile, torch
            >>> from transformers import TrainerControl, TrainerState, TrainingArguments
            >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True)
            >>> model = torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")
            >>> SAPCallback().on_train_begin(args, TrainerState(), TrainerControl(), model=model)
            Traceback (most recent call last):
            ...
            hf_verifix.errors.LayerError: ...
        """
        self._bind_calling_trainer()
        model = kwargs.get("model")
        if isinstance(model, nn.Module):
            cfg = self.config
            check_image_model(model)
            find_target_layers(model, cfg.target_modules, cfg.exclude_modules, cfg.on_uncorrectable)
            self._check_training_data(model, kwargs)
        return control

    def _bind_calling_trainer(self) -> None:
        """Bind the Trainer whose event this is, unless one was bound with :meth:`set_trainer`.

        A callback's events carry the model and the dataloaders but not the Trainer, whose ``eval_dataset`` (read
        only when evaluating) and ``log`` the callback needs: it is the ``transformers.Trainer`` on the call stack
        that holds this callback.
        """
        if self.trainer is None:
            trainer = _calling_trainer(self)
            if trainer is not None:
                self.set_trainer(trainer)

    def _transform(self, kwargs: Any) -> Transform | None:
        """``transform``, else the image processor the Trainer was given (``processing_class``), else None (the
        model's own preprocessing)."""
        if self.transform is not None:
            return self.transform
        processor = kwargs.get("processing_class")
        from transformers.image_processing_utils import BaseImageProcessor

        return processor if isinstance(processor, BaseImageProcessor) else None  # type: ignore[return-value]

    def _check_training_data(self, model: nn.Module, kwargs: Any) -> None:
        """Refuse before training what would make the correction fail after it: unreadable data, too few rows."""
        loader = kwargs.get("train_dataloader")
        data = trainer_data("train", self.train_dataset, self.trainer, loader)
        if data is None:  # a Trainer bound later, or an event called by hand with the data at the end
            return
        cfg = self.config
        transform = self._transform(kwargs)
        data = readable(data, getattr(loader, "collate_fn", None), cfg.batch_size, "training", transform)
        source = as_source(data, model, cfg.batch_size, cfg.image_column, cfg.label_column, transform)
        if cfg.n_trusted > len(source):
            raise DataError(
                f"n_trusted={cfg.n_trusted} is larger than the training data ({len(source)} samples); lower "
                "CorrectionConfig(n_trusted=...) or pass more data. Checked before training, so no training time "
                "was spent"
            )

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Correct the model if the epoch that just ended is in ``on_epochs``.

        Example:
            >>> SAPCallback(on_epochs=[2]).on_epochs
            frozenset({2})
        """
        epoch = math.ceil(state.epoch - 1e-9) if state.epoch is not None else None
        if epoch is not None and epoch in self.on_epochs:
            self._correct_or_keep(args, state, control, f"epoch-{epoch}", kwargs)
        return control

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Correct the trained model (``kwargs["model"]``), log the metrics and write the report.

        Example:
            >>> import tempfile, torch
            >>> from torch.utils.data import TensorDataset
            >>> from transformers import TrainerControl, TrainerState, TrainingArguments
            >>> data = TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,)))
            >>> callback = SAPCallback(CorrectionConfig(n_trusted=8, progress=False), train_dataset=data)
            >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), report_to=[], use_cpu=True)
            >>> _ = callback.on_train_end(args, TrainerState(), TrainerControl(), model=torch.nn.Linear(3, 2))
            >>> callback.history[-1]["sap/alpha"]  # no evaluation data: config.alpha is applied
            30000.0
        """
        already = self._corrected_at_step is not None and self._corrected_at_step == state.global_step
        if already and not getattr(args, "load_best_model_at_end", False):
            logger.info("SAPCallback: already corrected at step %d; not correcting twice", state.global_step)
            return control
        self._correct_or_keep(args, state, control, None, kwargs)
        return control

    def _correct_or_keep(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, folder: str | None, kwargs: Any
    ) -> None:
        """Correct; if that fails, put the trained weights back, save them, and say where in the error."""
        self._bind_calling_trainer()  # when training began before this callback was added
        try:
            self._correct(args, state, control, folder, kwargs)
        except Exception as err:
            _add_note(err, self._keep_trained_model(args, kwargs.get("model")))
            raise

    def _keep_trained_model(self, args: TrainingArguments, model: Any) -> str:
        corrector = self.corrector
        if corrector is not None and corrector.projections and corrector.model is model:
            with contextlib.suppress(VerifixError):  # raised when the model changed since: nothing to put back
                corrector.revert()  # e.g. an α search that failed half-way holds projected weights
        output_dir = getattr(args, "output_dir", None)
        if not isinstance(model, nn.Module) or not output_dir:
            return "The trained model in memory was not changed"
        target = Path(output_dir) / self.output_subdir / UNCORRECTED_DIR
        if not (is_main_process() and getattr(args, "process_index", 0) == 0):
            return f"The trained model was not changed; the main process saves it to {str(target)!r}"

        try:
            with staged_directory(target) as staging:
                save_model(model, staging)
        except Exception as save_error:  # the original error matters more; say why nothing was saved
            return f"The trained model in memory was not changed; saving it to {str(target)!r} failed ({save_error})"
        return (
            f"The trained model was not changed and was saved to {str(target)!r} (uncorrected), so no training is "
            "lost; correct it from there with ProjectionCorrector or `hf-verifix correct --model` once fixed"
        )

    # ------------------------------------------------------------------ the correction
    def _correct(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, folder: str | None, kwargs: Any
    ) -> dict[str, float]:
        model = kwargs.get("model")
        if not isinstance(model, nn.Module):
            raise VerifixError(
                "SAPCallback needs the model the Trainer passes to callbacks (model=...), got "
                f"{describe_value(model)}; "
                "when calling the event yourself, pass model=your_model"
            )
        config = self.config
        if config.progress and getattr(args, "disable_tqdm", False):
            config = dataclasses.replace(config, progress=False)
        train_loader = kwargs.get("train_dataloader")
        eval_loader = kwargs.get("eval_dataloader")
        train_collate = getattr(train_loader, "collate_fn", None)
        eval_collate = getattr(eval_loader, "collate_fn", None) or train_collate
        train_data = trainer_data("train", self.train_dataset, self.trainer, train_loader)
        if train_data is None:
            raise DataError(
                "SAPCallback found no training data: pass SAPCallback(train_dataset=...), bind the Trainer with "
                "callback.set_trainer(trainer), or call the event with train_dataloader=... "
                "(the Trainer does this during trainer.train())"
            )
        eval_data = trainer_data("eval", self.eval_dataset, self.trainer, eval_loader)
        transform = self._transform(kwargs)
        train_data = readable(train_data, train_collate, config.batch_size, "training", transform)
        if eval_data is not None:
            eval_data = readable(eval_data, eval_collate, config.batch_size, "evaluation", transform)

        started = time.perf_counter()
        if eval_data is None and self.search_alpha:
            logger.warning(
                "SAPCallback: no evaluation data to search α on (pass eval_dataset=...); applying config.alpha=%g",
                config.alpha,
            )
        with torch.no_grad():
            corrector = ProjectionCorrector(model, config)
            self.corrector = corrector
            result = corrector.correct(
                train_data,
                eval_data,
                alpha=None if self.search_alpha and eval_data is not None else config.alpha,
                alphas=self.alphas if eval_data is not None else None,
                transform=transform,
            )
        logs: dict[str, float] = {}
        if result.before is not None and result.after is not None:
            logs["accuracy_before"], logs["accuracy_after"] = result.before.accuracy, result.after.accuracy
        corrected = corrector.applied_alpha is not None
        if corrected:
            logs["alpha"] = float(corrector.applied_alpha or 0.0)
        logs["corrected"] = float(corrected)
        logs["trusted"] = int(corrector.trusted_indices.numel())
        logs["layers"] = len(corrector.projections)
        logs.update(result.timings)
        logs["total_s"] = time.perf_counter() - started
        logs = {LOG_PREFIX + key: value for key, value in logs.items()}

        self.history.append(dict(logs))
        self._corrected_at_step = state.global_step
        add_tags = getattr(model, "add_model_tags", None)
        if corrected and callable(add_tags):
            add_tags(MODEL_TAGS)  # the card trainer.push_to_hub() writes then carries them
        self._log(state, logs)
        if is_main_process() and state.is_world_process_zero:
            self._write(args, state, corrector, result, logs, folder)
        return logs

    def _log(self, state: TrainerState, logs: dict[str, float]) -> None:
        if self.trainer is not None:
            self.trainer.log(dict(logs))
            return
        # What Trainer.log records, for callers without a bound Trainer.
        entry: dict[str, Any] = dict(logs)
        if state.epoch is not None:
            entry["epoch"] = state.epoch
        entry["step"] = state.global_step
        state.log_history.append(entry)

    def _write(
        self,
        args: TrainingArguments,
        state: TrainerState,
        corrector: ProjectionCorrector,
        result: CorrectionResult,
        logs: dict[str, float],
        folder: str | None,
    ) -> Path:
        output_dir = getattr(args, "output_dir", None)
        if not output_dir:
            raise ConfigError("SAPCallback writes next to the Trainer's output: set TrainingArguments(output_dir=...)")
        target = Path(output_dir) / self.output_subdir
        if folder is not None:
            target = target / folder
        corrector.applied_config().save(target)
        summary = dict(result.summary)
        summary["trainer"] = {"event": folder or "train_end", "global_step": state.global_step, "epoch": state.epoch}
        summary["metrics"] = dict(logs)
        atomic_write(target / REPORT_NAME, json.dumps(summary, indent=2) + "\n")
        return target


def card_section(history: list[dict[str, float]]) -> str:
    """The model-card section that reports the last correction of ``history`` (``SAPCallback.history``).

    Example:
        >>> print(card_section([{"sap/alpha": 100.0, "sap/corrected": 1.0, "sap/trusted": 30, "sap/layers": 14,
        ...                      "sap/accuracy_before": 0.6, "sap/accuracy_after": 0.7}]).splitlines()[0])
        ## Label-noise correction (hf_verifix)
    """
    from .._version import __version__

    logs = history[-1]
    if logs.get(LOG_PREFIX + "corrected"):
        what = (
            f"After training, the weights were corrected by Scaled Activation Projection (hf_verifix {__version__}) "
            f"with α = {format_alpha(float(logs[LOG_PREFIX + 'alpha']))}, from {int(logs[LOG_PREFIX + 'trusted'])} "
            f"trusted training samples, in {int(logs[LOG_PREFIX + 'layers'])} layers."
        )
    else:
        what = (
            f"After training, Scaled Activation Projection (hf_verifix {__version__}) was tried: no α beat the "
            "trained model on the evaluation data, so its weights were kept."
        )
    lines = ["## Label-noise correction (hf_verifix)", "", what]
    if LOG_PREFIX + "accuracy_before" in logs:
        before, after = logs[LOG_PREFIX + "accuracy_before"], logs[LOG_PREFIX + "accuracy_after"]
        lines += [
            "",
            "| evaluation data (labelled like the training data) | accuracy |",
            "|---|---|",
            f"| before the correction | {before:.2%} |",
            f"| after the correction | {after:.2%} |",
        ]
    return "\n".join(lines) + "\n"


def _add_card_section(trainer: Any, callback: SAPCallback) -> None:
    """Make ``trainer.create_model_card()`` (which ``trainer.push_to_hub()`` calls) append :func:`card_section`.

    The Trainer has no event between writing its card and pushing it, so its bound method is wrapped, once, on this
    Trainer only; with no correction yet, the card is the Trainer's own.
    """
    create = getattr(trainer, "create_model_card", None)
    if not callable(create) or getattr(create, "_hf_verifix_section", False):
        return

    def create_model_card(*args: Any, **kwargs: Any) -> Any:
        result = create(*args, **kwargs)
        output_dir = getattr(getattr(trainer, "args", None), "output_dir", None)
        card = Path(output_dir) / "README.md" if output_dir else None
        if callback.history and card is not None and card.is_file() and is_main_process():
            text = card.read_text(encoding="utf-8").rstrip("\n")
            atomic_write(card, text + "\n\n" + card_section(callback.history))
        return result

    create_model_card._hf_verifix_section = True  # type: ignore[attr-defined]
    trainer.create_model_card = create_model_card


def _calling_trainer(callback: Any) -> Any:
    """The ``transformers.Trainer`` on the call stack whose callbacks include ``callback`` (None if there is none).

    Example:
        >>> _calling_trainer(SAPCallback()) is None  # not inside a Trainer's event
        True
    """
    from transformers import Trainer

    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, Trainer):
                callbacks = getattr(getattr(candidate, "callback_handler", None), "callbacks", [])
                if any(cb is callback for cb in callbacks):
                    return candidate
            frame = frame.f_back
        return None
    finally:
        del frame


def _add_note(err: BaseException, note: str) -> None:
    """Append ``note`` to ``err``'s message (its first argument when that is the message, else a PEP 678 note)."""
    if len(err.args) == 1 and isinstance(err.args[0], str):
        err.args = (f"{err.args[0]}. {note}",)
    elif hasattr(err, "add_note"):
        err.add_note(note)


def _is_reporting_integration(callback: Any) -> bool:
    """The callbacks ``report_to`` adds (TensorBoard, W&B, MLflow, ...) all live in ``transformers.integrations``."""
    return type(callback).__module__.startswith("transformers.integrations")
