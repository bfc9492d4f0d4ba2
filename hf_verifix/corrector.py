"""ProjectionCorrector: select trusted samples, stream activation Grams, decompose once, project for any α."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._validation import alpha_candidates, check_materialised, valid_alpha
from .config import CorrectionConfig, unavailable_device
from .data.images import Transform
from .data.source import SampleSource, as_source
from .errors import ConfigError, InputTypeError, LoadError, NumericalError, VerifixError
from .fitting import (
    FittedLayers,
    check_finite_weights,
    check_trusted_labels,
    collected_grams,
    fitted_layers,
    layer_summary,
    ready_projections,
    trusted_labels,
    trusted_set,
    trusted_summary,
)
from .models.adapters import check_image_model, save_model
from .models.forward import model_device
from .models.state import WeightState
from .predictions import predictions_and_labels
from .projection.batchnorm import batchnorm_buffers, recalibrate_batchnorm
from .projection.solve import Projection, Spectra
from .results import CONFIG_NAME, REPORT_NAME, AlphaSearchResult, CorrectionResult, Evaluation
from .selection.base import Selection, TrustedSelector
from .statistics.layers import find_target_layers
from .utils.progress import progress_bar
from .utils.staging import staged_directory
from .utils.versions import package_versions

__all__ = ["REPORT_NAME", "AlphaSearchResult", "CorrectionResult", "ProjectionCorrector"]

logger = logging.getLogger(__name__)

# Functions that moved out of the corrector (it writes local files only): where to find them now.
_MOVED = {
    "write_report": "hf_verifix.reporting.write_correction_report(corrector.correct(...), output_dir)",
    "push_to_hub": "hf_verifix.hub.push_to_hub(corrector, repo_id)",
}


class ProjectionCorrector:
    """Correct a classifier trained on noisy labels by Scaled Activation Projection (SAP / Verifix).

    ``fit`` selects the trusted samples, streams every targeted layer's input Gram in float64 and decomposes it
    once; ``apply`` projects the weights for any α (cheap: one matrix product per layer); ``revert`` restores the
    original weights bit-exactly; ``search_alpha`` tries a grid on held-out data labelled like the training data.

    A weight shared by several targeted layers (tied, or one layer applied several times) is projected once, onto
    the Gram summed over every row it multiplies; ``tied`` maps the first such layer to the others. A model with a
    targeted layer that cannot be corrected exactly is refused by ``fit`` before any work, unless
    ``config.on_uncorrectable == "skip"`` (then those layers are left alone, listed in ``skipped``).

    Args:
        model: The trained classifier (timm, transformers, or any module of Linear/Conv2d layers). Corrected in place.
        config: The hyperparameters; keyword ``overrides`` replace single fields.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from hf_verifix import CorrectionConfig, ProjectionCorrector
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 3, (64,)))
        >>> corrector = ProjectionCorrector(model, CorrectionConfig(n_trusted=32, progress=False)).fit(data)
        >>> _ = corrector.apply(alpha=3e4)
        >>> _ = corrector.revert()
    """

    def __init__(self, model: nn.Module, config: CorrectionConfig | None = None, **overrides: Any) -> None:
        if not isinstance(model, nn.Module):
            raise InputTypeError(
                f"model must be a torch.nn.Module, got {type(model).__name__}; pass the model itself (for a Hub ID, "
                "load it first, e.g. with hf_verifix.hub.load_model)"
            )
        if config is None:
            config = CorrectionConfig()
        if not isinstance(config, CorrectionConfig):
            raise ConfigError(f"config must be a CorrectionConfig, got {type(config).__name__}")
        if overrides:
            config = CorrectionConfig.from_dict({**config.to_dict(), **overrides})
        check_materialised(model)
        self.model = model
        self.config = config
        self.selection: Selection | None = None
        self.projections: dict[str, Projection] = {}
        self.skipped: dict[str, str] = {}
        self.tied: dict[str, list[str]] = {}
        self.layer_rows: dict[str, int] = {}
        self.applied_alpha: float | None = None
        self.search_result: AlphaSearchResult | None = None
        self.timings: dict[str, float] = {}
        self._source: SampleSource | None = None
        self._trusted: torch.Tensor | None = None
        self.last_result: CorrectionResult | None = None
        self._evaluations: tuple[Evaluation, Evaluation] | None = None
        self._state = WeightState(model)  # the original weights, and the model as this corrector last wrote it
        self._selector_name = config.selector

    def __getattr__(self, name: str) -> Any:
        if name in _MOVED:
            raise AttributeError(
                f"ProjectionCorrector.{name} moved out of the corrector (which writes local files only); use "
                f"{_MOVED[name]}"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train_data: Any,
        trusted_indices: Sequence[int] | torch.Tensor | None = None,
        transform: Transform | None = None,
        selector: str | TrustedSelector | None = None,
    ) -> ProjectionCorrector:
        """Select the trusted samples of ``train_data``, collect their activation Grams and decompose them.

        Args:
            train_data: A ``datasets.Dataset``, a torch ``Dataset`` of ``(input, label)`` (e.g. ``TensorDataset``)
                or a ``DataLoader`` built with ``shuffle=False``, labelled as the model was trained (noisy).
            trusted_indices: Skip selection: exactly these samples (indices or a boolean mask) are the trusted set.
            transform: Preprocessing of a ``datasets.Dataset``'s images (default: the model's own).
            selector: A selector object or registered name overriding ``config.selector`` (a name is built with
                ``config.selector_kwargs``).

        Returns:
            ``self``, for chaining.

        Raises:
            LayerError: With ``config.on_uncorrectable == "error"`` (the default), a targeted layer cannot be
                corrected exactly; raised before any data is read, listing every such layer, its reason and the fix.
                Layers never called by the forward pass can only be found after it: they are skipped with a warning.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> model = torch.nn.Linear(4, 2)
            >>> data = TensorDataset(torch.randn(10, 4), torch.randint(0, 2, (10,)))
            >>> corrector = ProjectionCorrector(model, n_trusted=5, progress=False).fit(data, trusted_indices=[0, 3])
            >>> corrector.trusted_indices.tolist()
            [0, 3]
        """
        if self._state.changed_tensors():
            # Trained or edited since the last fit: those weights are the user's newest; fit them, restore nothing.
            logger.info("the model changed since the last fit; fitting its current weights")
        else:
            self.revert()
        self._forget_fit()
        cfg = self.config
        missing = unavailable_device(cfg.statistics_device) if cfg.statistics_device else None
        if missing:
            raise ConfigError(
                f"statistics_device={missing}; pass statistics_device=None (the model's device) or 'cpu'. Nothing was "
                "computed"
            )
        # Before reading any data: a model with layers that cannot be corrected is refused with nothing computed.
        check_image_model(self.model)
        targets = find_target_layers(self.model, cfg.target_modules, cfg.exclude_modules, cfg.on_uncorrectable)
        self.skipped = dict(targets.skipped)
        check_finite_weights(targets.targets)
        source = as_source(train_data, self.model, cfg.batch_size, cfg.image_column, cfg.label_column, transform)
        start = time.perf_counter()
        trusted, self.selection, name = trusted_set(self.model, source, cfg, trusted_indices, selector)
        self._selector_name = name or self._selector_name
        self.timings["selection_s"] = time.perf_counter() - start
        start = time.perf_counter()
        statistics = torch.device(cfg.statistics_device) if cfg.statistics_device else None
        grams = collected_grams(
            self.model,
            source,
            trusted,
            targets.targets,
            statistics,
            cfg.progress,
            cfg.gram_precision,
            cfg.max_rows_per_layer,
            cfg.seed,
        )
        if self.selection is None:  # given trusted indices: their labels were never read (the model is unchanged)
            check_trusted_labels(self.model, source, trusted)
        self.timings["collection_s"] = time.perf_counter() - start
        start = time.perf_counter()
        fitted = fitted_layers(grams, targets, cfg.progress, cfg.solver)
        self.timings["decomposition_s"] = time.perf_counter() - start
        self.projections, self.layer_rows, self.tied = fitted.projections, fitted.rows, fitted.tied
        self.skipped.update(fitted.skipped)
        self._source = source
        self._trusted = trusted
        self._state.keep(self.projections, batchnorm_buffers(self.model))
        return self

    def _forget_fit(self) -> None:
        self.selection = None
        self.projections = {}
        self.tied = {}
        self.layer_rows = {}
        self.search_result = None
        self.last_result = None
        self._evaluations = None
        self._source = None
        self._trusted = None
        self._state.forget()

    def _trusted_labels(self) -> torch.Tensor:
        """The given labels of the trusted samples, in index order (read from the data if nothing scored them).

        Read unsharded: every process needs all of them, and the trusted set is small.
        """
        assert self._source is not None
        known = self.selection.labels if self.selection is not None else None
        return trusted_labels(self._source, self.trusted_indices, known)

    @property
    def trusted_indices(self) -> torch.Tensor:
        """The sorted indices of the trusted samples used by the last ``fit``.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(6, 2), torch.tensor([0, 1] * 3))
            >>> c = ProjectionCorrector(torch.nn.Linear(2, 2), n_trusted=2, progress=False).fit(data)
            >>> c.trusted_indices.numel()
            2
        """
        self._require_fit()
        assert self._trusted is not None
        return self._trusted

    def _require_fit(self) -> None:
        if not self.projections:
            raise VerifixError(
                "this ProjectionCorrector has no statistics yet (fit was not called, or the last fit failed); "
                "call corrector.fit(train_data) before apply, search_alpha, report or save_pretrained"
            )

    # ------------------------------------------------------------------ apply / revert
    def apply(self, alpha: float | None = None) -> nn.Module:
        """Project the targeted weights for ``alpha`` (``config.alpha`` if None), in place; return the model.

        Always projects the *original* weights, so calling it again with another α does not compound.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> model = torch.nn.Linear(3, 2)
            >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
            >>> corrector = ProjectionCorrector(model, n_trusted=4, progress=False).fit(data)
            >>> corrector.apply(alpha=1e4) is model
            True
        """
        self._require_fit()
        value = self.config.alpha if alpha is None else valid_alpha(alpha, "alpha")
        self._state.refuse_if_changed("apply")
        start = time.perf_counter()
        self._project(value, self.config.progress)
        self.timings["update_s"] = time.perf_counter() - start
        return self.model

    def _ready_for(self, n_alphas: int) -> None:
        """Decompose the layers for which that is now cheaper than ``n_alphas`` more solves (solver="auto")."""
        start = time.perf_counter()
        ready = ready_projections(self.projections, n_alphas, self.config.solver, self.config.progress)
        if any(ready[name] is not projection for name, projection in self.projections.items()):
            self.projections = ready
            self.timings["decomposition_s"] = self.timings.get("decomposition_s", 0.0) + time.perf_counter() - start

    def _project(self, alpha: float, progress: bool) -> None:
        self._ready_for(1)
        # Every projected weight is computed and checked before the first is written: a failure changes nothing.
        projected = {name: projection.weight(alpha) for name, projection in self.projections.items()}
        bad = [name for name, weight in projected.items() if not bool(torch.isfinite(weight).all())]
        if bad:
            raise NumericalError(
                f"projecting with alpha={alpha:g} gave NaN/Inf weights in {len(bad)} layer(s), e.g. {bad[:3]}; "
                "nothing was written. Use an alpha of at least 1 (the papers use 1e4 to 1e6), or exclude those "
                "layers with exclude_modules"
            )
        self._state.write(projected, self._state.buffers)
        if self.config.recalibrate_batchnorm:
            device = model_device(self.model)
            assert self._source is not None and self._trusted is not None
            # Every process recalibrates on the whole trusted set: identical statistics, no collective needed.
            batches = self._source.batches(self._trusted, "recalibrating BatchNorm", progress, sharded=False)
            recalibrate_batchnorm(self.model, (b.inputs.to(device) for b in batches))
        self.applied_alpha = alpha
        self._state.mark()

    def revert(self) -> nn.Module:
        """Restore the original weights (and BatchNorm statistics) bit-exactly; return the model.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> model = torch.nn.Linear(3, 2)
            >>> before = model.weight.clone()
            >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
            >>> corrector = ProjectionCorrector(model, n_trusted=2, progress=False).fit(data)
            >>> _ = corrector.apply(alpha=10.0)
            >>> torch.equal(corrector.revert().weight, before)
            True
        """
        self._state.refuse_if_changed("revert")
        self._state.restore()
        self.applied_alpha = None
        if self._state.marked:
            self._state.mark()
        return self.model

    # ------------------------------------------------------------------ α search and evaluation
    def search_alpha(
        self, eval_data: Any, alphas: Sequence[float] | None = None, transform: Transform | None = None
    ) -> AlphaSearchResult:
        """Try each α on ``eval_data`` (labelled like the training data), apply the best, and report the curve.

        The decompositions from ``fit`` are reused for every α. If no α beats the uncorrected model, the original
        weights stay in place and ``best_alpha`` is None.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> model = torch.nn.Linear(3, 2)
            >>> data = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
            >>> corrector = ProjectionCorrector(model, n_trusted=10, progress=False).fit(data)
            >>> result = corrector.search_alpha(data, alphas=[1e2, 1e4])
            >>> sorted(result.curve)
            [100.0, 10000.0]
        """
        self._require_fit()
        grid = self.config.alpha_grid if alphas is None else alpha_candidates(alphas)
        source = self._source_of(eval_data, transform)
        self._state.refuse_if_changed("search_alpha")
        self.revert()
        start = time.perf_counter()
        baseline = self._evaluation(source, None)
        best, best_state = baseline, None
        curve: dict[float, float] = {}
        self._ready_for(len(grid))
        for alpha in progress_bar(grid, "searching α", self.config.progress):
            self._project(alpha, progress=False)
            evaluation = self._evaluation(source, alpha, progress=False)
            curve[alpha] = evaluation.accuracy
            if evaluation.accuracy > best.accuracy:
                best, best_state = evaluation, self._state.snapshot(self.projections)  # kept, not recomputed
        self.revert()
        if best_state is not None:
            self._state.write(best_state["weights"], best_state["buffers"])
            self.applied_alpha = best.alpha
            self._state.mark()
        self.timings["alpha_search_s"] = time.perf_counter() - start
        self.search_result = AlphaSearchResult(best.alpha, best.accuracy, baseline.accuracy, curve)
        self._evaluations = (baseline, best)
        return self.search_result

    def evaluate(self, data: Any, alpha: float | None = None, transform: Transform | None = None) -> Evaluation:
        """Predict ``data`` with the model as it stands, or corrected with ``alpha`` (then put back exactly).

        Args:
            data: Labelled data in any form ``fit`` accepts; scored against the labels it carries.
            alpha: Evaluate the model corrected with this α; the weights and buffers found are restored afterwards,
                even on an error. None: the model as it stands (its ``applied_alpha``, or uncorrected).
            transform: Preprocessing of a ``datasets.Dataset``'s images (default: the model's own).

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,)))
            >>> corrector = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=8, progress=False).fit(data)
            >>> corrector.evaluate(data, alpha=1e4).alpha, corrector.applied_alpha is None
            (10000.0, True)
        """
        source = self._source_of(data, transform)
        if alpha is None:
            return self._evaluation(source, self.applied_alpha)
        self._require_fit()
        value = valid_alpha(alpha, "alpha")
        if value == self.applied_alpha:
            return self._evaluation(source, value)
        with self._as_found("evaluate"):
            self._project(value, self.config.progress)
            return self._evaluation(source, value)

    def correct(
        self,
        train_data: Any,
        eval_data: Any = None,
        *,
        alpha: float | None = None,
        alphas: Sequence[float] | None = None,
        trusted_indices: Sequence[int] | torch.Tensor | None = None,
        transform: Transform | None = None,
        clean_labels: Sequence[int] | torch.Tensor | None = None,
    ) -> CorrectionResult:
        """Fit, choose or apply α, and evaluate before and after: the whole correction, in one call.

        With ``eval_data`` and no ``alpha``, α is searched over ``alphas`` (``config.alpha_grid`` when None) on it
        and the best is applied (none, when no α beats the uncorrected model). Otherwise ``alpha`` (``config.alpha``
        when None) is applied, and with ``eval_data`` the model is scored before and after.

        Args:
            train_data: The training data, labelled as the model was trained (see :meth:`fit`).
            eval_data: Held-out data labelled like the training data (noisy): a clean set would leak into α.
            alpha: A fixed α (no search).
            alphas: The α candidates of the search (needs ``eval_data`` and no ``alpha``).
            trusted_indices: Skip selection: exactly these samples are the trusted set.
            transform: Preprocessing of a ``datasets.Dataset``'s images (default: the model's own).
            clean_labels: The true labels of ``train_data``, when known: the summary then gives the trusted set's
                precision.

        Returns:
            The :class:`~hf_verifix.results.CorrectionResult` (also kept as ``last_result``).

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(24, 3), torch.randint(0, 2, (24,)))
            >>> corrector = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=12, progress=False)
            >>> result = corrector.correct(data, data, alphas=[1e2, 1e4])
            >>> sorted(result.search.curve), result.before.alpha
            ([100.0, 10000.0], None)
        """
        if alphas is not None and (eval_data is None or alpha is not None):
            raise ConfigError(
                "alphas are the candidates of an α search on eval_data; pass eval_data=... and no alpha, or a fixed "
                "alpha=... without alphas"
            )
        value = None if alpha is None else valid_alpha(alpha, "alpha")
        self.fit(train_data, trusted_indices=trusted_indices, transform=transform)
        if eval_data is not None and value is None:
            self.search_alpha(eval_data, alphas, transform)
        else:
            before = self.evaluate(eval_data, transform=transform) if eval_data is not None else None
            self.apply(self.config.alpha if value is None else value)
            after = self.evaluate(eval_data, transform=transform) if eval_data is not None else None
            self._evaluations = (before, after) if before is not None and after is not None else None
        return self.result(clean_labels)

    def result(
        self,
        clean_labels: Sequence[int] | torch.Tensor | None = None,
        eval_data: Any = None,
        transform: Transform | None = None,
    ) -> CorrectionResult:
        """The :class:`~hf_verifix.results.CorrectionResult` of the correction as it stands (kept as ``last_result``).

        Args:
            clean_labels: The true labels of the fitted data, when known: adds the trusted set's precision.
            eval_data: Score the original model and the model as it stands on this data (e.g. a clean test set; the
                weights are put back exactly). None: the evaluations of the last :meth:`correct` or
                :meth:`search_alpha`, if any.
            transform: Preprocessing of a ``datasets.Dataset``'s images (default: the model's own).

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
            >>> c = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
            >>> _ = c.apply(1e4)
            >>> result = c.result(eval_data=data)
            >>> result.alpha, result.before.alpha, result.after.alpha
            (10000.0, None, 10000.0)
        """
        summary = self.report(clean_labels)  # raises if not fitted; validates clean_labels
        before, after = self._evaluations or (None, None)
        if eval_data is not None:
            before, after = self._original_and_current(self._source_of(eval_data, transform))
        self.last_result = CorrectionResult(
            alpha=self.applied_alpha,
            before=before,
            after=after,
            search=self.search_result,
            timings=dict(self.timings),
            summary=summary,
            spectra=Spectra(self.projections),
            model=type(self.model).__name__,
        )
        return self.last_result

    def _original_and_current(self, source: SampleSource) -> tuple[Evaluation, Evaluation | None]:
        """The original model's evaluation and, when corrected, the current one's; the state found is restored."""
        if self.applied_alpha is None:
            return self._evaluation(source, None), None
        after = self._evaluation(source, self.applied_alpha)
        with self._as_found("result"):
            self.revert()
            return self._evaluation(source, None), after

    def _source_of(self, data: Any, transform: Transform | None) -> SampleSource:
        cfg = self.config
        return as_source(data, self.model, cfg.batch_size, cfg.image_column, cfg.label_column, transform)

    def _evaluation(self, source: SampleSource, alpha: float | None, progress: bool = True) -> Evaluation:
        desc = "evaluating (original)" if alpha is None else f"evaluating (α={alpha:g})"
        predictions, labels = predictions_and_labels(self.model, source, self.config.progress and progress, desc)
        return Evaluation(predictions, labels, alpha)

    @contextmanager
    def _as_found(self, action: str) -> Iterator[None]:
        """Run the block, then put the weights, buffers, applied α and timings back exactly as they were found."""
        self._state.refuse_if_changed(action)
        found, alpha, timings = self._state.snapshot(self.projections), self.applied_alpha, dict(self.timings)
        try:
            yield
        finally:
            self._state.write(found["weights"], found["buffers"])
            self.applied_alpha = alpha
            self.timings.clear()
            self.timings.update(timings)
            self._state.mark()  # the state restored is the one the corrector had left

    def report(self, clean_labels: Sequence[int] | torch.Tensor | None = None) -> dict[str, Any]:
        """Return a JSON-serialisable summary: config, trusted set, layers corrected/skipped, α search, timings.

        Args:
            clean_labels: The true labels of the fitted data, when known (noise injected for an experiment): the
                trusted set's precision (fraction truly clean) and class coverage are added.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
            >>> c = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
            >>> c.report()["trusted"]["count"]
            4
        """
        self._require_fit()
        selector = self._selector_name if self.selection is not None else "given (trusted_indices)"
        fitted = FittedLayers(self.projections, self.layer_rows, self.tied, self.skipped)
        trusted = trusted_summary(
            self.trusted_indices, self._trusted_labels(), selector, clean_labels, len(self._source or ())
        )
        trusted["indices"] = self.trusted_indices.tolist()  # with the config: what from_pretrained refits on
        summary = {"config": self.config.to_dict(), "applied_alpha": self.applied_alpha, "trusted": trusted}
        summary.update(layer_summary(fitted, self.timings))
        if self.search_result is not None:
            summary["alpha_search"] = self.search_result.to_dict()
        summary["versions"] = package_versions()
        return summary

    def applied_config(self) -> CorrectionConfig:
        """The configuration as applied: ``config`` with ``alpha`` set to the α the model holds (when corrected).

        It is what :meth:`save_pretrained` writes, so a saved ``correction_config.json`` never shows an α other than
        the one applied (e.g. ``config.alpha`` when a search chose another).

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
            >>> c = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
            >>> c.apply(100.0).weight.shape, c.config.alpha, c.applied_config().alpha
            (torch.Size([2, 3]), 30000.0, 100.0)
        """
        if self.applied_alpha is None:
            return self.config
        return dataclasses.replace(self.config, alpha=self.applied_alpha)

    def save_pretrained(self, save_directory: str | os.PathLike[str], summary: dict[str, Any] | None = None) -> Path:
        """Write the corrected model in its native format, ``correction_config.json`` (the configuration as applied)
        and ``correction_report.json`` (the α applied, the trusted indices, the layers, the library versions): what
        :meth:`from_pretrained` needs to reproduce the correction on the original model.

        transformers models are saved with their own ``save_pretrained`` (safetensors), timm models with
        ``timm.models.save_for_hf`` (loadable by ``timm.create_model("local-dir:...")``), other modules as
        ``model.safetensors``. Files are written to a temporary folder first and moved into place, so an
        interruption never leaves a half-written file.

        Example:
            >>> import tempfile, torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
            >>> c = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
            >>> sorted(p.name for p in c.save_pretrained(tempfile.mkdtemp()).iterdir())
            ['correction_config.json', 'correction_report.json', 'model.safetensors']
        """
        self._require_fit()
        with staged_directory(save_directory) as staging:
            save_model(self.model, staging)
            self.applied_config().save(staging)
            summary = self.report() if summary is None else summary
            (staging / REPORT_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return Path(save_directory)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        save_directory: str | os.PathLike[str],
        train_data: Any,
        transform: Transform | None = None,
    ) -> ProjectionCorrector:
        """Reproduce a saved correction on the *original* (uncorrected) ``model``: refit on the recorded trusted
        samples of ``train_data`` with the saved configuration, and apply the recorded α.

        The same model, data and library versions give the same weights, bit for bit (the saved report lists the
        versions it was made with). Like peft's ``PeftModel.from_pretrained(base_model, folder)``, the folder holds
        what the correction is made of — here its configuration and trusted indices, since SAP's projections come
        from the data.

        Args:
            model: The model as it was before the correction.
            save_directory: A folder written by :meth:`save_pretrained` (or the CLI's ``--output-dir``).
            train_data: The data the correction was fitted on, in the same order.
            transform: Preprocessing of a ``datasets.Dataset``'s images (default: the model's own).

        Raises:
            LoadError: The folder has no saved correction, one saved without trusted indices (by an earlier
                release), or its layers are not the model's.

        Example:
            >>> import tempfile, torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(16, 3), torch.randint(0, 2, (16,)))
            >>> original = torch.nn.Linear(3, 2)
            >>> model = torch.nn.Linear(3, 2)
            >>> model.load_state_dict(original.state_dict())
            <All keys matched successfully>
            >>> folder = tempfile.mkdtemp()
            >>> c = ProjectionCorrector(model, n_trusted=8, progress=False).fit(data)
            >>> _ = c.apply(100.0); _ = c.save_pretrained(folder)
            >>> again = ProjectionCorrector.from_pretrained(original, folder, data)
            >>> again.applied_alpha, torch.equal(original.weight, model.weight)
            (100.0, True)
        """
        folder = Path(save_directory)
        try:
            config = CorrectionConfig.load(folder)
            summary = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
            indices, recorded, alpha = summary["trusted"]["indices"], summary["layers"], summary["applied_alpha"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise LoadError(
                f"{str(folder)!r} holds no reloadable correction ({type(err).__name__}: {err}); pass a folder written "
                f"by ProjectionCorrector.save_pretrained (it needs {CONFIG_NAME} and a {REPORT_NAME} with the "
                "trusted indices; earlier releases did not record them: correct again to save one)"
            ) from err
        corrector = cls(model, config).fit(train_data, trusted_indices=indices, transform=transform)
        if sorted(corrector.projections) != sorted(recorded):
            raise LoadError(
                f"the saved correction corrected the layers {sorted(recorded)[:5]}... ({len(recorded)}), but this "
                f"model gives {sorted(corrector.projections)[:5]}... ({len(corrector.projections)}); pass the model "
                "the correction was made on, in its original (uncorrected) state"
            )
        if alpha is not None:
            corrector.apply(alpha)
        return corrector
