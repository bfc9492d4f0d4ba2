"""The projected weight by one Cholesky solve per α, without an eigendecomposition, and the choice between the two.

SAP's update is Ŵ = W·U diag(λ) Uᵀ with λᵢ = ασ̃ᵢ / ((α−1)σ̃ᵢ + 1), where U diag(σ̃) Uᵀ = Ĝ = G / tr G. All of it is
a function of Ĝ: U diag(λ) Uᵀ = α(I + (α−1)Ĝ)⁻¹Ĝ, so

    Ŵᵀ = α (I + (α−1)Ĝ)⁻¹ Ĝ Wᵀ,

exactly. I + (α−1)Ĝ is symmetric with eigenvalues 1 + (α−1)σ̃ᵢ in [min(1, α), max(1, α)] (σ̃ᵢ ∈ [0, 1]), so it is
positive definite with condition number at most max(α, 1/α): one Cholesky factorisation (d³/3 multiply-adds) and two
triangular solves give Ŵ to about max(α, 1/α)·d·u relative — where an eigendecomposition costs about 8d³ (measured:
17.1 s against 1.5 s for one factorisation and solve at d = 4608 on 2 CPU cores, ``benchmarks/scale.py``). Each α
costs a factorisation, though, and a report's spectrum needs the eigenvalues: :func:`eigh_pays` says when
decomposing once is cheaper.

Example:
    >>> import torch
    >>> from hf_verifix.projection.spectrum import decompose
    >>> from hf_verifix.projection.update import LayerProjection
    >>> rows = torch.randn(50, 6, dtype=torch.float64)
    >>> gram, weight = (rows.T @ rows)[None], torch.randn(4, 6, dtype=torch.float64)
    >>> solved = SolvedProjection(weight, gram).weight(3e4)
    >>> torch.allclose(solved, LayerProjection(weight, decompose(gram)).weight(3e4), rtol=0, atol=1e-8)
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

import torch

from ..utils.distributed import broadcast_from_main, process_rank_and_count
from .spectrum import decompose_on_main
from .update import LayerProjection

__all__ = ["EIGH_COST", "MAX_CONDITION", "Projection", "SolvedProjection", "Spectra", "eigh_pays"]

# The solve errs by up to about κ·d·u with κ = max(α, 1/α) (up to 1e7 · 4608 · 1.1e-16 ≈ 5e-6 for the widest layers
# of the benchmarks); beyond this κ the eigenvectors are used, which give λ(α) exactly for any α.
MAX_CONDITION = 1e7
# An eigendecomposition with eigenvectors costs about EIGH_COST·d³ in the units where a Cholesky factorisation
# costs d³/3 and a d×d by d×o product d²·o: measured 17.1 s against 1.5 s for d = 4608, o = 512 (2 CPU cores).
EIGH_COST = 8.0


class Projection(Protocol):
    """What the corrector needs of a layer's projection, however it is computed.

    Example:
        >>> projection: Projection = SolvedProjection(torch.eye(2), torch.eye(2, dtype=torch.float64)[None])
        >>> projection.method
        'cholesky'
    """

    @property
    def method(self) -> str:
        """``"cholesky"``, ``"eigh"`` or ``"svd"``: how the weights are computed.

        Example:
            >>> SolvedProjection(torch.eye(2), torch.eye(2, dtype=torch.float64)[None]).method
            'cholesky'
        """
        ...

    @property
    def groups(self) -> int:
        """The number of groups (row spaces) of the layer.

        Example:
            >>> SolvedProjection(torch.eye(2), torch.eye(2, dtype=torch.float64)[None]).groups
            1
        """
        ...

    @property
    def dim(self) -> int:
        """The dimension d of each group's rows.

        Example:
            >>> SolvedProjection(torch.eye(2), torch.eye(2, dtype=torch.float64)[None]).dim
            2
        """
        ...

    def weight(self, alpha: float) -> torch.Tensor:
        """The projected weight for ``alpha``, in the layer's shape and dtype.

        Example:
            >>> SolvedProjection(torch.eye(2), torch.eye(2, dtype=torch.float64)[None]).weight(1.0)
            tensor([[0.5000, 0.0000],
                    [0.0000, 0.5000]])
        """
        ...

    @property
    def normalized(self) -> torch.Tensor:
        """The normalised spectrum σ̃ per group, descending.

        Example:
            >>> SolvedProjection(torch.eye(2), torch.eye(2, dtype=torch.float64)[None]).normalized.tolist()
            [[0.5, 0.5]]
        """
        ...


def eigh_pays(dim: int, out: int, n_alphas: int) -> bool:
    """Whether one eigendecomposition plus a product per α is cheaper than ``n_alphas`` Cholesky solves, for a
    ``dim``-wide Gram and ``out`` output rows per group.

    Solving costs d³/3 + 3·d²·o per α (factorisation, Ĝ·Wᵀ, two triangular solves); decomposing costs
    ``EIGH_COST``·d³ + d²·o once (W·U) and d²·o per α.

    Example:
        >>> eigh_pays(4608, 512, n_alphas=7), eigh_pays(4608, 512, n_alphas=20), eigh_pays(768, 3072, n_alphas=2)
        (False, True, True)
    """
    d, o = float(dim), float(out)
    solving = n_alphas * (d**3 / 3 + 3 * d * d * o)
    decomposing = EIGH_COST * d**3 + (n_alphas + 1) * d * d * o
    return decomposing < solving


class SolvedProjection:
    """A layer's original weight and trusted Gram, projected for any α by one Cholesky solve (no eigenvectors).

    ``normalized`` (the spectrum, for reports) is computed on first use, from the eigenvalues alone. On several
    processes the main one solves and shares the weight, so every process writes the same bits.

    Example:
        >>> rows = torch.randn(30, 3, dtype=torch.float64)
        >>> projection = SolvedProjection(torch.randn(2, 3), (rows.T @ rows)[None])
        >>> projection.weight(1e4).shape, projection.method
        (torch.Size([2, 3]), 'cholesky')
    """

    method = "cholesky"

    def __init__(self, weight: torch.Tensor, gram: torch.Tensor) -> None:
        groups = gram.shape[0]
        self.shape, self.dtype = weight.shape, weight.dtype
        self.gram = gram
        self.groups = int(groups)
        self.solves = 0  # how many α this projection has solved for (``ready_projections`` counts them)
        w = weight.detach().to(gram.device, torch.float64)
        self.weight_t = w.reshape(groups, weight.shape[0] // groups, -1).mT  # (g, d, o)
        self._normalized: torch.Tensor | None = None
        self._eigh: LayerProjection | None = None

    @property
    def has_eigendecomposition(self) -> bool:
        """Whether :meth:`eigendecomposed` was already made (an α too ill-conditioned to solve asked for it).

        Example:
            >>> SolvedProjection(torch.ones(2, 3), torch.eye(3, dtype=torch.float64)[None]).has_eigendecomposition
            False
        """
        return self._eigh is not None

    def _normalized_gram(self) -> torch.Tensor:
        return self.gram / self.gram.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]  # Ĝ = G / tr G per group

    def eigendecomposed(self, name: str = "layer") -> LayerProjection:
        """The same projection from one eigendecomposition of the Gram (on the main process, shared; made once).

        Example:
            >>> rows = torch.randn(30, 3, dtype=torch.float64)
            >>> SolvedProjection(torch.randn(2, 3), (rows.T @ rows)[None]).eigendecomposed().spectrum.method
            'eigh'
        """
        if self._eigh is None:
            weight = self.weight_t.mT.reshape(self.shape).to(self.dtype)  # exactly the original: float64 holds it
            self._eigh = LayerProjection(weight, decompose_on_main(self.gram, name))
        return self._eigh

    @property
    def dim(self) -> int:
        """The Gram's dimension d (one group's input size).

        Example:
            >>> SolvedProjection(torch.ones(2, 3), torch.eye(3, dtype=torch.float64)[None]).dim
            3
        """
        return int(self.gram.shape[-1])

    @property
    def out(self) -> int:
        """The output rows each group projects.

        Example:
            >>> SolvedProjection(torch.ones(2, 3), torch.eye(3, dtype=torch.float64)[None]).out
            2
        """
        return int(self.weight_t.shape[-1])

    def _solved(self, alpha: float) -> torch.Tensor:
        gram = self._normalized_gram()
        eye = torch.eye(self.dim, dtype=torch.float64, device=gram.device)
        factor, info = torch.linalg.cholesky_ex(eye + (alpha - 1.0) * gram)
        if bool((info != 0).any()):  # not positive definite: only a Gram holding NaN/Inf gets here
            return torch.full(self.shape, float("nan"), dtype=self.dtype)
        projected_t = alpha * torch.cholesky_solve(gram @ self.weight_t, factor)  # (g, d, o)
        return projected_t.mT.reshape(self.shape).to(self.dtype)

    def weight(self, alpha: float) -> torch.Tensor:
        """Return Ŵ = α·W·Ĝ(I + (α−1)Ĝ)⁻¹ in the layer's shape and dtype (NaN if the Gram is not finite).

        For α or 1/α above ``MAX_CONDITION`` the system is too ill-conditioned to solve accurately: the weight then
        comes from the eigendecomposition (made once).

        Example:
            >>> gram = torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64))[None]
            >>> SolvedProjection(torch.eye(2), gram).weight(5.0)
            tensor([[1., 0.],
                    [0., 0.]])
        """
        if max(alpha, 1.0 / alpha) > MAX_CONDITION:
            return self.eigendecomposed().weight(alpha)
        self.solves += 1
        rank, world = process_rank_and_count()
        if world == 1:
            return self._solved(alpha)
        projected = self._solved(alpha) if rank == 0 else torch.zeros(self.shape, dtype=self.dtype)
        return broadcast_from_main(projected.cpu()).to(self.gram.device)

    @property
    def normalized(self) -> torch.Tensor:
        """σ̃ᵢ per group, descending, from the eigenvalues of Ĝ (computed once, on first use).

        Example:
            >>> gram = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))[None]
            >>> SolvedProjection(torch.eye(2), gram).normalized
            tensor([[0.7500, 0.2500]], dtype=torch.float64)
        """
        if self._normalized is None:
            values = torch.linalg.eigvalsh(self._normalized_gram()).flip(-1).clamp(min=0)
            self._normalized = values / values.sum(dim=-1, keepdim=True)
        return self._normalized


class Spectra(Mapping[str, torch.Tensor]):
    """Each layer's normalised spectrum σ̃, computed when first read (a report shows a few layers, not all).

    Example:
        >>> layers = {"fc": SolvedProjection(torch.eye(2), torch.eye(2, dtype=torch.float64)[None])}
        >>> spectra = Spectra(layers)
        >>> list(spectra), spectra["fc"].tolist()
        (['fc'], [[0.5, 0.5]])
    """

    def __init__(self, projections: Mapping[str, Projection]) -> None:
        self._projections = dict(projections)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._projections[name].normalized

    def __iter__(self) -> Iterator[str]:
        return iter(self._projections)

    def __len__(self) -> int:
        return len(self._projections)
