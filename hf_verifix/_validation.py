"""Checks of values received from users, shared by the modules that accept them (one place, one wording).

Example:
    >>> valid_alpha(3e4, "alpha"), alpha_candidates([1e3, 1e4])
    (30000.0, (1000.0, 10000.0))
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

import torch

from .errors import ConfigError, DataError, InputTypeError, VerifixError, describe_value

__all__ = [
    "MAX_SEED",
    "ON_UNCORRECTABLE",
    "alpha_candidates",
    "check_materialised",
    "checked_limit",
    "is_number",
    "trusted_index_tensor",
    "valid_alpha",
    "valid_int",
    "valid_on_uncorrectable",
    "valid_patterns",
]


MAX_SEED = 2**64 - 1
"""The largest seed (torch generators take 64-bit seeds)."""
_MAX_SEED_TEXT = "2**64 - 1"


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


def check_materialised(model: torch.nn.Module) -> None:
    """Refuse a model with tensors on the meta device (no data to correct), naming them and the fix.

    Example:
        >>> check_materialised(torch.nn.Linear(2, 2))  # real tensors: nothing to say
    """
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise VerifixError(
            f"the model has {len(on_meta)} tensor(s) on the meta device (no data), e.g. {on_meta[:3]}; "
            "materialise them first (model.to_empty(device='cpu') then load_state_dict, or load the model "
            "without device_map='meta')"
        )


def valid_int(value: Any, name: str, low: int, example: int, high: int | None = None, hint: str = "") -> int:
    """``value`` as an int in [low, high], else a ConfigError naming it, what is allowed and ``hint`` (the fix).

    Example:
        >>> valid_int(3, "batch_size", low=1, example=64)
        3
    """
    upper = _MAX_SEED_TEXT if high == MAX_SEED else str(high)
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {upper}]"
    fix = f"; {hint}" if hint else ""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ConfigError(f"{name} must be {allowed} (e.g. {example}), got {describe_value(value)}{fix}")
    number = int(value)
    if number < low or (high is not None and number > high):
        raise ConfigError(f"{name} must be {allowed} (e.g. {example}), got {number}{fix}")
    return number


ON_UNCORRECTABLE = ("error", "skip")


def valid_on_uncorrectable(value: Any) -> str:
    """``value`` if it is one of :data:`ON_UNCORRECTABLE`, else a ConfigError saying what each means.

    Example:
        >>> valid_on_uncorrectable("skip")
        'skip'
    """
    if not isinstance(value, str) or value not in ON_UNCORRECTABLE:
        raise ConfigError(
            f"on_uncorrectable must be 'error' (refuse a model with layers that cannot be corrected) or 'skip' "
            f"(leave those layers unchanged), got {describe_value(value)}"
        )
    return value


def valid_patterns(value: Any, name: str) -> list[str] | None:
    """``value`` (a pattern or list of regular expressions over layer names, or None) as a list, each compiled.

    Example:
        >>> valid_patterns("fc", "target_modules")
        ['fc']
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ConfigError(
            f"{name} must be a list of regular expressions over layer names (e.g. ['fc', 'layer4\\..*']) or None, "
            f"got {describe_value(value)}"
        )
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ConfigError(
                f"{name} entry {pattern!r} is not a valid regular expression ({err}); escape special characters "
                "with re.escape or fix the pattern"
            ) from err
    return list(value)


def checked_limit(limit: int | None) -> int | None:
    """A row limit: None (everything) or a non-negative int, else an InputTypeError/ConfigError with the fix.

    Example:
        >>> checked_limit(100), checked_limit(None)
        (100, None)
    """
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral):
        raise InputTypeError(f"limit must be a non-negative int or None, got {type(limit).__name__} ({limit!r}).")
    if limit < 0:
        raise ConfigError(
            f"limit must be a non-negative int or None, got {limit}; pass limit=None to load everything."
        )
    return int(limit)
