"""Eigendecomposition of a layer's Gram matrix, robust to rank-deficient float64 Grams."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..errors import NumericalError
from ..utils.distributed import broadcast_from_main, process_rank_and_count

__all__ = ["Spectrum", "decompose", "decompose_on_main", "importance_scaling"]

logger = logging.getLogger(__name__)


@dataclass
class Spectrum:
    """Eigenpairs of a Gram matrix per group: ``eigenvalues`` (g, d) descending (σ²), ``eigenvectors`` (g, d, d).

    Example:
        >>> spectrum = decompose(torch.diag(torch.tensor([1.0, 3.0], dtype=torch.float64))[None])
        >>> spectrum.eigenvalues.tolist()
        [[3.0, 1.0]]
        >>> spectrum.normalized().tolist()
        [[0.75, 0.25]]
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    method: str = "eigh"

    def normalized(self) -> torch.Tensor:
        """Return σ̃ᵢ = σᵢ² / Σⱼ σⱼ² per group (round-off negatives clamped to 0).

        Example:
            >>> Spectrum(torch.tensor([[2.0, 2.0]]), torch.eye(2)[None]).normalized().tolist()
            [[0.5, 0.5]]
        """
        values = self.eigenvalues.clamp(min=0)
        return values / values.sum(dim=-1, keepdim=True)


def importance_scaling(normalized: torch.Tensor, alpha: float) -> torch.Tensor:
    """Return the paper's importance λᵢ = ασ̃ᵢ / ((α−1)σ̃ᵢ + 1) of each normalised eigenvalue σ̃ᵢ.

    Example:
        >>> importance_scaling(torch.tensor([0.0, 0.5, 1.0]), alpha=3.0).tolist()
        [0.0, 0.75, 1.0]
    """
    # (α−1)σ̃ + 1 written as ασ̃ + (1−σ̃): the same number, but never 0 in floating point (for α ≪ 1 and σ̃ = 1,
    # 1 + (α−1) rounds to 0 and λ became Inf).
    scaled = alpha * normalized
    return scaled / (scaled + (1.0 - normalized))


def _decompose_one(gram: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        values, vectors = torch.linalg.eigh(gram)
        return values.flip(-1), vectors.flip(-1), "eigh"
    except RuntimeError as err:  # torch.linalg.LinAlgError subclasses RuntimeError
        logger.warning("eigh did not converge on the Gram of %r (%s); falling back to SVD", name, err)
    try:
        # G is symmetric positive semi-definite, so its SVD is an eigendecomposition: G = U S Uᵀ.
        vectors, values, _ = torch.linalg.svd(gram)
        return values, vectors, "svd"
    except RuntimeError as err:
        raise NumericalError(
            f"neither eigh nor SVD could decompose the {tuple(gram.shape)} Gram of layer {name!r} ({err}); "
            "exclude the layer with exclude_modules"
        ) from err


def _decompose_active(gram: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Decompose only the principal block of coordinates that were ever non-zero.

    A coordinate whose activations were all exactly zero (a patch tap that only ever saw zero padding, a ReLU
    channel dead on every trusted sample) has a zero row and column in G, so its unit vector is an exact
    eigenvector with eigenvalue 0 (λ = 0). Decomposing the rest alone is exact, far cheaper (resnet18's layer4
    convolutions at 28×28 input: 512 active coordinates of 4608), and avoids eigh's convergence failures on the
    large cluster of zero eigenvalues.
    """
    d = gram.shape[0]
    active = torch.nonzero(gram.diagonal() > 0).flatten()
    k = active.numel()
    if k in (0, d):
        return _decompose_one(gram, name)
    sub_values, sub_vectors, method = _decompose_one(gram[active][:, active], name)
    values = torch.zeros(d, dtype=gram.dtype, device=gram.device)
    values[:k] = sub_values
    vectors = torch.zeros(d, d, dtype=gram.dtype, device=gram.device)
    vectors[active, :k] = sub_vectors
    inactive = torch.nonzero(gram.diagonal() <= 0).flatten()
    vectors[inactive, torch.arange(k, d, device=gram.device)] = 1.0
    return values, vectors, method


def decompose(gram: torch.Tensor, name: str = "layer") -> Spectrum:
    """Return the eigendecomposition of each group's Gram (``(g, d, d)``), falling back to SVD where eigh fails.

    Coordinates whose activations were all exactly zero are exact eigenvectors with eigenvalue 0 and are split off
    before decomposing the rest (see ``_decompose_active``).

    Args:
        gram: Symmetric positive semi-definite float64 matrices, shape ``(groups, d, d)``.
        name: The layer's name, for messages.

    Raises:
        NumericalError: The Gram holds NaN/Inf, or both eigh and SVD failed.

    Example:
        >>> rows = torch.randn(50, 4, dtype=torch.float64)
        >>> spectrum = decompose((rows.T @ rows)[None])
        >>> torch.allclose(spectrum.eigenvalues.sum(), (rows**2).sum())
        True
    """
    if not torch.isfinite(gram).all():
        raise NumericalError(f"the Gram matrix of layer {name!r} holds NaN or Inf; check the trusted data")
    values, vectors, methods = [], [], set()
    for g in range(gram.shape[0]):
        v, u, method = _decompose_active(gram[g], name)
        values.append(v)
        vectors.append(u)
        methods.add(method)
    method = "svd" if "svd" in methods else "eigh"
    return Spectrum(torch.stack(values), torch.stack(vectors), method)


def decompose_on_main(gram: torch.Tensor, name: str = "") -> Spectrum:
    """Decompose on the main process only and share the result, so every process projects identically.

    On one process it is :func:`decompose` itself.

    Example:
        >>> decompose_on_main(torch.eye(2, dtype=torch.float64)[None]).eigenvalues.tolist()
        [[1.0, 1.0]]
    """
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
