"""Importance scaling, the eigendecomposition of Grams, and the projected weights (by eigenvectors or solves)."""

from .solve import SolvedProjection, Spectra, eigh_pays
from .spectrum import Spectrum, decompose, importance_scaling
from .update import LayerProjection, projected_weight

__all__ = [
    "LayerProjection",
    "SolvedProjection",
    "Spectra",
    "Spectrum",
    "decompose",
    "eigh_pays",
    "importance_scaling",
    "projected_weight",
]
