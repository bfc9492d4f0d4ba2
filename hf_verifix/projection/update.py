"""The weight update Ŵ = W·Wp with Wp = U diag(λ) Uᵀ (Verifix eq. 4, 8, 9)."""

from __future__ import annotations

import torch

from .spectrum import Spectrum, importance_scaling

__all__ = ["LayerProjection", "projected_weight"]


class LayerProjection:
    """A layer's original weight in the eigenbasis of its trusted Gram, ready to project for any α.

    ``W·U`` is computed once, so each α costs one matrix product: Ŵ = ((W U) diag λ) Uᵀ. Directions with σ̃ = 0
    (up to eigh's round-off, d·u·σ̃_max) get λ = 0 for every α, so only the ``k`` eigenvectors with σ̃ above it (the
    largest count over groups) are kept for the update: W·U and the product cost ``out × k × d`` instead of
    ``out × d × d`` (resnet18's last stage at 28×28 input: k = 512 of d = 4608). ``normalized`` keeps every
    direction, for reports.

    Example:
        >>> from hf_verifix.projection.spectrum import decompose
        >>> weight = torch.randn(3, 4)
        >>> rows = torch.randn(100, 4, dtype=torch.float64)
        >>> projection = LayerProjection(weight, decompose((rows.T @ rows)[None]))
        >>> torch.allclose(projection.weight(alpha=1e12), weight, atol=1e-5)
        True
    """

    def __init__(self, weight: torch.Tensor, spectrum: Spectrum) -> None:
        groups = spectrum.eigenvectors.shape[0]
        self.method = spectrum.method
        self.groups, self.dim = groups, int(spectrum.eigenvectors.shape[-1])
        self.shape = weight.shape
        self.dtype = weight.dtype
        w = weight.detach().to(torch.float64).reshape(groups, weight.shape[0] // groups, -1)
        self.spectrum = spectrum
        self.normalized = spectrum.normalized().to(torch.float64)
        # eigh gives each eigenvalue of Ĝ to within about d·u·σ̃_max (u = 2⁻⁵³): smaller σ̃ are round-off of exact
        # zeros (a layer whose trusted rows span 512 of 8192 dimensions showed 3,737 such "active" directions), and
        # their true λ is 0. The directions above that threshold come first (decompose sorts them so); keep k.
        dim = self.normalized.shape[-1]
        threshold = dim * torch.finfo(torch.float64).eps * self.normalized.amax(dim=-1, keepdim=True)
        active = self.normalized > threshold
        order = torch.argsort(self.normalized, dim=-1, descending=True, stable=True)
        k = max(1, int(active.sum(dim=-1).max()))
        kept = order[:, :k]
        vectors = spectrum.eigenvectors.to(torch.float64)
        if torch.equal(kept, torch.arange(k, device=kept.device).expand_as(kept)):  # sorted: a view, no copy
            self.eigenvectors = vectors[..., :k]
        else:
            self.eigenvectors = torch.gather(vectors, -1, kept[:, None, :].expand(-1, vectors.shape[1], -1))
        self.kept_normalized = torch.gather(torch.where(active, self.normalized, 0.0), -1, kept)
        self.weight_in_basis = torch.bmm(w.to(self.eigenvectors.device), self.eigenvectors)

    def weight(self, alpha: float) -> torch.Tensor:
        """Return the projected weight for ``alpha``, in the layer's shape and dtype.

        Example:
            >>> from hf_verifix.projection.spectrum import Spectrum
            >>> LayerProjection(torch.eye(2), Spectrum(torch.tensor([[1.0, 0.0]]), torch.eye(2)[None])).weight(5.0)
            tensor([[1., 0.],
                    [0., 0.]])
        """
        lam = importance_scaling(self.kept_normalized, alpha)  # (g, k)
        projected = torch.bmm(self.weight_in_basis * lam[:, None, :], self.eigenvectors.transpose(1, 2))
        return projected.reshape(self.shape).to(self.dtype)


def projected_weight(weight: torch.Tensor, spectrum: Spectrum, alpha: float) -> torch.Tensor:
    """Return Ŵ = W·U diag(λ(α)) Uᵀ for a Linear ``(out, in)`` or Conv2d ``(out, in/g, kh, kw)`` weight.

    Example:
        >>> from hf_verifix.projection.spectrum import decompose
        >>> rows = torch.randn(20, 3, dtype=torch.float64)
        >>> projected_weight(torch.randn(2, 3), decompose((rows.T @ rows)[None]), alpha=3e4).shape
        torch.Size([2, 3])
    """
    return LayerProjection(weight, spectrum).weight(alpha)
