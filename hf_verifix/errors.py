"""Exceptions raised by hf_verifix.

Every error inherits :class:`VerifixError` *and* the builtin exception it replaces, so both
``except VerifixError`` and ``except ValueError`` catch a bad configuration.

Example:
    >>> from hf_verifix.errors import ConfigError
    >>> try:
    ...     raise ConfigError("alpha must be > 0, got -1.0")
    ... except ValueError as err:
    ...     print(err)
    alpha must be > 0, got -1.0
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DataError",
    "InputTypeError",
    "LayerError",
    "NumericalError",
    "VerifixError",
    "describe_value",
]


class VerifixError(Exception):
    """Base class of every error raised by hf_verifix.

    Example:
        >>> issubclass(ConfigError, VerifixError)
        True
    """


class ConfigError(VerifixError, ValueError):
    """A configuration value is out of range or of the wrong type.

    Example:
        >>> from hf_verifix import CorrectionConfig
        >>> CorrectionConfig(alpha=0)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigError: alpha must be a finite number > 0 ...
    """


class InputTypeError(VerifixError, TypeError):
    """An argument of the wrong type (labels of floats, a rate given as a string): also a ``TypeError``.

    Example:
        >>> from hf_verifix.noise import symmetric_noise
        >>> symmetric_noise([0, 1], rate="0.2", num_classes=2)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        InputTypeError: rate must be a float in [0, 1), got str ('0.2').
    """


class DataError(VerifixError, ValueError):
    """The data given to a corrector cannot be used (columns, labels, shapes, sizes).

    Example:
        >>> raise DataError("labels must be in [0, 10), got 12")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        DataError: labels must be in [0, 10), got 12
    """


class LayerError(VerifixError, ValueError):
    """The model has no layer that can be corrected, or a requested layer does not exist.

    Example:
        >>> raise LayerError("no targetable layer")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        LayerError: no targetable layer
    """


class NumericalError(VerifixError, ArithmeticError):
    """Activations or statistics contain NaN/Inf, or a decomposition failed on every fallback.

    Example:
        >>> raise NumericalError("NaN in the inputs of 'fc'")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        NumericalError: NaN in the inputs of 'fc'
    """


def describe_value(value: Any) -> str:
    """``repr`` of a received value with its type, for error messages (cut to 80 characters).

    Example:
        >>> describe_value(True), describe_value("3e4")
        ('True (bool)', "'3e4' (str)")
    """
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


class HubError(VerifixError, OSError):
    """Talking to the Hub failed (unreachable, refused credentials, a repo that already holds a model...).

    The message says what to do and, for a push, where the local copy is.

    Example:
        >>> isinstance(HubError("push failed"), OSError)
        True
    """


class LoadError(VerifixError, OSError):
    """A model or dataset could not be found or loaded; the message names what was tried and the fix.

    Example:
        >>> issubclass(LoadError, VerifixError)
        True
    """
