"""Checks of values received from users, shared by the modules that accept them (one place, one wording).

Example:
    >>> valid_alpha(3e4, "alpha"), alpha_candidates([1e3, 1e4])
    (30000.0, (1000.0, 10000.0))
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from .errors import ConfigError, DataError, describe_value

__all__ = ["alpha_candidates", "is_number", "trusted_index_tensor", "valid_alpha"]


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (bool excluded).

    Example:
        >>> is_number(3), is_number(True), is_number("3")
        (True, False, False)
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def valid_alpha(value: Any, name: str) -> float:
    """``value`` as a finite float > 0, else a ConfigError naming ``name``.

    Example:
        >>> valid_alpha(1e4, "alpha")
        10000.0
    """
    try:
        number = float(value) if is_number(value) else math.nan
    except OverflowError:  # an int or Fraction too large for a float
        number = math.inf
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a finite number > 0 (e.g. 3e4), got {describe_value(value)}")
    return number


def alpha_candidates(alphas: Any) -> tuple[float, ...]:
    """``alphas`` as a non-empty tuple of valid α values, else a ConfigError with an example.

    Example:
        >>> alpha_candidates([1, 1e4])
        (1.0, 10000.0)
    """
    if isinstance(alphas, (str, bytes)) or not hasattr(alphas, "__iter__"):
        raise ConfigError(f"alphas must be a list of numbers > 0 such as [1e3, 3e4, 1e6], got {alphas!r}")
    candidates = tuple(valid_alpha(a, "every entry of alphas") for a in alphas)
    if not candidates:
        raise ConfigError(
            "alphas is empty; pass at least one α such as [1e3, 3e4, 1e6], or None for config.alpha_grid"
        )
    return candidates


def trusted_index_tensor(trusted_indices: Any, size: int) -> torch.Tensor:
    """``trusted_indices`` (indices or a boolean mask over ``size`` samples) as sorted unique int64 indices.

    Example:
        >>> trusted_index_tensor([4, 1], 5).tolist()
        [1, 4]
    """
    if isinstance(trusted_indices, (str, bytes)):
        raise DataError(
            f"trusted_indices must be integer indices or a boolean mask, got {type(trusted_indices).__name__} "
            f"{trusted_indices!r}; pass e.g. [0, 5, 9] or a tensor of indices"
        )
    try:
        indices = torch.as_tensor(list(trusted_indices) if isinstance(trusted_indices, range) else trusted_indices)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(
            f"trusted_indices must be integer indices or a boolean mask, got {type(trusted_indices).__name__} "
            f"({err}); pass e.g. [0, 5, 9] or a tensor of indices"
        ) from err
    if indices.numel() == 0:
        raise DataError("trusted_indices is empty; pass at least one sample index")
    if indices.dtype == torch.bool:
        if indices.numel() != size:
            raise DataError(f"a boolean trusted mask must have one entry per sample ({size}), got {indices.numel()}")
        indices = torch.nonzero(indices).flatten()
    if indices.is_floating_point() or indices.dim() != 1:
        raise DataError(
            f"trusted_indices must be a 1-D sequence of integer indices, got {tuple(indices.shape)} {indices.dtype}"
        )
    if int(indices.min()) < 0 or int(indices.max()) >= size:
        raise DataError(
            f"trusted_indices must lie in [0, {size}), got values from {int(indices.min())} to {int(indices.max())}"
        )
    unique = torch.unique(indices)
    if unique.numel() != indices.numel():
        raise DataError(f"trusted_indices holds {indices.numel() - unique.numel()} duplicate(s); pass each index once")
    return unique.long()
