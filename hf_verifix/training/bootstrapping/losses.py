"""The math of M-DYR-H and its variants (Arazo et al., 2019): bootstrapped targets, mixup loss, R, mixing weights.

Pure functions of tensors; :class:`~hf_verifix.training.bootstrapping.BootstrappingTrainer` calls them each step.

Example:
    >>> bootstrapped_targets(torch.tensor([0]), torch.tensor([[0.0, 2.0]]), torch.tensor([0.25])).tolist()
    [[0.75, 0.25]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ..._validation import is_number
from ...errors import ConfigError, describe_value

__all__ = [
    "beta_guided_weights",
    "binomial_guided_weights",
    "bootstrapped_targets",
    "class_prior_regularizer",
    "dynamic_mixup_weights",
    "mixup_bootstrapping_loss",
    "static_mixup_weights",
]


def bootstrapped_targets(
    labels: torch.Tensor,
    logits: torch.Tensor,
    noisy_posterior: torch.Tensor,
    mode: Literal["hard", "soft"] = "hard",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Return the dynamic bootstrapping targets (1 − w)·y + w·z of seed eq. 2 (the brackets of eq. 8).

    y is the one-hot label, w the sample's p(noisy | loss), and z the model's prediction on the un-mixed sample:
    the one-hot of its arg-max (``"hard"``) or its softmax ``softmax(logits / temperature)`` (``"soft"``; a
    temperature near 0 approaches the hard target, as the soft-to-hard schedule of MD-DYR-SH does).

    Args:
        labels: Integer labels, shape ``(B,)``.
        logits: The model's logits on the un-mixed inputs, shape ``(B, C)`` (used without gradients).
        noisy_posterior: Each sample's w in [0, 1], shape ``(B,)``.
        mode: ``"hard"`` or ``"soft"``.
        temperature: Softmax temperature of ``"soft"`` (> 0).

    Returns:
        A ``(B, C)`` float tensor whose rows sum to 1.

    Example:
        >>> logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
        >>> bootstrapped_targets(torch.tensor([0, 0]), logits, torch.tensor([0.5, 1.0])).tolist()
        [[0.5, 0.5], [1.0, 0.0]]
    """
    if mode not in ("hard", "soft"):
        raise ConfigError(
            f"mode must be 'hard' (one-hot arg-max) or 'soft' (softmax), got {describe_value(mode)}; pass "
            "mode='hard' or mode='soft'"
        )
    if not (is_number(temperature) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(
            f"temperature must be a finite number > 0 (the softmax temperature of mode='soft'), got "
            f"{describe_value(temperature)}; pass e.g. temperature=1.0 (a value near 0 approaches mode='hard')"
        )
    logits = logits.detach().float()
    num_classes = logits.shape[-1]
    one_hot = F.one_hot(labels.long(), num_classes).to(logits.dtype)
    if mode == "hard":
        prediction = F.one_hot(logits.argmax(dim=-1), num_classes).to(logits.dtype)
    else:
        prediction = torch.softmax(logits / temperature, dim=-1)
    w = noisy_posterior.to(logits.dtype).reshape(-1, 1)
    return (1.0 - w) * one_hot + w * prediction


def mixup_bootstrapping_loss(
    log_probs: torch.Tensor, targets_p: torch.Tensor, targets_q: torch.Tensor, weights: torch.Tensor | float
) -> torch.Tensor:
    """Return the mixup bootstrapping loss of seed eq. 8, averaged over the batch.

    l* = −δ·t_pᵀ log h − (1 − δ)·t_qᵀ log h, where h is the prediction on the mixed input δx_p + (1 − δ)x_q and
    t_p, t_q the targets of the two mixed samples (:func:`bootstrapped_targets`; one-hot labels give plain mixup).

    Args:
        log_probs: ``log_softmax`` of the model's logits on the mixed inputs, shape ``(B, C)``.
        targets_p: Targets of the first samples of the pairs, shape ``(B, C)``.
        targets_q: Targets of the second samples, shape ``(B, C)``.
        weights: The mixing coefficient δ of each pair (shape ``(B,)``) or one for the whole batch.

    Example:
        >>> log_h = torch.log(torch.tensor([[0.8, 0.2]]))
        >>> y_p, y_q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> round(float(mixup_bootstrapping_loss(log_h, y_p, y_q, 0.75)), 4)  # -(0.75 log 0.8 + 0.25 log 0.2)
        0.5697
    """
    delta = torch.as_tensor(weights, dtype=log_probs.dtype, device=log_probs.device).reshape(-1)
    cross_p = -(targets_p.to(log_probs.dtype) * log_probs).sum(dim=-1)
    cross_q = -(targets_q.to(log_probs.dtype) * log_probs).sum(dim=-1)
    return (delta * cross_p + (1.0 - delta) * cross_q).mean()


def class_prior_regularizer(probs: torch.Tensor, prior: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """Return R = Σ_c p_c log(p_c / h̄_c) (seed sec. 4.3; Tanaka et al. 2018), h̄ the batch's mean softmax.

    The seed defines h̄_c over the whole dataset; as in the reference code it is taken over the (mixed) batch, so the
    gradient stays cheap. Classes with p_c = 0 contribute 0.

    Args:
        probs: Softmax probabilities, shape ``(B, C)``.
        prior: The class prior p (C values, normalised to sum to 1); uniform when None.

    Example:
        >>> round(float(class_prior_regularizer(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))), 4)  # h̄ = (0.75, 0.25)
        0.1438
    """
    mean = probs.mean(dim=0)
    if prior is None:
        p = torch.full_like(mean, 1.0 / mean.numel())
    else:
        p = torch.as_tensor(prior, dtype=mean.dtype, device=mean.device)
        if p.shape != mean.shape:
            raise ConfigError(
                f"the class prior has {p.numel()} entries but the model predicts {mean.numel()} classes; pass one "
                "prior probability per class (or None for a uniform prior)"
            )
        p = p / p.sum()
    return (torch.xlogy(p, p) - p * torch.log(mean)).sum()


def static_mixup_weights(batch_size: int, alpha: float = 32.0) -> torch.Tensor:
    """Return mixup's coefficient δ ~ Beta(α, α), one draw for the batch, repeated ``batch_size`` times (seed eq. 7).

    One draw per batch as in the reference code; Arazo et al. use α = 32 for M-DYR-H. Uses torch's global RNG.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> w = static_mixup_weights(3)
        >>> w.shape, bool((w == w[0]).all())
        (torch.Size([3]), True)
    """
    if not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha must be a finite number > 0, got {alpha!r}; Arazo et al. use 32")
    draw = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha))).sample()
    return draw.expand(batch_size).clone()


def _clean_share(clean_p: torch.Tensor, clean_q: torch.Tensor) -> torch.Tensor:
    """δ_p / (δ_p + δ_q) as float, 1/2 where both are 0."""
    p, q = clean_p.float(), clean_q.float()
    total = p + q
    return torch.where(total > 0, p / total.clamp_min(torch.finfo(p.dtype).tiny), torch.full_like(p, 0.5))


def dynamic_mixup_weights(clean_p: torch.Tensor, clean_q: torch.Tensor) -> torch.Tensor:
    """Return the dynamic mixup coefficients δ_p / (δ_p + δ_q) of seed eq. 9 (MD-DYR-SH).

    δ_p = p(clean | ℓ_p) and δ_q = p(clean | ℓ_q): the sample more likely clean dominates the mixed input
    x = δ_p/(δ_p + δ_q)·x_p + δ_q/(δ_p + δ_q)·x_q. Where both are 0 the pair is mixed half and half.

    Example:
        >>> w = dynamic_mixup_weights(torch.tensor([0.9, 0.2, 0.0]), torch.tensor([0.1, 0.6, 0.0]))
        >>> [round(v, 4) for v in w.tolist()]
        [0.9, 0.25, 0.5]
    """
    return _clean_share(clean_p, clean_q)


def beta_guided_weights(clean_p: torch.Tensor, clean_q: torch.Tensor) -> torch.Tensor:
    """Return mixing coefficients λ ~ Beta(r, 1 − r), r = δ_p / (δ_p + δ_q), one draw per pair (seed sec. 5.2).

    E[λ] = r (the dynamic mixup coefficient of eq. 9) and Var[λ] = r(1 − r)/2. r is kept in [1e-6, 1 − 1e-6] so
    both Beta parameters stay positive. Uses torch's global RNG.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> w = beta_guided_weights(torch.full((20000,), 0.3), torch.full((20000,), 0.7))
        >>> round(float(w.mean()), 2)
        0.3
    """
    r = _clean_share(clean_p, clean_q).clamp(1e-6, 1.0 - 1e-6)
    return torch.distributions.Beta(r, 1.0 - r).sample()


def binomial_guided_weights(clean_p: torch.Tensor, clean_q: torch.Tensor, n: int = 10000) -> torch.Tensor:
    """Return mixing coefficients λ = K_1 / (K_1 + K_2), K_1 ~ Bin(n, r), K_2 ~ Bin(n, 1 − r) (seed sec. 5.2).

    r = δ_p / (δ_p + δ_q); the seed draws λ_1 and λ_2 "by the same procedure" from r and 1 − r (with n = 10000) and
    weights x_p by λ_1 / (λ_1 + λ_2), x_q by λ_2 / (λ_1 + λ_2); the 1/n scaling of each draw cancels in the ratio.
    Where both draws are 0 (probability (r(1 − r))ⁿ) the coefficient is r. Uses torch's global RNG.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> w = binomial_guided_weights(torch.full((1000,), 0.3), torch.full((1000,), 0.7))
        >>> round(float(w.mean()), 2), bool(w.std() < 0.01)
        (0.3, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}; the seed uses n = 10000")
    r = _clean_share(clean_p, clean_q)
    first = torch.distributions.Binomial(total_count=n, probs=r).sample()
    second = torch.distributions.Binomial(total_count=n, probs=1.0 - r).sample()
    total = first + second
    return torch.where(total > 0, first / total.clamp_min(1.0), r)
