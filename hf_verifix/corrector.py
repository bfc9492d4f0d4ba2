"""ProjectionCorrector: select trusted samples, stream activation Grams, decompose once, project for any α."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import CorrectionConfig, _valid_alpha, unavailable_device
from .data.images import Transform
from .data.source import SampleSource, as_source
from .distributed import broadcast_from_main, is_main_process, process_rank_and_count, sum_across_processes
from .errors import ConfigError, DataError, InputTypeError, LayerError, NumericalError, VerifixError
from .models.forward import evaluation_mode, logits_of, model_device
from .progress import progress_bar
from .projection.batchnorm import batchnorm_layers, recalibrate_batchnorm
from .projection.spectrum import Spectrum, decompose
from .projection.update import LayerProjection
from .selection.base import Selection, TrustedSelector, get_selector, trusted_set_quality
from .staging import staged_directory
from .statistics.gram import collect_grams
from .statistics.layers import find_target_layers

__all__ = ["REPORT_NAME", "AlphaSearchResult", "ProjectionCorrector"]

REPORT_NAME = "correction_report.json"

logger = logging.getLogger(__name__)


@dataclass
class AlphaSearchResult:
    """The outcome of :meth:`ProjectionCorrector.search_alpha`.

    ``best_alpha`` is None when no α beat the uncorrected model (which is then left in place); ``curve`` maps each
    α to its accuracy on the evaluation data.

    Example:
        >>> result = AlphaSearchResult(best_alpha=3e4, best_accuracy=0.9, baseline_accuracy=0.8, curve={3e4: 0.9})
        >>> result.improvement
        0.09999999999999998
    """

    best_alpha: float | None
    best_accuracy: float
    baseline_accuracy: float
    curve: dict[float, float] = field(default_factory=dict)

    @property
    def improvement(self) -> float:
        """Accuracy gained over the uncorrected model on the evaluation data (0 when nothing won).

        Example:
            >>> AlphaSearchResult(None, 0.8, 0.8).improvement
            0.0
        """
        return self.best_accuracy - self.baseline_accuracy


def _as_index_tensor(trusted_indices: Any, size: int) -> torch.Tensor:
    if isinstance(trusted_indices, (str, bytes)):
        raise DataError(
            f"trusted_indices must be integer indices or a boolean mask, got {type(trusted_indices).__name__} "
            f"{trusted_indices!r}; pass e.g. [0, 5, 9] or a tensor of indices"
        )
    try:
        indices = torch.as_tensor(list(trusted_indices) if isinstance(trusted_indices, range) else trusted_indices)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(
            f"trusted_indices must be integer indices or a boolean mask, got {type(trusted_indices).__name__} "
            f"({err}); pass e.g. [0, 5, 9] or a tensor of indices"
        ) from err
    if indices.numel() == 0:
        raise DataError("trusted_indices is empty; pass at least one sample index")
    if indices.dtype == torch.bool:
        if indices.numel() != size:
            raise DataError(f"a boolean trusted mask must have one entry per sample ({size}), got {indices.numel()}")
        indices = torch.nonzero(indices).flatten()
    if indices.is_floating_point() or indices.dim() != 1:
        raise DataError(
            f"trusted_indices must be a 1-D sequence of integer indices, got {tuple(indices.shape)} {indices.dtype}"
        )
    if int(indices.min()) < 0 or int(indices.max()) >= size:
        raise DataError(
            f"trusted_indices must lie in [0, {size}), got values from {int(indices.min())} to {int(indices.max())}"
        )
    unique = torch.unique(indices)
    if unique.numel() != indices.numel():
        raise DataError(f"trusted_indices holds {indices.numel() - unique.numel()} duplicate(s); pass each index once")
    return unique.long()


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
        on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if on_meta:
            raise VerifixError(
                f"the model has {len(on_meta)} tensor(s) on the meta device (no data), e.g. {on_meta[:3]}; "
                "materialise them first (model.to_empty(device='cpu') then load_state_dict, or load the model "
                "without device_map='meta')"
            )
        self.model = model
        self.config = config
        self.selection: Selection | None = None
        self.projections: dict[str, LayerProjection] = {}
        self.skipped: dict[str, str] = {}
        self.tied: dict[str, list[str]] = {}
        self.layer_rows: dict[str, int] = {}
        self.applied_alpha: float | None = None
        self.search_result: AlphaSearchResult | None = None
        self.timings: dict[str, float] = {}
        self._source: SampleSource | None = None
        self._trusted: torch.Tensor | None = None
        self._original_weights: dict[str, torch.Tensor] = {}
        self._original_buffers: dict[str, torch.Tensor] = {}
        self._written: dict[str, tuple[int, int]] = {}
        self._selector_name = config.selector

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
        if self._model_changed():
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
        selection = find_target_layers(self.model, cfg.target_modules, cfg.exclude_modules, cfg.on_uncorrectable)
        self.skipped = dict(selection.skipped)
        _check_finite_weights(selection.targets)
        source = as_source(train_data, self.model, cfg.batch_size, cfg.image_column, cfg.label_column, transform)

        start = time.perf_counter()
        if trusted_indices is None:
            if cfg.n_trusted > len(source):
                raise DataError(
                    f"n_trusted={cfg.n_trusted} is larger than the data ({len(source)} samples); "
                    "lower n_trusted or pass more data"
                )
            chosen = cfg.selector if selector is None else selector
            kwargs = (cfg.selector_kwargs or {}) if isinstance(chosen, str) else {}
            self.selection = get_selector(chosen, **kwargs).select(
                self.model, source, cfg.n_trusted, cfg.per_class, cfg.seed, cfg.progress
            )
            trusted = self.selection.indices
            self._selector_name = chosen if isinstance(chosen, str) else type(chosen).__name__
        else:
            trusted = _as_index_tensor(trusted_indices, len(source))
            self.selection = None
        self.timings["selection_s"] = time.perf_counter() - start

        start = time.perf_counter()
        device = model_device(self.model)
        batches = (b.inputs.to(device) for b in source.batches(trusted, "collecting Grams", cfg.progress))
        # On the model's device by default: no float64 rows cross to the host, and eigh runs there too.
        statistics = torch.device(cfg.statistics_device) if cfg.statistics_device else device
        grams = collect_grams(self.model, selection.targets, batches, device=statistics)
        if self.selection is None:  # given trusted indices: their labels were never read (the model is unchanged)
            _check_trusted_labels(self.model, source, trusted)
        self.timings["collection_s"] = time.perf_counter() - start

        start = time.perf_counter()
        self.projections = {}
        self.layer_rows = {}
        self.tied = {}
        # Each Gram is dropped once decomposed, so peak memory stays near max(Σ Grams, Σ eigenvectors).
        for name in progress_bar(list(grams), "decomposing", cfg.progress, leave=False):
            stats = grams.pop(name)
            # Each process summed its own shard; one all-reduce per layer, after the data loop.
            stats.gram = sum_across_processes(stats.gram)
            stats.rows = int(sum_across_processes(torch.tensor([stats.rows]))[0])
            reason = None
            if stats.rows == 0:
                reason = "never called during the forward pass (its parent may use its weight directly)"
            elif not bool((stats.gram.diagonal(dim1=-2, dim2=-1).sum(-1) > 0).all()):
                reason = "its inputs on the trusted samples are all zero, so they span no direction to project onto"
            tied = selection.tied.get(name, [])
            if reason:
                self.skipped[name] = reason
                self.skipped.update(dict.fromkeys(tied, f"shares its weight with {name!r}, which was skipped"))
                continue
            # A weight shared by several layers gets the Gram of every row it multiplies (gram_hooks summed them).
            weight = selection.targets[name].weight
            assert isinstance(weight, torch.Tensor)
            self.projections[name] = LayerProjection(weight, _decomposed_once(stats.gram, name))
            self.layer_rows[name] = stats.rows
            if tied:
                self.tied[name] = list(tied)
        self.timings["decomposition_s"] = time.perf_counter() - start
        if not self.projections:
            reasons = "; ".join(f"{n!r}: {r}" for n, r in self.skipped.items())
            raise LayerError(
                f"no layer could be corrected ({reasons}); check that the trusted samples reach the targeted layers "
                "(a non-empty trusted set, inputs that are not all zero) or target other layers with target_modules"
            )
        if self.skipped:
            warnings.warn(
                f"leaving {len(self.skipped)} layer(s) uncorrected: "
                + "; ".join(f"{n!r}: {r}" for n, r in self.skipped.items()),
                UserWarning,
                stacklevel=2,
            )
        modules = dict(self.model.named_modules())
        self._original_weights = {n: modules[n].weight.detach().clone() for n in self.projections}
        self._original_buffers = {
            f"{prefix}.{n}" if prefix else n: b.detach().clone()
            for prefix, layer in self._batchnorm_layers_by_name().items()
            for n, b in layer.named_buffers(recurse=False)
        }
        self._source = source
        self._trusted = trusted
        self._mark_written()
        return self

    def _forget_fit(self) -> None:
        self.selection = None
        self.projections = {}
        self.tied = {}
        self.layer_rows = {}
        self.search_result = None
        self._source = None
        self._trusted = None
        self._original_weights = {}
        self._original_buffers = {}
        self._written = {}

    def _model_state(self) -> dict[str, tuple[int, int]]:
        """Each parameter's and buffer's identity and in-place version counter (bumped by every in-place write)."""
        tensors = [*self.model.named_parameters(remove_duplicate=False), *self.model.named_buffers()]
        return {name: (id(t), _version(t)) for name, t in tensors}

    def _mark_written(self) -> None:
        """Record the model's state as this corrector left it (after fit, apply, revert or a report's restore)."""
        self._written = self._model_state()

    def _model_changed(self) -> bool:
        """Whether anything changed the model's parameters or buffers since this corrector last wrote them."""
        return bool(self._written) and self._model_state() != self._written

    def _refuse_if_changed(self, action: str) -> None:
        if not self._model_changed():
            return
        now = self._model_state()
        changed = sorted(n for n in set(now) | set(self._written) if now.get(n) != self._written.get(n))
        raise VerifixError(
            f"{action} would overwrite the model's current weights with the copy taken at fit time, but the model "
            f"changed since (e.g. trained or edited): {len(changed)} tensor(s) differ, e.g. {changed[:3]}. Nothing "
            "was written. Call corrector.fit(train_data) again to correct the current weights"
        )

    def _batchnorm_layers_by_name(self) -> dict[str, nn.Module]:
        layers = set(map(id, batchnorm_layers(self.model)))
        return {n: m for n, m in self.model.named_modules() if id(m) in layers}

    def _trusted_labels(self) -> torch.Tensor:
        """The given labels of the trusted samples, in index order (read from the data if nothing scored them).

        Read unsharded: every process needs all of them, and the trusted set is small.
        """
        assert self._source is not None
        known = self.selection.labels if self.selection is not None else None
        return _labels_of(self._source, self.trusted_indices, known)

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
        value = self.config.alpha if alpha is None else _valid_alpha(alpha, "alpha")
        self._refuse_if_changed("apply")
        start = time.perf_counter()
        self._project(value, self.config.progress)
        self.timings["update_s"] = time.perf_counter() - start
        return self.model

    def _project(self, alpha: float, progress: bool) -> None:
        modules = dict(self.model.named_modules())
        # Every projected weight is computed and checked before the first is written: a failure changes nothing.
        projected = {name: projection.weight(alpha) for name, projection in self.projections.items()}
        bad = [name for name, weight in projected.items() if not bool(torch.isfinite(weight).all())]
        if bad:
            raise NumericalError(
                f"projecting with alpha={alpha:g} gave NaN/Inf weights in {len(bad)} layer(s), e.g. {bad[:3]}; "
                "nothing was written. Use an alpha of at least 1 (the papers use 1e4 to 1e6), or exclude those "
                "layers with exclude_modules"
            )
        with torch.no_grad():
            for name, weight in projected.items():
                target = modules[name].weight
                target.copy_(weight.to(target.device))
        self._restore_buffers()
        if self.config.recalibrate_batchnorm:
            device = model_device(self.model)
            assert self._source is not None and self._trusted is not None
            # Every process recalibrates on the whole trusted set: identical statistics, no collective needed.
            batches = self._source.batches(self._trusted, "recalibrating BatchNorm", progress, sharded=False)
            recalibrate_batchnorm(self.model, (b.inputs.to(device) for b in batches))
        self.applied_alpha = alpha
        self._mark_written()

    def _restore_buffers(self) -> None:
        buffers = dict(self.model.named_buffers())
        with torch.no_grad():
            for name, original in self._original_buffers.items():
                buffers[name].copy_(original)

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
        self._refuse_if_changed("revert")
        modules = dict(self.model.named_modules())
        with torch.no_grad():
            for name, original in self._original_weights.items():
                modules[name].weight.copy_(original)
        self._restore_buffers()
        self.applied_alpha = None
        if self._written:
            self._mark_written()
        return self.model

    # ------------------------------------------------------------------ α search
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
        grid = self.config.alpha_grid if alphas is None else _alpha_candidates(alphas)
        cfg = self.config
        source = as_source(eval_data, self.model, cfg.batch_size, cfg.image_column, cfg.label_column, transform)
        self._refuse_if_changed("search_alpha")
        self.revert()
        start = time.perf_counter()
        from .metrics import source_accuracy  # imports `evaluate` (seconds), so only when α is searched

        baseline = source_accuracy(self.model, source, cfg.progress)
        curve: dict[float, float] = {}
        for alpha in progress_bar(grid, "searching α", cfg.progress):
            self._project(alpha, progress=False)
            curve[alpha] = source_accuracy(self.model, source)
        self.revert()
        best_alpha, best_accuracy = None, baseline
        for alpha, accuracy in curve.items():
            if accuracy > best_accuracy:
                best_alpha, best_accuracy = alpha, accuracy
        if best_alpha is not None:
            self._project(best_alpha, progress=False)
        self.timings["alpha_search_s"] = time.perf_counter() - start
        self.search_result = AlphaSearchResult(best_alpha, best_accuracy, baseline, curve)
        return self.search_result

    # ------------------------------------------------------------------ report / save
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
        trusted = self.trusted_indices
        summary: dict[str, Any] = {
            "config": self.config.to_dict(),
            "applied_alpha": self.applied_alpha,
            "trusted": {
                "count": int(trusted.numel()),
                "selector": self._selector_name if self.selection is not None else "given (trusted_indices)",
            },
            "layers": {
                name: {
                    "rows": self.layer_rows[name],
                    "decomposition": p.spectrum.method,
                    "dim": int(p.spectrum.eigenvalues.shape[-1]),
                    "groups": int(p.spectrum.eigenvalues.shape[0]),
                    "shared_with": list(self.tied.get(name, [])),
                }
                for name, p in self.projections.items()
            },
            "skipped_layers": dict(self.skipped),
            "timings_s": dict(self.timings),
        }
        given = self._trusted_labels()
        summary["trusted"]["class_counts"] = torch.bincount(given).tolist()
        if clean_labels is not None:
            clean = torch.as_tensor(clean_labels).long().reshape(-1)
            if clean.numel() != len(self._source or ()):
                raise DataError(
                    f"clean_labels must hold one label per fitted sample ({len(self._source or ())}), got "
                    f"{clean.numel()}; pass the true labels of the data given to fit"
                )
            summary["trusted"].update(trusted_set_quality(given, clean[trusted]))
        if self.search_result is not None:
            result = asdict(self.search_result)
            result["curve"] = {str(a): acc for a, acc in self.search_result.curve.items()}
            summary["alpha_search"] = result
        return summary

    def write_report(
        self,
        output_dir: str | os.PathLike[str],
        eval_data: Any = None,
        clean_labels: Sequence[int] | torch.Tensor | None = None,
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Path:
        """Write a Markdown + PNG report of this correction and return the path of its ``report.md``.

        The report holds the α curve, per-class accuracy and confusion matrices on ``eval_data`` before and after,
        the trusted set's classes (and precision with ``clean_labels``), layer spectra and wall times; see
        :func:`hf_verifix.report.write_correction_report`.

        Needs matplotlib (``pip install hf_verifix[report]``). The model is left exactly as it was.

        Example:
            >>> import tempfile, torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
            >>> c = ProjectionCorrector(torch.nn.Sequential(torch.nn.Linear(3, 2)), n_trusted=8, progress=False)
            >>> _ = c.fit(data).search_alpha(data, alphas=[10.0, 1e4])
            >>> c.write_report(tempfile.mkdtemp(), eval_data=data).name
            'report.md'
        """
        from .report import write_correction_report

        return write_correction_report(
            self, output_dir, eval_data=eval_data, clean_labels=clean_labels, class_names=class_names, **kwargs
        )

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> Path:
        """Write the corrected model in its native format, ``correction_config.json`` and ``correction_report.json``.

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
            self.config.save(staging)
            (staging / REPORT_NAME).write_text(json.dumps(self.report(), indent=2) + "\n", encoding="utf-8")
        return Path(save_directory)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        card_info: Any = None,
        processor: Any = None,
        private: bool | None = None,
        overwrite: bool = False,
        token: str | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Save the corrected model with its model card and push it to the Hub model repo ``repo_id`` in one commit.

        :func:`hf_verifix.hub.save_corrected` writes the model, config, report and card to a temporary folder and
        :func:`hf_verifix.hub.push_folder` uploads it (nothing on the repo is replaced without ``overwrite``); if the
        push fails, that folder is kept and the error names it.
        ``card_info`` defaults to a :class:`~hf_verifix.model_card.CardInfo` named after the repo; the card's
        before/after accuracies then come from :meth:`search_alpha`. Returns the commit URL ("" on other processes).

        Raises:
            HubError: Unreachable Hub, refused token, offline mode, or files that would be replaced.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> data = TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
            >>> corrector = ProjectionCorrector(torch.nn.Linear(3, 2), n_trusted=4, progress=False).fit(data)
            >>> corrector.push_to_hub("me/linear-sap")  # doctest: +SKIP
            'https://huggingface.co/me/linear-sap/commit/...'
        """
        import shutil
        import tempfile

        from .hub import is_repo_id, push_folder, save_corrected
        from .model_card import CardInfo

        if not isinstance(repo_id, str) or not is_repo_id(repo_id):
            raise ConfigError(
                f"repo_id must be a Hub repo ID such as 'me/model-sap' (letters, digits, '-', '_', '.'; at most one "
                f"'/'), got {repo_id!r}; nothing was written"
            )
        self._require_fit()
        if not is_main_process():  # only the main process writes and pushes
            return ""
        info = card_info if card_info is not None else CardInfo(model_name=repo_id.split("/")[-1], repo_id=repo_id)
        scratch = Path(tempfile.mkdtemp(prefix="hf_verifix_push_"))
        folder = scratch / repo_id.split("/")[-1]
        save_corrected(self, folder, processor=processor, card_info=info)
        url = push_folder(
            folder, repo_id, overwrite=overwrite, private=private, token=token, commit_message=commit_message
        )
        shutil.rmtree(scratch, ignore_errors=True)  # kept when the push fails: its error names the folder to retry
        return url


def _version(tensor: torch.Tensor) -> int:
    try:
        return int(tensor._version)
    except RuntimeError:  # an inference-mode tensor keeps no version counter
        return -1


def _weight_of(layer: nn.Module) -> torch.Tensor:
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return weight


def _check_finite_weights(targets: dict[str, nn.Module]) -> None:
    """Refuse layers whose weights already hold NaN/Inf: a projection would spread them over the whole row."""
    bad = [name for name, layer in targets.items() if not bool(torch.isfinite(_weight_of(layer)).all())]
    if bad:
        raise NumericalError(
            f"the weights of {len(bad)} targeted layer(s) hold NaN or Inf before any correction, e.g. {bad[:3]}; "
            "the projection mixes every input direction, so it would spread them. Fix the model (reload a good "
            "checkpoint) or leave those layers out with exclude_modules. Nothing was computed"
        )


def _labels_of(source: SampleSource, trusted: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """The given labels of the ``trusted`` samples, in index order: from ``known`` or the source's labels when it
    has them, else read from the data (unsharded: every process needs all of them, and the trusted set is small)."""
    known = known if known is not None else getattr(source, "labels", None)
    if known is not None:
        return known[trusted]
    return torch.cat([batch.labels for batch in source.batches(trusted, sharded=False)])


def _check_trusted_labels(model: nn.Module, source: SampleSource, trusted: torch.Tensor) -> None:
    """Refuse trusted samples whose labels are not classes of the model (read unsharded: the set is small)."""
    labels = _labels_of(source, trusted)
    with evaluation_mode(model), torch.no_grad():  # one sample for the class count (the Grams' pass ran them all)
        first = next(source.batches(trusted[:1], sharded=False)).inputs.to(model_device(model))
        num_classes = int(logits_of(model(first)).shape[-1])
    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        raise DataError(
            f"the labels of trusted samples {trusted[bad][:5].tolist()} are {labels[bad][:5].tolist()}, but the model "
            f"has {num_classes} classes (labels 0..{num_classes - 1}); remap the labels to the model's classes (e.g. "
            "datasets' align_labels_with_mapping with the model's label2id) or drop those samples from "
            "trusted_indices. Nothing was changed"
        )


def _decomposed_once(gram: torch.Tensor, name: str) -> Spectrum:
    """Decompose on the main process only and share the result, so every process projects identically."""
    rank, world = process_rank_and_count()
    if world == 1:
        return decompose(gram, name)
    values = torch.zeros(gram.shape[:-1], dtype=torch.float64)
    vectors = torch.zeros(gram.shape, dtype=torch.float64)
    status = torch.zeros(2, dtype=torch.long)  # [failed, used the SVD fallback]
    error: NumericalError | None = None
    if rank == 0:
        try:
            spectrum = decompose(gram, name)
            values, vectors = spectrum.eigenvalues.cpu(), spectrum.eigenvectors.cpu()
            status[1] = int(spectrum.method == "svd")
        except NumericalError as err:
            error, status[0] = err, 1
    status = broadcast_from_main(status)
    if status[0]:
        raise error or NumericalError(f"the main process could not decompose the Gram of layer {name!r}")
    values, vectors = broadcast_from_main(values), broadcast_from_main(vectors)
    return Spectrum(values.to(gram.device), vectors.to(gram.device), "svd" if status[1] else "eigh")


def _alpha_candidates(alphas: Any) -> tuple[float, ...]:
    if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__iter__"):
        raise ConfigError(f"alphas must be a list of numbers > 0 such as [1e3, 3e4, 1e6], got {alphas!r}")
    candidates = tuple(_valid_alpha(a, "every entry of alphas") for a in alphas)
    if not candidates:
        raise ConfigError(
            "alphas is empty; pass at least one α such as [1e3, 3e4, 1e6], or None for config.alpha_grid"
        )
    return candidates


def save_model(model: nn.Module, directory: Path) -> None:
    """Save ``model`` in its native format into ``directory`` (transformers, timm, or plain safetensors).

    Example:
        >>> import tempfile, torch
        >>> folder = Path(tempfile.mkdtemp())
        >>> save_model(torch.nn.Linear(2, 2), folder)
        >>> [p.name for p in folder.iterdir()]
        ['model.safetensors']
    """
    save_pretrained = getattr(model, "save_pretrained", None)
    if callable(save_pretrained) and hasattr(model, "config"):
        save_pretrained(directory)
        return
    if getattr(model, "pretrained_cfg", None) is not None:
        from timm.models import save_for_hf

        save_for_hf(model, str(directory), safe_serialization=True)
        return
    from safetensors.torch import save_model as save_safetensors

    save_safetensors(model, str(directory / "model.safetensors"))
