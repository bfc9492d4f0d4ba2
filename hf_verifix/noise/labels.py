"""Noisy labels as a result (:class:`NoisyLabels`) and the checks every noise model shares.

Example:
    >>> checked_rate(0.25), as_label_tensor([2, 0]).tolist()
    (0.25, [2, 0])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ConfigError, DataError, InputTypeError

if TYPE_CHECKING:
    pass

__all__ = [
    "NOISE_KINDS",
    "LabelsLike",
    "NoisyLabels",
    "as_label_tensor",
    "checked_num_classes",
    "checked_rate",
    "prepared",
    "seeded_generator",
    "unchanged",
]

LabelsLike = Sequence[int] | np.ndarray | torch.Tensor
"""Anything accepted as labels: a sequence of ints, a 1-D integer NumPy array or tensor.

Example:
    >>> labels: LabelsLike = [0, 2, 1]
"""

NOISE_KINDS: tuple[str, ...] = ("symmetric", "pair", "transition", "hierarchical")
"""Values accepted by the ``kind`` argument of :func:`add_label_noise`.

Example:
    >>> "pair" in NOISE_KINDS
    True
"""


@dataclass(frozen=True)
class NoisyLabels:
    """Result of a noise-injection function.

    Attributes:
        labels: The noisy labels, an ``int64`` tensor of shape ``(n,)``.
        flipped: A ``bool`` tensor of shape ``(n,)``, ``True`` where the noisy label differs from
            the original one.

    Example:
        >>> from hf_verifix.noise import symmetric_noise
        >>> noisy = symmetric_noise([0, 1, 0, 1], rate=0.5, seed=0)
        >>> noisy.labels.dtype, noisy.flipped.dtype, noisy.num_flipped
        (torch.int64, torch.bool, 2)
    """

    labels: torch.Tensor
    flipped: torch.Tensor

    def __post_init__(self) -> None:
        if self.labels.shape != self.flipped.shape:
            raise DataError(
                f"NoisyLabels.labels and NoisyLabels.flipped must have the same shape, got "
                f"{tuple(self.labels.shape)} and {tuple(self.flipped.shape)}."
            )

    @property
    def num_flipped(self) -> int:
        """Number of samples whose label was changed.

        Example:
            >>> from hf_verifix.noise import symmetric_noise
            >>> symmetric_noise(list(range(10)), rate=0.3).num_flipped
            3
        """
        return int(self.flipped.sum().item())

    @property
    def rate(self) -> float:
        """Actual fraction of flipped samples (``0.0`` for empty labels).

        Example:
            >>> from hf_verifix.noise import symmetric_noise
            >>> symmetric_noise([0, 1] * 50, rate=0.25).rate
            0.25
        """
        n = self.flipped.numel()
        return self.num_flipped / n if n else 0.0


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def as_label_tensor(labels: LabelsLike, name: str = "labels") -> torch.Tensor:
    """Converts labels to a fresh 1-D int64 CPU tensor, with clear errors.

    Example:
        >>> as_label_tensor((3, 1)).tolist()
        [3, 1]
    """
    if isinstance(labels, torch.Tensor):
        tensor = labels.detach().cpu()
    else:
        type_error = InputTypeError(
            f"{name} must be a list, NumPy array or torch tensor of integers, got {type(labels).__name__}. "
            f"Convert it, e.g. with `np.asarray({name}, dtype=np.int64)`."
        )
        if isinstance(labels, (str, bytes, Mapping, set, frozenset)):
            raise type_error
        try:
            array = np.asarray(labels)
        except (TypeError, ValueError) as err:  # e.g. ragged nested lists
            raise type_error from err
        if array.ndim == 0:
            raise type_error
        if array.dtype == object:
            raise InputTypeError(
                f"{name} must contain only integers, got values of mixed/object type. "
                f"Convert it with `np.asarray({name}, dtype=np.int64)`."
            )
        tensor = torch.from_numpy(np.array(array, copy=True)) if array.size else torch.zeros(0, dtype=torch.int64)
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise InputTypeError(
            f"{name} must have an integer dtype, got {tensor.dtype}. If the values are whole numbers, convert them "
            f"with `.long()` / `.astype(np.int64)`."
        )
    if tensor.ndim != 1:
        raise DataError(
            f"{name} must be 1-D (one class index per sample), got shape {tuple(tensor.shape)}. "
            f"If you have one-hot/probability targets, pass `{name}.argmax(-1)`."
        )
    tensor = tensor.to(torch.int64).clone()
    if tensor.numel() and int(tensor.min()) < 0:
        raise DataError(
            f"{name} must be >= 0, got minimum {int(tensor.min())}. Map your classes to 0..num_classes-1 first."
        )
    return tensor


def checked_num_classes(labels: torch.Tensor, num_classes: int | None) -> int:
    """``num_classes`` (inferred as max label + 1 when None), refused when a label does not fit in it.

    Example:
        >>> checked_num_classes(torch.tensor([0, 4]), None), checked_num_classes(torch.tensor([0, 4]), 10)
        (5, 10)
    """
    inferred = int(labels.max()) + 1 if labels.numel() else 0
    if num_classes is None:
        num_classes = inferred
        source = "inferred as max(labels) + 1"
        if num_classes < 2:
            raise ConfigError(
                f"num_classes must be >= 2 to flip labels, but it was {source} = {num_classes}. "
                f"Pass num_classes=... explicitly."
            )
        return num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise InputTypeError(
            f"num_classes must be an int or None, got {type(num_classes).__name__} ({num_classes!r})."
        )
    num_classes = int(num_classes)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2 to flip labels, got {num_classes}.")
    if inferred > num_classes:
        raise DataError(
            f"labels must be < num_classes={num_classes}, got a label {inferred - 1}. "
            f"Pass num_classes >= {inferred} or fix the labels."
        )
    return num_classes


def checked_rate(rate: float) -> float:
    """``rate`` as a float in [0, 1), else an InputTypeError or ConfigError.

    Example:
        >>> checked_rate(0.4)
        0.4
    """
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise InputTypeError(f"rate must be a float in [0, 1), got {type(rate).__name__} ({rate!r}).")
    rate = float(rate)
    if not (0.0 <= rate < 1.0) or math.isnan(rate):
        raise ConfigError(
            f"rate must be in [0, 1), got {rate}. It is the fraction of labels to flip, e.g. rate=0.25 for 25% "
            f"noise (not a percentage)."
        )
    return rate


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (an int), so the same seed always draws the same noise.

    Example:
        >>> torch.equal(torch.rand(2, generator=seeded_generator(3)), torch.rand(2, generator=seeded_generator(3)))
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InputTypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r}).")
    return torch.Generator(device="cpu").manual_seed(int(seed))


def prepared(
    labels: LabelsLike, rate: float, num_classes: int | None, seed: int
) -> tuple[float, torch.Tensor, int, torch.Generator | None]:
    """What a rate-based noise model starts from: the checked rate, the clean labels as int64, the class count and a
    seeded generator (None for empty labels, which nothing flips).

    Example:
        >>> rate, clean, k, _ = prepared([0, 2, 1], 0.5, None, seed=0)
        >>> rate, clean.tolist(), k
        (0.5, [0, 2, 1], 3)
    """
    rate = checked_rate(rate)
    clean = as_label_tensor(labels)
    if clean.numel() == 0:
        return rate, clean, 0, None
    return rate, clean, checked_num_classes(clean, num_classes), seeded_generator(seed)


def unchanged(clean: torch.Tensor) -> NoisyLabels:
    """No flips (the result for empty labels).

    Example:
        >>> unchanged(torch.zeros(0, dtype=torch.long)).num_flipped
        0
    """
    return NoisyLabels(labels=clean, flipped=torch.zeros(clean.numel(), dtype=torch.bool))
