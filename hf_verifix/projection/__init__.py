"""Importance scaling, the eigendecomposition of Grams and the projected weights."""

from .spectrum import Spectrum, decompose, importance_scaling
from .update import LayerProjection, projected_weight

__all__ = ["LayerProjection", "Spectrum", "decompose", "importance_scaling", "projected_weight"]
