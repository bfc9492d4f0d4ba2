"""Trusted-sample selectors, registered by name: ``loss``, ``curvature``, ``bmm``, ``coreset``, ``expert``,
``confident`` and ``random``.

The built-in ones are :class:`ScoringSelector` subclasses: ``select`` checks ``n_trusted`` and the labels, the
subclass's ``score`` scores every sample, and ``pick`` keeps the lowest scores (or, overridden, the selector's own
rule).
"""

from .base import (
    Selection,
    TrustedSelector,
    checked_n_trusted,
    get_selector,
    list_selectors,
    lowest_scores,
    register_selector,
    source_labels,
    trusted_set_quality,
)
from .bmm import BMMSelector
from .confident import ConfidentSelector
from .coreset import CoresetSelector
from .curvature import CurvatureSelector, per_sample_curvature
from .loss import LossSelector, per_sample_losses
from .selector import SampleScores, ScoringSelector
from .simple import ExpertSelector, RandomSelector

__all__ = [
    "BMMSelector",
    "ConfidentSelector",
    "CoresetSelector",
    "CurvatureSelector",
    "ExpertSelector",
    "LossSelector",
    "RandomSelector",
    "SampleScores",
    "ScoringSelector",
    "Selection",
    "TrustedSelector",
    "checked_n_trusted",
    "get_selector",
    "list_selectors",
    "lowest_scores",
    "per_sample_curvature",
    "per_sample_losses",
    "register_selector",
    "source_labels",
    "trusted_set_quality",
]
