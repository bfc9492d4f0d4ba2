"""Trusted-sample selectors, registered by name."""

from .base import Selection, TrustedSelector, get_selector, list_selectors, lowest_scores, register_selector
from .loss import LossSelector, per_sample_losses

__all__ = [
    "LossSelector",
    "Selection",
    "TrustedSelector",
    "get_selector",
    "list_selectors",
    "lowest_scores",
    "per_sample_losses",
    "register_selector",
]
