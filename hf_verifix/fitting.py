"""Fitting the projections: stream the trusted samples' activation Grams, sum them across processes, decompose.

What :meth:`ProjectionCorrector.fit` does once the trusted set is known, as functions of the model and the data.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from hf_verifix.data.source import SampleSource
    >>> from hf_verifix.statistics.layers import find_target_layers
    >>> model = torch.nn.Linear(3, 2)
    >>> source = SampleSource(TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,))))
    >>> targets = find_target_layers(model)
    >>> grams = collected_grams(model, source, torch.arange(8), targets.targets)
    >>> fitted_layers(grams, targets).rows
    {'': 8}
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._validation import trusted_index_tensor
from .config import CorrectionConfig
from .data.source import SampleSource
from .errors import DataError, LayerError, NumericalError
from .models.forward import evaluation_mode, logits_of, model_device
from .projection.solve import Projection, SolvedProjection, eigh_pays
from .projection.spectrum import decompose_on_main
from .projection.update import LayerProjection
from .selection.base import Selection, TrustedSelector, get_selector, trusted_set_quality
from .statistics.gram import LayerGram, collect_grams, summed_across_processes
from .statistics.layers import LayerSelection
from .utils.progress import progress_bar

__all__ = [
    "FittedLayers",
    "check_finite_weights",
    "check_trusted_labels",
    "collected_grams",
    "fitted_layers",
    "layer_summary",
    "ready_projections",
    "trusted_labels",
    "trusted_set",
    "trusted_summary",
]


@dataclass
class FittedLayers:
    """Each corrected layer's projection, the rows its Gram summed, the layers sharing its weight, and the skipped.

    Example:
        >>> FittedLayers().projections
        {}
    """

    projections: dict[str, Projection] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    tied: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def trusted_set(
    model: nn.Module,
    source: SampleSource,
    config: CorrectionConfig,
    trusted_indices: Any = None,
    selector: str | TrustedSelector | None = None,
) -> tuple[torch.Tensor, Selection | None, str | None]:
    """The trusted indices, the selection that chose them (None when given) and the selector's name.

    Given ``trusted_indices`` (indices or a boolean mask) are checked; otherwise ``selector`` (default
    ``config.selector``, a name built with ``config.selector_kwargs``) scores every sample.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from hf_verifix.config import CorrectionConfig
        >>> source = SampleSource(TensorDataset(torch.randn(6, 2), torch.tensor([0, 1] * 3)))
        >>> indices, selection, name = trusted_set(nn.Linear(2, 2), source, CorrectionConfig(n_trusted=2))
        >>> indices.numel(), name
        (2, 'loss')
    """
    if trusted_indices is not None:
        return trusted_index_tensor(trusted_indices, len(source)), None, None
    if config.n_trusted > len(source):
        raise DataError(
            f"n_trusted={config.n_trusted} is larger than the data ({len(source)} samples); "
            "lower n_trusted or pass more data"
        )
    chosen = config.selector if selector is None else selector
    kwargs = (config.selector_kwargs or {}) if isinstance(chosen, str) else {}
    selection = get_selector(chosen, **kwargs).select(
        model, source, config.n_trusted, config.per_class, config.seed, config.progress
    )
    return selection.indices, selection, chosen if isinstance(chosen, str) else type(chosen).__name__


def collected_grams(
    model: nn.Module,
    source: SampleSource,
    trusted: torch.Tensor,
    targets: dict[str, nn.Module],
    device: torch.device | None = None,
    progress: bool = False,
    precision: str = "float64",
    max_rows: int | None = None,
    seed: int = 0,
) -> dict[str, LayerGram]:
    """This process's share of every targeted layer's input Gram over the ``trusted`` samples (not yet summed).

    ``device``: where the float64 Grams live (default: the model's device, so no rows cross to the host);
    ``precision``: the dtype of each chunk's product (``CorrectionConfig.gram_precision``); ``max_rows``: keep
    about that many rows per layer, ``max_rows // len(trusted)`` positions of each image (``max_rows_per_layer``).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = SampleSource(TensorDataset(torch.ones(2, 2), torch.zeros(2, dtype=torch.long)))
        >>> layer = torch.nn.Linear(2, 1)
        >>> collected_grams(layer, data, torch.arange(2), {"": layer})[""].gram.tolist()
        [[[2.0, 2.0], [2.0, 2.0]]]
    """
    on = model_device(model)
    batches = (b.inputs.to(on) for b in source.batches(trusted, "collecting Grams", progress))
    positions = None if max_rows is None else max(1, max_rows // max(1, trusted.numel()))
    return collect_grams(model, targets, batches, device or on, precision, positions, seed)


def fitted_layers(
    grams: dict[str, LayerGram], targets: LayerSelection, progress: bool = False, solver: str = "eigh"
) -> FittedLayers:
    """Sum each Gram across processes and build the layer's projection; skip layers with no statistics.

    ``solver="eigh"`` decomposes each Gram now (dropping it once decomposed, so peak memory stays near
    max(Σ Grams, Σ eigenvectors)); ``"cholesky"`` and ``"auto"`` keep the Gram and solve per α
    (:class:`~.projection.solve.SolvedProjection`; see :func:`ready_projections`).

    Raises:
        LayerError: No layer could be corrected.

    Example:
        >>> FittedLayers().skipped
        {}
    """
    fitted = FittedLayers()
    for name in progress_bar(list(grams), "decomposing", progress, leave=False):
        stats = summed_across_processes(grams.pop(name))  # one all-reduce per layer, after the data loop
        tied = targets.tied.get(name, [])
        reason = _unprojectable(stats)
        if reason:
            fitted.skipped[name] = reason
            fitted.skipped.update(dict.fromkeys(tied, f"shares its weight with {name!r}, which was skipped"))
            continue
        # A weight shared by several layers gets the Gram of every row it multiplies (gram_hooks summed them).
        weight = _weight_of(targets.targets[name])
        projection: Projection = (
            LayerProjection(weight, decompose_on_main(stats.gram, name))
            if solver == "eigh"
            else SolvedProjection(weight, stats.gram)
        )
        fitted.projections[name] = projection
        fitted.rows[name] = stats.rows
        if tied:
            fitted.tied[name] = list(tied)
    skipped = {**targets.skipped, **fitted.skipped}
    if not fitted.projections:
        reasons = "; ".join(f"{n!r}: {r}" for n, r in skipped.items())
        raise LayerError(
            f"no layer could be corrected ({reasons}); check that the trusted samples reach the targeted layers "
            "(a non-empty trusted set, inputs that are not all zero) or target other layers with target_modules"
        )
    if skipped:
        warnings.warn(
            f"leaving {len(skipped)} layer(s) uncorrected: " + "; ".join(f"{n!r}: {r}" for n, r in skipped.items()),
            UserWarning,
            stacklevel=3,
        )
    return fitted


def ready_projections(
    projections: dict[str, Projection], n_alphas: int, solver: str, progress: bool = False
) -> dict[str, Projection]:
    """The projections to try ``n_alphas`` more α values with: under ``solver="auto"``, each layer whose solves
    (those made so far and these) would cost more than one eigendecomposition is decomposed now (:func:`eigh_pays`);
    otherwise they are returned as they are.

    Example:
        >>> rows = torch.randn(20, 3, dtype=torch.float64)
        >>> solved = {"fc": SolvedProjection(torch.randn(2, 3), (rows.T @ rows)[None])}
        >>> ready_projections(solved, n_alphas=1, solver="auto")["fc"].method
        'cholesky'
        >>> ready_projections(solved, n_alphas=50, solver="auto")["fc"].method
        'eigh'
    """
    if solver != "auto":
        return projections
    ready: dict[str, Projection] = {}
    for name in progress_bar(list(projections), "decomposing", progress, leave=False):
        projection = projections[name]
        if isinstance(projection, SolvedProjection) and _decomposition_pays(projection, n_alphas):
            projection = projection.eigendecomposed(name)
        ready[name] = projection
    return ready


def _decomposition_pays(projection: SolvedProjection, n_alphas: int) -> bool:
    solves = projection.solves + n_alphas  # those made so far count: each apply after a search is one more
    return projection.has_eigendecomposition or eigh_pays(projection.dim, projection.out, solves)


def _weight_of(layer: nn.Module) -> torch.Tensor:
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return weight


def layer_summary(fitted: FittedLayers, timings: dict[str, float]) -> dict[str, Any]:
    """The JSON summary of a fit's corrected and skipped layers, and of its phase timings.

    Example:
        >>> list(layer_summary(FittedLayers(), {}))
        ['layers', 'skipped_layers', 'timings_s']
    """
    layers = {
        name: {
            "rows": fitted.rows[name],
            "decomposition": p.method,
            "dim": p.dim,
            "groups": p.groups,
            "shared_with": list(fitted.tied.get(name, [])),
        }
        for name, p in fitted.projections.items()
    }
    return {
        "layers": layers,
        "skipped_layers": dict(fitted.skipped),
        "timings_s": dict(timings),
    }


def trusted_summary(
    trusted: torch.Tensor,
    given: torch.Tensor,
    selector: str,
    clean_labels: Any = None,
    size: int = 0,
) -> dict[str, Any]:
    """The trusted set in the summary: count, selector, class counts; with the fitted data's ``clean_labels`` (one
    per sample of the ``size`` fitted), its precision and class coverage too.

    Example:
        >>> trusted_summary(torch.tensor([0, 2]), torch.tensor([1, 1]), "loss")["class_counts"]
        [0, 2]
    """
    summary: dict[str, Any] = {"count": int(trusted.numel()), "selector": selector}
    summary["class_counts"] = torch.bincount(given).tolist()
    if clean_labels is not None:
        clean = torch.as_tensor(clean_labels).long().reshape(-1)
        if clean.numel() != size:
            raise DataError(
                f"clean_labels must hold one label per fitted sample ({size}), got {clean.numel()}; pass the true "
                "labels of the data given to fit"
            )
        summary.update(trusted_set_quality(given, clean[trusted]))
    return summary


def check_finite_weights(targets: dict[str, nn.Module]) -> None:
    """Refuse layers whose weights already hold NaN/Inf: a projection would spread them over the whole row.

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> _ = torch.nn.init.constant_(layer.weight, float("nan"))
        >>> check_finite_weights({"fc": layer})
        Traceback (most recent call last):
        ...
        hf_verifix.errors.NumericalError: the weights of 1 targeted layer(s) hold NaN or Inf ...
    """
    bad = [name for name, layer in targets.items() if not bool(torch.isfinite(_weight_of(layer)).all())]
    if bad:
        raise NumericalError(
            f"the weights of {len(bad)} targeted layer(s) hold NaN or Inf before any correction, e.g. {bad[:3]}; "
            "the projection mixes every input direction, so it would spread them. Fix the model (reload a good "
            "checkpoint) or leave those layers out with exclude_modules. Nothing was computed"
        )


def trusted_labels(source: SampleSource, trusted: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """The given labels of the ``trusted`` samples, in index order: from ``known`` or the source's labels when it
    has them, else read from the data (unsharded: every process needs all of them, and the trusted set is small).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(4, 2), torch.tensor([0, 1, 1, 0])))
        >>> trusted_labels(source, torch.tensor([1, 3])).tolist()
        [1, 0]
    """
    known = known if known is not None else getattr(source, "labels", None)
    if known is not None:
        return known[trusted]
    return torch.cat([batch.labels for batch in source.batches(trusted, sharded=False)])


def check_trusted_labels(model: nn.Module, source: SampleSource, trusted: torch.Tensor) -> None:
    """Refuse trusted samples whose labels are not classes of the model (read unsharded: the set is small).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(4, 2), torch.tensor([0, 1, 5, 0])))
        >>> check_trusted_labels(torch.nn.Linear(2, 2), source, torch.tensor([0, 1]))  # labels 0 and 1: fine
    """
    labels = trusted_labels(source, trusted)
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


def _unprojectable(stats: LayerGram) -> str | None:
    """Why a layer's summed statistics give nothing to project onto (None: they do)."""
    if stats.rows == 0:
        return "never called during the forward pass (its parent may use its weight directly)"
    if not bool((stats.gram.diagonal(dim1=-2, dim2=-1).sum(-1) > 0).all()):
        return "its inputs on the trusted samples are all zero, so they span no direction to project onto"
    return None
