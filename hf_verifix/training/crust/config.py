"""The hyperparameters of CRUST training (Mirzasoleiman et al., 2020), validated on creation.

Example:
    >>> CrustConfig(fraction=0.3).members_per_medoid
    1
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..._validation import is_number, valid_int
from ...errors import ConfigError, describe_value

__all__ = ["CrustConfig"]

# What each integer option means, for its error message.
_INT_OPTIONS = {
    "members_per_medoid": (0, 1, "it is how many members of its cluster each medoid is mixed with, 0 for none"),
    "block_size": (1, 1024, "it is how many rows of distances facility location computes at once"),
    "max_dense": (0, 2**26, "it is the largest n_c² whose similarity matrix is materialised (n_c² × 4 bytes)"),
}


@dataclass
class CrustConfig:
    """Hyperparameters of CRUST training (validated on creation).

    Args:
        fraction: Coreset size k as a fraction of the training set, 0 < fraction ≤ 1 (the paper's default: 0.5).
            k = round(fraction × n) medoids per epoch, split over classes in proportion to their sizes.
        mixup_alpha: α of λ ~ Beta(α, α) in eq. 11 (> 0; the seed text gives no value, 1.0 draws λ uniformly).
        members_per_medoid: |R_j|, how many members of its cluster each medoid is mixed with (the paper uses 1).
            0 trains on the medoids themselves, weighted by their cluster sizes (the "w/o mixup" ablation).
        gradient: The gradient proxies: ``"logits"`` (softmax - onehot, eq. 9) or ``"last_layer"`` (its outer
            product with the final nn.Linear's input: that layer's exact gradient; costs more distances).
        classes: Group the samples by their noisy ``"labels"`` (default; the authors' code) or by the model's
            ``"predictions"`` at the epoch's start (Algorithm 1 line 4).
        seed: Seed of the members R_j, the λ draws and the epoch's order (with the epoch number); ``None`` uses the
            Trainer's ``args.data_seed`` or ``args.seed``.
        block_size: Rows per block of distance computations in facility location.
        max_dense: A class with n_c² ≤ max_dense gets its similarity matrix materialised (n_c² × 4 bytes).
        progress: Show a tqdm bar (main process only) on the per-epoch proxy pass, unless the Trainer's
            ``disable_tqdm`` is set.

    Raises:
        ConfigError: A value of the wrong type or out of range (the message names it and the fix).

    Example:
        >>> CrustConfig(fraction=0.5, mixup_alpha=0.2).members_per_medoid
        1
        >>> CrustConfig(fraction=0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigError: fraction must be a number in (0, 1] ...
    """

    fraction: float = field(default=0.5, metadata={"help": "Coreset size as a fraction of the training set."})
    mixup_alpha: float = field(default=1.0, metadata={"help": "α of λ ~ Beta(α, α) (eq. 11)."})
    members_per_medoid: int = field(default=1, metadata={"help": "|R_j|; 0 trains on the medoids alone."})
    gradient: Literal["logits", "last_layer"] = field(default="logits", metadata={"help": "Gradient proxies."})
    classes: Literal["labels", "predictions"] = field(default="labels", metadata={"help": "Grouping of U_c."})
    seed: int | None = field(default=None, metadata={"help": "Seed; None: the Trainer's data_seed or seed."})
    block_size: int = field(default=1024, metadata={"help": "Rows per block of distances."})
    max_dense: int = field(default=2**26, metadata={"help": "Largest n_c² with a dense similarity matrix."})
    progress: bool = field(default=True, metadata={"help": "Progress bar on the proxy pass."})

    def __post_init__(self) -> None:
        if not is_number(self.fraction) or not 0 < self.fraction <= 1:
            raise ConfigError(
                f"fraction must be a number in (0, 1] (the share of the training set kept as coreset; the paper "
                f"uses 0.5), got {describe_value(self.fraction)}"
            )
        if not is_number(self.mixup_alpha) or not 0 < self.mixup_alpha < math.inf:
            raise ConfigError(
                f"mixup_alpha must be a finite number > 0 (λ ~ Beta(α, α)), got {describe_value(self.mixup_alpha)}; "
                "for no mixup set members_per_medoid=0"
            )
        for name, (low, example, meaning) in _INT_OPTIONS.items():
            setattr(self, name, valid_int(getattr(self, name), name, low=low, example=example, hint=meaning))
        if self.gradient not in ("logits", "last_layer"):
            raise ConfigError(f"gradient must be 'logits' or 'last_layer', got {describe_value(self.gradient)}")
        if self.classes not in ("labels", "predictions"):
            raise ConfigError(
                f"classes must be 'labels' (group by the noisy labels) or 'predictions' (by the model's "
                f"predictions, Algorithm 1 line 4), got {describe_value(self.classes)}"
            )
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigError(f"seed must be a non-negative integer or None, got {describe_value(self.seed)}")
        if not isinstance(self.progress, bool):
            raise ConfigError(f"progress must be True or False, got {describe_value(self.progress)}")
