"""Verifix's trusted set: the samples whose loss has the lowest input curvature under the labels the user has.

Verifix (sec. 4.2, Equation 5) scores a sample ``(x, y)`` by a finite-difference estimate of the curvature of the
loss around ``x``, averaged over ``n`` Rademacher directions ``v_j`` (entries ±1, the shape of ``x``)::

    Curv(x, y) = (1/n) Σ_j ‖∇_x [L(x + h·v_j, y) − L(x, y)]‖²

and keeps the samples with the lowest scores: a network memorises a mislabelled sample with a sharp loss around it.
"""

from __future__ import annotations

import math
import numbers
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ..data.source import Batch, SampleSource
from ..errors import ConfigError, DataError, NumericalError
from ..models.forward import evaluation_mode, model_device
from ..utils.distributed import max_across_processes, sum_across_processes
from ._validation import checked_logits, non_finite_message
from .base import as_int, register_selector
from .selector import SampleScores, ScoringSelector

__all__ = ["CurvatureSelector", "per_sample_curvature"]

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """Return a well-mixed 64-bit integer of ``value`` (the SplitMix64 finaliser)."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _sample_seed(seed: int, index: int) -> int:
    """Return the generator seed of sample ``index``: its directions then do not depend on the batching."""
    return _splitmix64((_splitmix64(seed & _MASK64) + index) & _MASK64)


def _generator(device: torch.device) -> torch.Generator:
    """Return a generator on ``device`` (random draws stay on the accelerator), or on the CPU where unsupported."""
    if device.type != "cpu":
        try:
            return torch.Generator(device=device)
        except (RuntimeError, TypeError):
            pass
    return torch.Generator()


def _rademacher(batch: Batch, n: int, seed: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Return the ``(batch, n, *sample_shape)`` int8 ±1 directions, each sample's drawn from its own seed."""
    shape = (n, *batch.inputs.shape[1:])
    draws = []
    for index in batch.indices.tolist():
        generator.manual_seed(_sample_seed(seed, int(index)))
        bits = torch.randint(0, 2, shape, generator=generator, device=generator.device, dtype=torch.int8)
        draws.append(bits.to(device) * 2 - 1)
    return torch.stack(draws)


def _input_gradient(
    model: nn.Module, x: torch.Tensor, shifted: torch.Tensor, labels: torch.Tensor, batch: Batch
) -> tuple[torch.Tensor, int]:
    """Return ``∇_x Σ_i L(shifted_i, y_i)`` (row ``i`` is sample ``i``'s own gradient) and the class count."""
    logits = checked_logits(model, shifted, batch)
    losses = F.cross_entropy(logits, labels, reduction="none")
    finite = torch.isfinite(losses).cpu()
    if not finite.all():
        raise NumericalError(non_finite_message(batch.inputs, logits.detach().cpu(), batch.indices, finite))
    total = losses.sum()  # summed, not averaged: each sample's input gradient is its own, whatever the batch size
    grad = None
    if total.requires_grad:
        (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    if grad is None:
        raise DataError(
            "the model's loss does not depend differentiably on its inputs (no gradient reached them), so their "
            "curvature cannot be computed; use a model without detach()/no_grad()/integer casts in its forward, or "
            "the 'loss' selector"
        )
    return grad, logits.shape[-1]


def per_sample_curvature(
    model: nn.Module, source: SampleSource, n: int = 10, h: float = 1e-3, seed: int = 0, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return each sample's loss curvature (Verifix Eq. 5), its label and the model's class count.

    The cross-entropy uses the labels ``source`` yields (the noisy labels), in eval mode. Each sample's directions
    come from a generator seeded by ``seed`` and the sample's index, so a score does not depend on the batch size or
    on the other samples; the same seed gives the same scores on the same kind of device. Only the inputs are
    differentiated: the model's parameters get no ``.grad``.

    Args:
        model: The classifier; it must be differentiable with respect to its (floating-point) inputs.
        source: The samples and their (possibly noisy) labels.
        n: Number of Rademacher directions averaged over.
        h: Finite-difference step along each direction, in input units.
        seed: Seed of the directions.
        progress: Show a progress bar.

    Returns:
        ``(scores, labels, num_classes)``: float64 scores (lower = flatter loss = more trusted) and the labels, both
        indexed like the dataset.

    Raises:
        ConfigError: ``n`` is not an integer >= 1 or ``h`` not a finite number > 0.
        DataError: Inputs that are not floating point, labels out of range, a model not differentiable in its
            inputs or returning logits of the wrong shape.
        NumericalError: A loss or curvature is NaN/Inf.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(4, 3), torch.tensor([0, 1, 1, 0])))
        >>> model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> scores, labels, k = per_sample_curvature(model, source, n=2)
        >>> scores.shape, k, bool((scores >= 0).all())
        (torch.Size([4]), 2, True)
    """
    _check_hyperparameters(n, h)
    n, h = operator.index(n), float(h)
    device = model_device(model)
    generator = _generator(device)
    num_classes = 0
    with evaluation_mode(model), torch.inference_mode(False), torch.enable_grad():
        # Zero-filled so that, with several processes, summing the shards' tensors gathers every sample once.
        scores = torch.zeros(len(source), dtype=torch.float64)
        labels = torch.zeros(len(source), dtype=torch.long)
        for batch in source.batches(desc="scoring (curvature)", progress=progress):
            curvature, num_classes = _batch_curvature(model, batch, n, h, seed, generator, device)
            scores[batch.indices] = curvature
            labels[batch.indices] = batch.labels
    return sum_across_processes(scores), sum_across_processes(labels), max_across_processes(num_classes)


def _batch_curvature(
    model: nn.Module, batch: Batch, n: int, h: float, seed: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, int]:
    """Return the curvature of every sample of ``batch`` (float64, CPU) and the class count; gradients enabled."""
    inputs = batch.inputs.to(device)
    if not inputs.is_floating_point():
        raise DataError(
            f"curvature differentiates the loss with respect to the inputs, which must be floating point, "
            f"got a {inputs.dtype} batch (samples {batch.indices[:5].tolist()}); convert the inputs to float "
            "in the transform (e.g. torchvision's ToImage + ToDtype(torch.float32, scale=True))"
        )
    x = inputs.detach().requires_grad_(True)
    y = batch.labels.to(device)
    base, num_classes = _input_gradient(model, x, x, y, batch)
    base = base.detach().flatten(1).double()
    directions = _rademacher(batch, n, seed, generator, device)
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=device)
    for j in range(n):
        shifted = x + h * directions[:, j].to(x.dtype)
        grad, _ = _input_gradient(model, x, shifted, y, batch)
        total += (grad.detach().flatten(1).double() - base).pow(2).sum(dim=1)
    curvature = (total / n).cpu()
    finite = torch.isfinite(curvature)
    if not finite.all():
        raise NumericalError(
            f"the curvature of samples {batch.indices[~finite][:5].tolist()} is NaN/Inf although their loss "
            "is finite; run the model in float32 or lower h"
        )
    return curvature, num_classes


def _check_hyperparameters(n: object, h: object) -> None:
    count = as_int(n)
    if count is None or count < 1:
        raise ConfigError(
            f"n (the number of Rademacher directions) must be an integer >= 1, got {n!r}; the paper uses n=10"
        )
    if isinstance(h, bool) or not isinstance(h, numbers.Real) or not math.isfinite(h) or h <= 0:
        raise ConfigError(
            f"h (the finite-difference step) must be a finite number > 0, got {h!r}; the paper uses 1e-3"
        )


@register_selector("curvature")
class CurvatureSelector(ScoringSelector[SampleScores]):
    """Pick the samples with the lowest input curvature of their loss under their given labels (Verifix sec. 4.2).

    Args:
        n: Number of Rademacher directions per sample (Equation 5's ``n``; the paper uses 10). The cost is ``n + 1``
            forward and backward passes over the data.
        h: Finite-difference step along each direction, in the units of the model's (normalised) inputs.

    Raises:
        ConfigError: ``n`` is not an integer >= 1 or ``h`` not a finite number > 0.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> source = SampleSource(TensorDataset(torch.randn(10, 3), torch.randint(0, 2, (10,))))
        >>> model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
        >>> CurvatureSelector(n=2).select(model, source, n_trusted=4).indices.numel()
        4
    """

    def __init__(self, n: int = 10, h: float = 1e-3) -> None:
        _check_hyperparameters(n, h)
        self.n = operator.index(n)
        self.h = float(h)

    def __repr__(self) -> str:
        return f"CurvatureSelector(n={self.n}, h={self.h})"

    def score(self, model: nn.Module, source: SampleSource, *, seed: int = 0, progress: bool = False) -> SampleScores:
        """Score every sample by its curvature (see :func:`per_sample_curvature`).

        ``seed`` seeds the Rademacher directions: the same seed gives the same scores, hence the same selection.

        Example:
            >>> from torch.utils.data import TensorDataset
            >>> source = SampleSource(TensorDataset(torch.randn(6, 3), torch.tensor([0, 1] * 3)))
            >>> model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
            >>> first = CurvatureSelector(n=2).score(model, source, seed=7).scores
            >>> torch.equal(first, CurvatureSelector(n=2).score(model, source, seed=7).scores)
            True
        """
        return SampleScores(*per_sample_curvature(model, source, self.n, self.h, seed, progress))
