"""Trusted samples as CRUST coresets: per-class medoids of the samples' gradients (Mirzasoleiman et al., 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..algorithms.facility_location import Similarity, greedy_medoids, nearest_medoids
from ..data.source import Batch, SampleSource
from ..errors import ConfigError, DataError, LayerError, NumericalError
from ..models.forward import evaluation_mode, model_device
from ..utils.distributed import max_across_processes, sum_across_processes
from ._validation import checked_logits
from .base import Selection, lowest_scores, register_selector
from .selector import SampleScores, ScoringSelector

__all__ = ["CoresetSelector", "gradient_proxies"]

Gradient = Literal["last_layer", "logits"]


class _LastLinear:
    """Forward hooks on every nn.Linear that remember the last one to run, with its input and output."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {module: name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        self.last: tuple[nn.Linear, torch.Tensor, torch.Tensor] | None = None
        self.handles = [module.register_forward_hook(self._hook) for module in self.names]

    def _hook(self, module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if (
            isinstance(module, nn.Linear)
            and args
            and isinstance(args[0], torch.Tensor)
            and isinstance(output, torch.Tensor)
        ):
            self.last = (module, args[0].detach(), output.detach())

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def gradient_proxies(
    model: nn.Module, source: SampleSource, gradient: Gradient = "last_layer", progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, int]:
    """Return the per-sample gradient factors ``(E, H, labels, num_classes)`` of the cross-entropy, in eval mode.

    E = softmax(z) - onehot(y) is the gradient of the loss w.r.t. the logits z (CRUST's cheap bound, eq. 9). With
    ``gradient="last_layer"``, H holds the inputs h of the model's final ``nn.Linear`` (the penultimate features,
    with a column of ones appended when that layer has a bias), so the gradient of the loss w.r.t. that layer's
    weight and bias is the outer product E_i ⊗ H_i; with ``"logits"``, H is None. Both are float32 CPU tensors of
    n × K and n × (D + 1) values (about 4 n (K + D) bytes).

    Assumption: the final layer is the LAST ``nn.Linear`` to run in the forward pass, applied to one (batch, D)
    input, and its output has the logits' shape (true of timm and transformers classifiers: their head is a Linear
    on pooled features). A model whose logits do not come out of such a layer raises a LayerError.

    Raises:
        LayerError: ``gradient="last_layer"`` and no nn.Linear runs, or the last one does not produce the logits.
        DataError: Labels outside [0, K) or logits not of shape (batch, K).
        NumericalError: Non-finite logits or features.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> source = SampleSource(TensorDataset(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])))
        >>> e, h, labels, k = gradient_proxies(model, source)
        >>> tuple(e.shape), tuple(h.shape), k
        ((5, 3), (5, 7), 3)
    """
    if gradient not in ("last_layer", "logits"):
        raise ConfigError(f"gradient must be 'last_layer' or 'logits', got {gradient!r}")
    device = model_device(model)
    n = len(source)
    errors: torch.Tensor | None = None
    features: torch.Tensor | None = None
    # Zero-filled so that, with several processes, summing the shards' tensors gathers every sample once.
    labels = torch.zeros(n, dtype=torch.long)
    num_classes = 0
    tracker = _LastLinear(model) if gradient == "last_layer" else None
    try:
        with evaluation_mode(model), torch.no_grad():
            for batch in source.batches(desc="scoring (coreset)", progress=progress):
                error, h, num_classes = _batch_proxies(model, batch, device, tracker)
                if errors is None:
                    errors = torch.zeros(n, num_classes, dtype=torch.float32)
                errors[batch.indices] = error
                labels[batch.indices] = batch.labels
                if h is not None:
                    if features is None:
                        features = torch.zeros(n, h.shape[1], dtype=torch.float32)
                    features[batch.indices] = h.float()
    finally:
        if tracker is not None:
            tracker.remove()
    if errors is None:
        raise DataError("the data is empty; pass at least one labelled sample")
    if features is not None:
        features = sum_across_processes(features)
    return sum_across_processes(errors), features, sum_across_processes(labels), max_across_processes(num_classes)


def _batch_proxies(
    model: nn.Module, batch: Batch, device: torch.device, tracker: _LastLinear | None
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Return ``batch``'s rows of E (float32, CPU), of H (None without ``tracker``) and the class count."""
    if tracker is not None:
        tracker.last = None
    logits = checked_logits(model, batch.inputs.to(device), batch)
    if not torch.isfinite(logits).all():
        raise NumericalError(
            f"the logits of some of samples {batch.indices[:5].tolist()}... are NaN/Inf; check the inputs "
            "and the model's numerics (e.g. float16 overflow) before selecting"
        )
    error = torch.softmax(logits, dim=1)
    error[torch.arange(batch.labels.shape[0]), batch.labels.to(error.device)] -= 1.0
    error = error.cpu().float()  # float32 proxies, whatever the model's dtype
    return error, None if tracker is None else _penultimate(tracker, model, logits), logits.shape[1]


def _penultimate(tracker: _LastLinear, model: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Return the captured input of the final Linear (with a ones column for its bias) as float32 CPU rows."""
    if tracker.last is None:
        raise LayerError(
            f"gradient='last_layer' needs the model's final layer to be an nn.Linear, but no nn.Linear ran in "
            f"the forward pass of {type(model).__name__}; use gradient='logits' (CRUST's cheaper bound)"
        )
    module, inputs, output = tracker.last
    name = tracker.names.get(module, "?")
    if inputs.dim() != 2 or tuple(output.shape) != tuple(logits.shape):
        raise LayerError(
            f"the last nn.Linear to run ({name!r}) maps inputs of shape {tuple(inputs.shape)} to "
            f"{tuple(output.shape)}, but the logits have shape {tuple(logits.shape)}: it is not the final "
            "classifier layer on (batch, features) inputs, so its gradient is not (softmax - onehot) ⊗ h; use "
            "gradient='logits'"
        )
    h = inputs.float()
    if module.bias is not None:
        h = torch.cat([h, torch.ones(h.shape[0], 1, dtype=h.dtype, device=h.device)], dim=1)
    if not torch.isfinite(h).all():
        raise NumericalError(f"the inputs of the final layer {name!r} contain NaN/Inf; check the model's numerics")
    return h.cpu()


def class_points(
    errors: torch.Tensor, features: torch.Tensor | None, members: torch.Tensor
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The gradient proxies of the samples ``members`` as facility location takes them: E rows, or the pair (E, H)."""
    return errors[members] if features is None else (errors[members], features[members])


def class_medoids(
    points: torch.Tensor | tuple[torch.Tensor, torch.Tensor], k: int, block_size: int, max_dense: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Facility location (exact lazy greedy) on one class's proxies, with every point's cluster.

    Returns ``(chosen, owner, best, d_max)``: the positions in ``points`` of the k medoids in greedy order (what
    :func:`~hf_verifix.algorithms.facility_location.facility_location` returns as indices), the position in
    ``chosen`` of each point's most similar medoid (ties: the earlier pick), that similarity, and d_max of
    sim = d_max - distance.
    """
    sim = Similarity(points, False, None, block_size, max_dense)
    chosen, _ = greedy_medoids(sim, k, lazy=True)
    owner, best = nearest_medoids(sim, chosen)
    return torch.tensor(chosen, dtype=torch.long), owner, best, sim.d_max


def class_budgets(counts: torch.Tensor, n_trusted: int, per_class: bool) -> list[int]:
    """Split ``n_trusted`` over classes: equal (remainder to the first classes) or proportional (largest remainder)."""
    k = counts.numel()
    if per_class:
        return [n_trusted // k + (1 if c < n_trusted % k else 0) for c in range(k)]
    total = int(counts.sum())
    products = [n_trusted * int(c) for c in counts.tolist()]
    budgets = [p // total for p in products]
    order = sorted(range(k), key=lambda c: (-(products[c] % total), c))
    for c in order[: n_trusted - sum(budgets)]:
        budgets[c] += 1
    return budgets


@dataclass(kw_only=True)
class _GradientScores(SampleScores):
    """What :meth:`CoresetSelector.score` returns: the gradient proxies (``errors`` E, ``features`` H or None) besides
    the labels; every score is 1 until :meth:`CoresetSelector.pick` knows the medoids."""

    errors: torch.Tensor
    features: torch.Tensor | None


@register_selector("coreset")
class CoresetSelector(ScoringSelector[_GradientScores]):
    """CRUST's coresets: in every (noisy) class, the medoids of the per-sample gradients, by facility location.

    Per class, the gradient of each sample's cross-entropy is approximated by the last layer's gradient
    g_i = (softmax(z_i) - onehot(y_i)) ⊗ h_i (``gradient="last_layer"``; h_i = the input of the model's final
    nn.Linear, see :func:`gradient_proxies`) or by softmax(z_i) - onehot(y_i) alone (``"logits"``, CRUST's cheaper
    bound, eq. 9). :func:`~hf_verifix.algorithms.facility_location.facility_location` then picks the class's share of
    ``n_trusted`` medoids maximising Σ_i max_{j∈S} (d_max - ‖g_i - g_j‖) (eq. 10). The budget is split across
    classes in proportion to their sizes (largest remainder), or equally with ``per_class=True`` (remainder to the
    first classes). The distances use ⟨a ⊗ b, c ⊗ d⟩ = ⟨a, c⟩⟨b, d⟩, so the K × D gradients are never formed.

    Scores (lower = more trusted): a medoid scores minus its cluster size (the CRUST weight, ≤ -1), so bigger
    clusters rank first; any other sample scores its gradient distance to its medoid divided by its class's d_max,
    in [0, 1] (1 in a class without medoids), so every medoid ranks before every other sample. Selection.indices are
    the medoids, sorted.

    CRUST argues that mislabelled samples, spread out in gradient space, are rarely medoids. But medoids are a
    diverse cover, not a clean set: once one medoid sits in the tight cluster of well-fitted clean samples
    (gradients near 0), further medoids gain most on the spread-out mislabelled samples, so the medoid set can be
    noisier than the data (2-D blobs with 25% flipped labels: 32-43% clean with last-layer gradients, about 60% with
    ``"logits"``), while the medoids with the largest clusters are clean. ``oversample`` > 1 exploits that (an
    extension, not in CRUST): each class picks ``ceil(oversample × budget)`` medoids and keeps its ``budget`` ones
    with the largest clusters (ties: the earlier pick).

    Args:
        gradient: ``"last_layer"`` or ``"logits"`` (see above).
        block_size: Rows per block when distances are computed in blocks.
        max_dense: A class with n² ≤ max_dense (default 2**26: n ≤ 8192, 256 MiB in float32) gets its similarity
            matrix materialised; larger ones compute similarities on demand (see
            :func:`~hf_verifix.algorithms.facility_location.facility_location`).
        oversample: Medoids picked per class, as a multiple (≥ 1) of its budget; the budget's worth with the
            largest clusters are kept. 1 (default) is CRUST.

    Attributes:
        weights: After :meth:`select`, each sample's cluster size if it is a medoid (kept or not, with
            ``oversample``), else 0; they sum to the size of every class that received medoids.
        assignment: After :meth:`select`, each sample's medoid (a sample index; -1 in a class without medoids).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(30, 4), torch.tensor([0, 1, 2] * 10)))
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> selector = CoresetSelector()
        >>> selector.select(model, source, n_trusted=6).class_counts(3).tolist()
        [2, 2, 2]
        >>> int(selector.weights.sum())
        30
    """

    def __init__(
        self,
        gradient: Gradient = "last_layer",
        block_size: int = 1024,
        max_dense: int = 2**26,
        oversample: float = 1.0,
    ) -> None:
        if gradient not in ("last_layer", "logits"):
            raise ConfigError(f"gradient must be 'last_layer' or 'logits', got {gradient!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ConfigError(f"block_size must be an integer >= 1, got {block_size!r}")
        if isinstance(max_dense, bool) or not isinstance(max_dense, int) or max_dense < 0:
            raise ConfigError(f"max_dense must be an integer >= 0, got {max_dense!r}")
        if isinstance(oversample, bool) or not isinstance(oversample, (int, float)) or not 1 <= oversample < math.inf:
            raise ConfigError(f"oversample must be a finite number >= 1, got {oversample!r}; 1 is plain CRUST")
        self.gradient: Gradient = gradient
        self.oversample = float(oversample)
        self.block_size = block_size
        self.max_dense = max_dense
        self.weights: torch.Tensor | None = None
        self.assignment: torch.Tensor | None = None

    def score(
        self, model: nn.Module, source: SampleSource, *, seed: int = 0, progress: bool = False
    ) -> _GradientScores:
        """Compute every sample's gradient proxies (see :func:`gradient_proxies`); the scores come with the medoids.

        Every score is 1 here: :meth:`pick` gives the medoids and their clusters theirs. ``seed`` is not used.

        Raises:
            DataError: Bad labels or logits.
            LayerError: ``gradient="last_layer"`` on a model whose logits do not come out of a final nn.Linear.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 0])))
            >>> scored = CoresetSelector(gradient="logits").score(nn.Linear(4, 2), source)
            >>> tuple(scored.errors.shape), scored.features is None, scored.scores.unique().tolist()
            ((5, 2), True, [1.0])
        """
        errors, features, labels, num_classes = gradient_proxies(model, source, self.gradient, progress)
        ones = torch.ones(labels.numel(), dtype=torch.float64)
        return _GradientScores(ones, labels, num_classes, errors=errors, features=features)

    def pick(self, scored: _GradientScores, n_trusted: int, per_class: bool) -> Selection:
        """Pick the medoids of every class's gradients (deterministic), setting :attr:`weights` and :attr:`assignment`.

        Raises:
            DataError: With ``per_class``, a class with fewer samples than its quota.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(20, 4), torch.tensor([0, 1] * 10)))
            >>> sel = CoresetSelector(gradient="logits").select(nn.Linear(4, 2), source, 4)
            >>> bool((sel.scores[sel.indices] <= -1).all())
            True
        """
        labels = scored.labels
        if per_class:  # fail before the greedy if a class is too small for its quota (same rule and message)
            lowest_scores(torch.zeros(labels.numel()), labels, n_trusted, True, scored.num_classes)
        counts = torch.bincount(labels, minlength=scored.num_classes or 0)
        budgets = class_budgets(counts, n_trusted, per_class)
        scores = scored.scores.clone()
        kept: list[torch.Tensor] = []
        weights = torch.zeros(labels.numel(), dtype=torch.long)
        assignment = torch.full((labels.numel(),), -1, dtype=torch.long)
        for c in range(counts.numel()):
            members = torch.nonzero(labels == c).flatten()
            if budgets[c] == 0 or members.numel() == 0:
                continue
            picks = min(members.numel(), math.ceil(self.oversample * budgets[c]))
            chosen, owner, best, d_max = class_medoids(
                class_points(scored.errors, scored.features, members), picks, self.block_size, self.max_dense
            )
            medoids = members[chosen]
            sizes = torch.bincount(owner, minlength=chosen.numel())
            distance = (d_max - best).clamp(min=0.0)
            scores[members] = distance / d_max if d_max > 0 else torch.zeros_like(distance)
            scores[medoids] = -sizes.double()
            weights[medoids] = sizes
            assignment[members] = medoids[owner]
            kept.append(medoids[torch.argsort(-sizes, stable=True)[: budgets[c]]])
        self.weights = weights
        self.assignment = assignment
        indices = torch.cat(kept).sort().values if kept else torch.zeros(0, dtype=torch.long)
        return Selection(indices, scores, labels)
