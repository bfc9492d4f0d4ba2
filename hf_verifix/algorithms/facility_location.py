"""Greedy facility location: k representative points (medoids) that cover a set, as CRUST selects coresets.

The objective is F(S) = Σ_i max_{j∈S} sim(i, j) (F(∅) = 0), monotone submodular for non-negative similarities, so the
greedy algorithm is a (1 - 1/e)-approximation (Mirzasoleiman et al., 2020, eq. 10). From feature vectors g_i the
similarity is sim(i, j) = d_max - ‖g_i - g_j‖ with d_max ≥ every pairwise distance.

Example:
    >>> points = torch.tensor([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    >>> result = facility_location(points, 2)
    >>> result.indices.tolist(), result.weights.tolist()
    ([2, 4], [3, 3])
"""

from __future__ import annotations

import heapq
import math
from typing import NamedTuple

import torch

from ..errors import ConfigError, DataError

__all__ = ["FacilityLocationResult", "facility_location"]

Points = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

# Lazy greedy's first upper bounds come from a blocked pass whose rounding can differ from the one-column evaluation
# by a few ulps; inflating them keeps them valid upper bounds (the lazy result then equals the naive greedy exactly).
_BOUND_SLACK = 1e-9


class FacilityLocationResult(NamedTuple):
    """The greedy solution: medoids in the order they were picked, their cluster sizes and F(S).

    ``weights[t]`` counts the points whose most similar medoid is ``indices[t]`` (ties: the earlier pick), so the
    weights sum to the number of points; ``objective`` is F(S) = Σ_i max_{j∈S} sim(i, j).

    Example:
        >>> indices, weights, objective = facility_location(torch.tensor([[0.0], [1.0], [3.0]]), 1)
        >>> indices.tolist(), weights.tolist(), objective
        ([1], [3], 6.0)
    """

    indices: torch.Tensor
    weights: torch.Tensor
    objective: float


class Similarity:
    """Columns sim(:, j) of a facility-location instance: sliced from a dense matrix or computed on demand.

    Features are kept in float64. Dense mode stores the n × n matrix in float32 (n² × 4 bytes; gains and coverage
    are accumulated in float64); on-demand mode stores only the features and computes a float64 column in O(n d),
    plus blocks of ``block_size`` columns (block_size × n × 8 bytes) for the first pass that finds d_max and the
    column sums.
    """

    def __init__(self, x: Points, precomputed: bool, d_max: float | None, block_size: int, max_dense: int) -> None:
        self.block_size = block_size
        self.matrix: torch.Tensor | None = None
        self.pair: tuple[torch.Tensor, torch.Tensor] | None = None
        if precomputed:
            if d_max is not None:
                raise ConfigError(
                    "d_max applies to features; with precomputed=True the similarities are used as given"
                )
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] != x.shape[1]:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise DataError(f"precomputed=True needs a square (n, n) similarity tensor, got {shape}")
            sim = _finite64(x, "the similarity matrix")
            if (sim < 0).any():
                raise DataError(
                    f"facility location needs non-negative similarities, got a minimum of {float(sim.min()):.6g}; "
                    "shift them (e.g. sim - sim.min()) or pass features so that d_max - distance is used"
                )
            self.n = sim.shape[0]
            self.matrix = sim.t().to(torch.float32).contiguous()  # row j holds column j: sim(:, j)
            self.d_max = float(sim.max()) if self.n else 0.0
            self._column_sums = self.matrix.sum(dim=1, dtype=torch.float64)
            return
        if isinstance(x, tuple):
            if len(x) != 2 or not all(isinstance(t, torch.Tensor) and t.dim() == 2 for t in x):
                raise DataError(
                    "a pair of features must be two 2-D tensors (A, B) of shapes (n, p) and (n, q), standing for the "
                    f"rows a_i ⊗ b_i; got {[tuple(t.shape) if isinstance(t, torch.Tensor) else t for t in x]}"
                )
            a, b = (_finite64(t, "the features") for t in x)
            if a.shape[0] != b.shape[0]:
                raise DataError(f"the pair (A, B) must have as many rows, got {a.shape[0]} and {b.shape[0]}")
            self.pair = (a, b)
            self.sq = (a * a).sum(dim=1) * (b * b).sum(dim=1)
        elif isinstance(x, torch.Tensor) and x.dim() == 2:
            self.features = _finite64(x, "the features")
            self.sq = (self.features * self.features).sum(dim=1)
        else:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(
                f"facility location needs (n, d) features, a pair (A, B) of (n, p) and (n, q) tensors, or an (n, n) "
                f"similarity with precomputed=True; got {shape}"
            )
        self.n = self.sq.shape[0]
        sums = torch.zeros(self.n, dtype=torch.float64)
        largest = 0.0
        dense = self.n * self.n <= max_dense
        matrix = torch.empty(self.n, self.n, dtype=torch.float32) if dense else None
        for start in range(0, self.n, block_size):
            block = self._distances(torch.arange(start, min(start + block_size, self.n)))
            sums[start : start + block.shape[0]] = block.sum(dim=1)
            largest = max(largest, float(block.max()))
            if matrix is not None:
                matrix[start : start + block.shape[0]] = block
        if d_max is None:
            d_max = largest
        elif not (isinstance(d_max, (int, float)) and math.isfinite(d_max)) or d_max < largest * (1 + 1e-9):
            raise ConfigError(
                f"d_max must be a finite number ≥ the largest pairwise distance ({largest:.6g}), got {d_max!r}; "
                "leave d_max=None to use the largest distance"
            )
        self.d_max = float(d_max)
        self._column_sums = self.n * self.d_max - sums
        if matrix is not None:  # row j serves as column j (distances are symmetric up to rounding)
            self.matrix = matrix.neg_().add_(self.d_max)
            self._column_sums = self.matrix.sum(dim=1, dtype=torch.float64)

    def _distances(self, cols: torch.Tensor) -> torch.Tensor:
        """Return the (len(cols), n) Euclidean distances from the points ``cols`` to every point (self-distance 0)."""
        if self.pair is not None:
            a, b = self.pair
            gram = (a[cols] @ a.t()) * (b[cols] @ b.t())
        else:
            gram = self.features[cols] @ self.features.t()
        dist = gram.mul_(-2.0).add_(self.sq[None, :]).add_(self.sq[cols, None]).clamp_(min=0.0).sqrt_()
        dist[torch.arange(cols.numel()), cols] = 0.0
        return dist

    def column(self, j: int) -> torch.Tensor:
        """Return sim(:, j) as a float64 vector of length n (always through the same code path for a given j)."""
        if self.matrix is not None:
            return self.matrix[j]
        return self.d_max - self._distances(torch.tensor([j]))[0]

    def upper_bounds(self) -> torch.Tensor:
        """Return upper bounds of every singleton's gain F({j}) = Σ_i sim(i, j), valid despite rounding."""
        return self._column_sums * (1.0 + _BOUND_SLACK) + _BOUND_SLACK


def _finite64(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64, torch.int16)):
        raise DataError(f"{what} must be a real tensor, got dtype {x.dtype}")
    x = x.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(x).all():
        rows = torch.nonzero(~torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1)).flatten()[:5].tolist()
        raise DataError(f"{what} contain NaN/Inf (rows {rows}); clean those samples first")
    return x


def _gain(column: torch.Tensor, covered: torch.Tensor) -> float:
    """Exact marginal gain F(S ∪ {j}) - F(S) = Σ_i max(0, sim(i, j) - max_{s∈S} sim(i, s))."""
    return float(torch.clamp(column - covered, min=0.0).sum())


def greedy_medoids(sim: Similarity, k: int, lazy: bool) -> tuple[list[int], torch.Tensor]:
    """Pick k points greedily; return them in order and the final coverage max_{j∈S} sim(i, j) (0 for S = ∅).

    Ties go to the lowest index. The lazy variant keeps a max-heap of upper bounds on each point's MARGINAL gain
    (by submodularity a gain only shrinks as S grows); it re-evaluates the top's exact gain and accepts the point
    when that gain (index as tie-break) still beats the next upper bound, else pushes it back with the new gain.
    """
    covered = torch.zeros(sim.n, dtype=torch.float64)
    chosen: list[int] = []
    if lazy:
        heap = [(-bound, j) for j, bound in enumerate(sim.upper_bounds().tolist())]
        heapq.heapify(heap)
        while len(chosen) < k:
            _, j = heapq.heappop(heap)
            column = sim.column(j)
            entry = (-_gain(column, covered), j)
            if heap and entry > heap[0]:  # another point may still gain more: re-queue with the exact gain
                heapq.heappush(heap, entry)
                continue
            chosen.append(j)
            covered = torch.maximum(covered, column)
        return chosen, covered
    remaining = set(range(sim.n))
    while len(chosen) < k:
        best_gain, best = -math.inf, -1
        for j in sorted(remaining):
            gain = _gain(sim.column(j), covered)
            if gain > best_gain:
                best_gain, best = gain, j
        chosen.append(best)
        remaining.discard(best)
        covered = torch.maximum(covered, sim.column(best))
    return chosen, covered


def nearest_medoids(sim: Similarity, chosen: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return, for every point, the position in ``chosen`` of its most similar medoid (ties: earlier) and sim."""
    best = torch.full((sim.n,), -math.inf, dtype=torch.float64)
    owner = torch.zeros(sim.n, dtype=torch.long)
    for position, j in enumerate(chosen):
        column = sim.column(j)
        better = column > best
        owner[better] = position
        best = torch.where(better, column, best)
    return owner, best


def facility_location(
    x: Points,
    k: int,
    *,
    precomputed: bool = False,
    lazy: bool = True,
    d_max: float | None = None,
    block_size: int = 1024,
    max_dense: int = 2**26,
) -> FacilityLocationResult:
    """Greedily maximise F(S) = Σ_i max_{j∈S} sim(i, j) over sets of ``k`` points (CRUST's coreset, eq. 10).

    ``x`` is one of: an (n, d) tensor of features; a pair ``(A, B)`` of (n, p) and (n, q) tensors standing for the
    features a_i ⊗ b_i (flattened outer products, e.g. last-layer gradients (softmax - onehot) ⊗ h) that are never
    formed, since ⟨a_i ⊗ b_i, a_j ⊗ b_j⟩ = ⟨a_i, a_j⟩⟨b_i, b_j⟩; or, with ``precomputed=True``, an (n, n)
    non-negative similarity whose column j is sim(·, j). From features, sim(i, j) = d_max - ‖g_i - g_j‖.

    ``lazy=True`` is the lazy greedy (Minoux): a heap of upper bounds on the exact marginal gains, so only the top
    is re-evaluated; it returns exactly what ``lazy=False`` (the plain greedy, O(n k) gain evaluations, for checks)
    returns. Ties go to the lowest index.

    Memory and time: all on the CPU, features and gains in float64. With features and n² ≤ ``max_dense`` (default
    2**26, i.e. n ≤ 8192) the similarity matrix is materialised in float32 (n² × 4 bytes: 256 MiB at n = 8192;
    then each gain evaluation is O(n)); above that, similarity columns are computed on
    demand (O(n d) each) and the one full pass that finds d_max and the first bounds goes through blocks of
    ``block_size`` rows, so the peak is a few buffers of ``block_size × n × 8`` bytes (160 MiB each for n = 20 000
    with the default 1024) plus the features; no n × n matrix is formed. That pass costs O(n² d) (O(n² (p + q)) for a
    pair); lazy greedy then usually evaluates a few times n columns in all, each O(n d), so on-demand mode is
    for when memory forbids the matrix (minutes for n = 8000 and d = 512 on 2 cores). ``precomputed=True`` keeps
    a transposed float32 copy of the matrix.

    Args:
        x: Features, a pair of features or (``precomputed``) a similarity matrix.
        k: How many points to pick, 0 ≤ k ≤ n.
        precomputed: ``x`` is an (n, n) similarity matrix.
        lazy: Use the lazy greedy (same result, far fewer evaluations).
        d_max: The constant in sim = d_max - distance; must be ≥ the largest pairwise distance. Default: that
            largest distance.
        block_size: Rows per block in the blocked distance pass.
        max_dense: Materialise the n × n similarity when n² is at most this (0: never).

    Returns:
        A :class:`FacilityLocationResult`: ``(indices in greedy order, weights = cluster sizes, objective)``.

    Raises:
        ConfigError: ``k`` out of range or not an integer, a bad ``block_size``/``max_dense``, or ``d_max`` below
            the largest distance.
        DataError: Input of the wrong shape, NaN/Inf, or negative precomputed similarities.

    Example:
        >>> sim = torch.tensor([[3.0, 1.0, 0.0], [1.0, 3.0, 2.0], [0.0, 2.0, 3.0]])
        >>> facility_location(sim, 1, precomputed=True).indices.tolist()
        [1]
        >>> facility_location(sim, 2, precomputed=True, lazy=False).objective
        8.0
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError(f"block_size must be an integer >= 1, got {block_size!r}")
    if isinstance(max_dense, bool) or not isinstance(max_dense, int) or max_dense < 0:
        raise ConfigError(f"max_dense must be an integer >= 0, got {max_dense!r}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ConfigError(f"k must be an integer, got {type(k).__name__} {k!r}")
    sim = Similarity(x, precomputed, d_max, block_size, max_dense)
    if not 0 <= k <= sim.n:
        raise ConfigError(f"k must be between 0 and the number of points ({sim.n}), got {k}")
    chosen, covered = greedy_medoids(sim, k, lazy)
    owner, _ = nearest_medoids(sim, chosen)
    weights = torch.bincount(owner, minlength=k) if k else torch.zeros(0, dtype=torch.long)
    return FacilityLocationResult(torch.tensor(chosen, dtype=torch.long), weights, float(covered.sum()))
