"""The hyperparameters of M-DYR-H and its BMM-guided mixup variants (Arazo et al., 2019), validated on creation.

Example:
    >>> BootstrappingConfig.for_method("MD-DYR-SH").bootstrap
    'soft_to_hard'
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from ..._validation import is_number, valid_int
from ...errors import ConfigError, describe_value

__all__ = ["METHODS", "BootstrappingConfig"]

BootstrapMode = Literal["hard", "soft", "soft_to_hard"]
MixupMode = Literal["static", "dynamic", "beta", "binomial"]

METHODS: dict[str, dict[str, str]] = {
    "M-DYR-H": {"bootstrap": "hard", "mixup": "static"},
    "M-DYR-S": {"bootstrap": "soft", "mixup": "static"},
    "MD-DYR-SH": {"bootstrap": "soft_to_hard", "mixup": "dynamic"},
    "MD-DYR-SH-beta": {"bootstrap": "soft_to_hard", "mixup": "beta"},
    "MD-DYR-SH-binomial": {"bootstrap": "soft_to_hard", "mixup": "binomial"},
}
"""The named methods of the seeds and the :class:`BootstrappingConfig` options they stand for.

Example:
    >>> METHODS["M-DYR-H"]
    {'bootstrap': 'hard', 'mixup': 'static'}
"""


@dataclasses.dataclass(frozen=True)
class BootstrappingConfig:
    """Hyperparameters of M-DYR-H and its variants (defaults: M-DYR-H as in Arazo et al., 2019).

    | method (:data:`METHODS`) | ``bootstrap`` | ``mixup`` |
    |---|---|---|
    | M-DYR-H | ``"hard"`` | ``"static"`` |
    | M-DYR-S | ``"soft"`` | ``"static"`` |
    | MD-DYR-SH | ``"soft_to_hard"`` | ``"dynamic"`` (eq. 9) |
    | MD-DYR-SH, Beta / Binomial-guided (sec. 5.2) | ``"soft_to_hard"`` | ``"beta"`` / ``"binomial"`` |

    Args:
        bootstrap: The prediction z in the targets (1 − w)y + wz: ``"hard"`` (one-hot arg-max), ``"soft"``
            (softmax), or ``"soft_to_hard"`` (softmax with a temperature falling linearly from 1 at the first
            bootstrapping epoch to ``final_temperature`` at the last one, as the reference's MD-DYR-SH).
        mixup: How pairs are mixed after the warm-up: ``"static"`` (δ ~ Beta(α, α) per batch), ``"dynamic"``
            (δ = δ_p/(δ_p + δ_q), eq. 9), ``"beta"`` (δ ~ Beta(r, 1 − r)) or ``"binomial"`` (sec. 5.2).
        alpha: α of static mixup, also used in the warm-up (the paper: 32).
        reg_weight: η, the weight of the class-prior regulariser R (the paper: 1; 0 turns it off).
        prior: The class prior p_c of R (one value per class, normalised); None is uniform.
        warmup_epochs: Epochs trained before the first mixture fit (the paper: 105 of 300 with mixup, 30 of 120
            without; scale it with your schedule so the model fits the clean samples but not yet the noisy ones).
        warmup: ``"mixup"`` (static mixup on the labels, the reference code for the mixup methods) or ``"ce"``
            (cross-entropy on the labels).
        binomial_n: n of the Binomial-guided weights (the seed: 10000).
        final_temperature: The last temperature of ``"soft_to_hard"`` (the reference: 0.001).
        bmm_max_iters: EM iterations at most per mixture fit (the paper: 10).
        progress: Show a progress bar for each per-epoch loss pass (main process; hidden by ``disable_tqdm``).

    Raises:
        ConfigError: An option out of range (the message says what is allowed).

    Example:
        >>> BootstrappingConfig().bootstrap, BootstrappingConfig().alpha
        ('hard', 32.0)
        >>> BootstrappingConfig(mixup="uniform")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigError: mixup must be one of ['static', 'dynamic', 'beta', 'binomial'], got 'uniform' (str)
    """

    bootstrap: BootstrapMode = "hard"
    mixup: MixupMode = "static"
    alpha: float = 32.0
    reg_weight: float = 1.0
    prior: tuple[float, ...] | None = None
    warmup_epochs: int = 10
    warmup: Literal["mixup", "ce"] = "mixup"
    binomial_n: int = 10000
    final_temperature: float = 0.001
    bmm_max_iters: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (
            ("bootstrap", ("hard", "soft", "soft_to_hard")),
            ("mixup", ("static", "dynamic", "beta", "binomial")),
            ("warmup", ("mixup", "ce")),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {describe_value(value)}")
        for name, low_open in (("alpha", True), ("reg_weight", False)):
            value = getattr(self, name)
            ok = is_number(value) and math.isfinite(value)
            if not ok or (value <= 0 if low_open else value < 0):
                bound = "> 0" if low_open else ">= 0"
                raise ConfigError(f"{name} must be a finite number {bound}, got {describe_value(value)}")
            object.__setattr__(self, name, float(value))
        temperature = self.final_temperature
        if not is_number(temperature) or not 0 < temperature <= 1:
            raise ConfigError(
                f"final_temperature must be a number in (0, 1], got {describe_value(temperature)}; e.g. 0.001"
            )
        object.__setattr__(self, "final_temperature", float(temperature))
        for name, low, example, hint in (
            ("warmup_epochs", 0, 10, "the number of epochs before the first mixture fit"),
            ("binomial_n", 1, 10000, "the seed uses 10000"),
            ("bmm_max_iters", 1, 10, "the paper uses 10"),
        ):
            object.__setattr__(self, name, valid_int(getattr(self, name), name, low, example, hint=hint))
        if not isinstance(self.progress, bool):
            raise ConfigError(f"progress must be True or False, got {describe_value(self.progress)}")
        if self.prior is not None:
            values = list(self.prior) if isinstance(self.prior, (list, tuple)) else None
            ok = values is not None and len(values) >= 2
            ok = ok and all(is_number(v) for v in values or [])
            ok = ok and all(math.isfinite(v) and v >= 0 for v in values or []) and sum(values or []) > 0
            if not ok:
                raise ConfigError(
                    f"prior must be None (uniform) or one non-negative number per class with a positive sum, e.g. "
                    f"(0.5, 0.3, 0.2); got {describe_value(self.prior)}"
                )
            object.__setattr__(self, "prior", tuple(float(v) for v in values or []))

    @classmethod
    def for_method(cls, name: str, **overrides: Any) -> BootstrappingConfig:
        """Return the config of a named method of :data:`METHODS`, with ``overrides`` applied.

        Example:
            >>> BootstrappingConfig.for_method("MD-DYR-SH-beta", warmup_epochs=3).mixup
            'beta'
        """
        if name not in METHODS:
            raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
        return cls(**{**METHODS[name], **overrides})
