"""A two-component beta mixture over per-sample losses, fitted by EM (Arazo et al., 2019, sec. 3-4).

Clean samples are learned first, so early in training their losses are low and those of mislabelled samples high;
a two-component beta mixture fitted to the normalised losses separates the two, and its posterior gives each sample
a probability of being clean or noisy. The component with the larger mean is the noisy one, decided after EM has
run (the reproduction's fix; the reference code assumed that the component initialised with the larger mean keeps
it).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> losses = np.concatenate([rng.gamma(1.0, 0.1, 800), rng.gamma(20.0, 0.15, 200)])
    >>> bmm = BetaMixture().fit(losses)
    >>> bool(bmm.noisy_posterior([0.05, 3.0]).argmax() == 1)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from ..errors import ConfigError, DataError

__all__ = ["BetaMixture"]

LossesLike = torch.Tensor | np.ndarray | Sequence[float]

_MIN_VARIANCE = 1e-12  # floor of a component's weighted variance (a component on one value has zero variance)
_MIN_MASS = 1e-10  # a component with less total responsibility than this keeps its previous parameters


def _as_float64(values: LossesLike, name: str) -> torch.Tensor:
    """Return ``values`` as a 1-D float64 CPU tensor, or raise a DataError saying what was received."""
    try:
        tensor = values.detach() if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{name} must be a 1-D sequence of numbers (tensor, array or list), got {type(values).__name__}: {err}"
        ) from err
    integer = tensor.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    if not (tensor.is_floating_point() or integer):
        raise DataError(f"{name} must be real numbers, got a {tensor.dtype} tensor")
    tensor = tensor.to(device="cpu", dtype=torch.float64)
    if tensor.dim() != 1:
        raise DataError(f"{name} must be 1-D (one value per sample), got shape {tuple(tensor.shape)}; flatten it")
    bad = ~torch.isfinite(tensor)
    if bad.any():
        where = torch.nonzero(bad).flatten()[:5].tolist()
        raise DataError(
            f"{name} must be finite, got NaN/Inf at positions {where}; drop or fix those samples before fitting"
        )
    return tensor


def _beta_log_pdf(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Log density of Beta(alpha, beta) at ``x`` in (0, 1)."""
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    return (alpha - 1.0) * torch.log(x) + (beta - 1.0) * torch.log1p(-x) - log_norm


class BetaMixture:
    """Two-component beta mixture fitted by EM with a weighted method-of-moments M-step (Arazo et al., 2019).

    Fitting follows the paper's reference code: the losses are normalised to [0, 1] by their 5th and 95th
    percentiles (``normalize=True``); by default (``tails="drop"``) only the losses between those percentiles are
    fitted, as in the reference code, because clipping the outer 10% onto the bounds piles mass at 0 and 1 and biases
    the moments (``tails="clip"`` fits all samples clipped instead). Observations are bounded to
    ``[eps, 1 - eps]``, then at most ``max_iters`` EM iterations run from the reference code's fixed initialisation:
    component 0 = Beta(1, 2) (mean 1/3), component 1 = Beta(2, 1) (mean 2/3), weights 0.5/0.5. The E-step works in
    log space (no 1e-12 floor on the likelihoods, unlike the reference). The M-step sets each component's
    (alpha, beta) from its responsibility-weighted mean m and variance s² (eqs. 5-6):
    alpha = m (m(1 - m)/s² - 1), beta = alpha (1 - m)/m, with s² kept in [1e-12, m(1 - m)) so both stay positive.

    After fitting, the NOISY component is the one with the larger mean, whatever its index (the reproduction's
    fix). :meth:`posterior` and friends accept raw losses: they apply the normalisation learned by :meth:`fit`
    (clipping to [0, 1], then bounding to ``[eps, 1 - eps]``).

    Args:
        max_iters: Maximum number of EM iterations (the paper: 10).
        tol: Stop early when no parameter moves by more than ``tol`` (relative) in an iteration; 0 runs all
            ``max_iters``.
        eps: Observations are bounded to ``[eps, 1 - eps]`` (the paper: 1e-4).
        normalize: Map losses to [0, 1] with their percentiles; with False the values must already lie in [0, 1].
        percentiles: The lower and upper percentiles (0-100) that map to 0 and 1.
        tails: ``"drop"`` fits only the values between the percentiles (reference code); ``"clip"`` fits all values
            clipped to [0, 1].
        alphas_init: Initial alpha of components 0 and 1.
        betas_init: Initial beta of components 0 and 1.
        weights_init: Initial mixing weights (positive, normalised to sum to 1).

    Raises:
        ConfigError: An argument out of range (see the message).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.beta(2, 8, 1400), rng.beta(8, 2, 600)])
        >>> bmm = BetaMixture(normalize=False, max_iters=50).fit(x)
        >>> [round(m, 1) for m in bmm.means.tolist()], bmm.noisy_component
        ([0.2, 0.8], 1)
    """

    def __init__(
        self,
        max_iters: int = 10,
        tol: float = 1e-6,
        eps: float = 1e-4,
        normalize: bool = True,
        percentiles: tuple[float, float] = (5.0, 95.0),
        tails: Literal["drop", "clip"] = "drop",
        alphas_init: tuple[float, float] = (1.0, 2.0),
        betas_init: tuple[float, float] = (2.0, 1.0),
        weights_init: tuple[float, float] = (0.5, 0.5),
    ) -> None:
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise ConfigError(f"max_iters must be an integer >= 1, got {max_iters!r}")
        if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
            raise ConfigError(f"tol must be a finite number >= 0, got {tol!r}")
        if not (isinstance(eps, (int, float)) and 0 < eps < 0.5):
            raise ConfigError(f"eps must be a number in (0, 0.5), got {eps!r}; the paper uses 1e-4")
        if tails not in ("drop", "clip"):
            raise ConfigError(f"tails must be 'drop' or 'clip', got {tails!r}")
        try:
            low, high = (float(p) for p in percentiles)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"percentiles must be a pair (low, high) of numbers, got {percentiles!r}") from err
        if not 0 <= low < high <= 100:
            raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}; e.g. (5, 95)")
        for name, pair, allow_zero in (
            ("alphas_init", alphas_init, False),
            ("betas_init", betas_init, False),
            ("weights_init", weights_init, True),
        ):
            values = list(pair) if isinstance(pair, (tuple, list)) else []
            ok = len(values) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            ok = ok and all(v > 0 for v in values) if not allow_zero else ok and all(v >= 0 for v in values)
            if not ok or sum(values) <= 0:
                raise ConfigError(f"{name} must be a pair of positive finite numbers, got {pair!r}")
        self.max_iters = max_iters
        self.tol = float(tol)
        self.eps = float(eps)
        self.normalize = bool(normalize)
        self.percentiles = (low, high)
        self.tails = tails
        self._alphas = torch.tensor([float(a) for a in alphas_init], dtype=torch.float64)
        self._betas = torch.tensor([float(b) for b in betas_init], dtype=torch.float64)
        weights = torch.tensor([float(w) for w in weights_init], dtype=torch.float64)
        self._weights = weights / weights.sum()
        self._init = (self._alphas.clone(), self._betas.clone(), self._weights.clone())
        self._low = 0.0
        self._high = 1.0
        self.n_iter = 0
        self.fitted = False

    # -- parameters ---------------------------------------------------------------------------------------------

    @property
    def alphas(self) -> torch.Tensor:
        """The alpha parameters of components 0 and 1 (a copy).

        Example:
            >>> BetaMixture().alphas.tolist()
            [1.0, 2.0]
        """
        return self._alphas.clone()

    @property
    def betas(self) -> torch.Tensor:
        """The beta parameters of components 0 and 1 (a copy).

        Example:
            >>> BetaMixture().betas.tolist()
            [2.0, 1.0]
        """
        return self._betas.clone()

    @property
    def weights(self) -> torch.Tensor:
        """The mixing weights of components 0 and 1 (they sum to 1).

        Example:
            >>> BetaMixture(weights_init=(3, 1)).weights.tolist()
            [0.75, 0.25]
        """
        return self._weights.clone()

    @property
    def means(self) -> torch.Tensor:
        """The means alpha / (alpha + beta) of components 0 and 1, on the normalised [0, 1] scale.

        Example:
            >>> [round(m, 3) for m in BetaMixture().means.tolist()]
            [0.333, 0.667]
        """
        return self._alphas / (self._alphas + self._betas)

    @property
    def noisy_component(self) -> int:
        """The index (0 or 1) of the noisy component: the one with the larger mean (index 1 on a tie).

        Example:
            >>> BetaMixture(alphas_init=(2, 1), betas_init=(1, 2)).noisy_component
            0
        """
        means = self.means
        return 0 if float(means[0]) > float(means[1]) else 1

    @property
    def clean_component(self) -> int:
        """The index (0 or 1) of the clean component: the one with the smaller mean.

        Example:
            >>> BetaMixture().clean_component
            0
        """
        return 1 - self.noisy_component

    @property
    def bounds(self) -> tuple[float, float]:
        """The raw losses that map to 0 and 1 (the fitted percentiles; ``(0, 1)`` without normalisation).

        Example:
            >>> BetaMixture(normalize=False).fit([0.1, 0.5, 0.9]).bounds
            (0.0, 1.0)
        """
        return (self._low, self._high)

    def __repr__(self) -> str:
        parts = ", ".join(
            f"Beta({a:.3g}, {b:.3g}) w={w:.3g}"
            for a, b, w in zip(self._alphas.tolist(), self._betas.tolist(), self._weights.tolist(), strict=True)
        )
        return f"BetaMixture([{parts}], noisy={self.noisy_component}, fitted={self.fitted})"

    # -- fitting ------------------------------------------------------------------------------------------------

    def fit(self, losses: LossesLike) -> BetaMixture:
        """Fit the mixture to per-sample ``losses`` by EM from the initial parameters and return ``self``.

        Every call starts again from ``alphas_init``/``betas_init``/``weights_init`` (as the reference code builds a
        new mixture each epoch).

        Raises:
            DataError: Non-finite or non-1-D losses, fewer than 2 values to fit, or (``normalize=False``) values
                outside [0, 1].

        Example:
            >>> bmm = BetaMixture().fit([0.1, 0.2, 0.15, 0.12, 2.0, 2.5, 0.11, 0.3, 2.2, 0.14])
            >>> bmm.fitted, 1 <= bmm.n_iter <= 10
            (True, True)
        """
        x = _as_float64(losses, "losses")
        if self.normalize:
            low, high = (float(v) for v in np.percentile(x.numpy(), self.percentiles))
            if high <= low:  # most losses are equal: fall back to the full range, then to a unit scale
                low, high = float(x.min()), float(x.max())
                high = high if high > low else low + 1.0
            inside = (x >= low) & (x <= high)
            if self.tails == "drop" and int(inside.sum()) >= 2:  # (a handful of losses: fit them all, clipped)
                x = x[inside]
            self._low, self._high = low, high
        else:
            outside = (x < 0) | (x > 1)
            if outside.any():
                raise DataError(
                    f"with normalize=False the values must lie in [0, 1], got {x[outside][:5].tolist()} (positions "
                    f"{torch.nonzero(outside).flatten()[:5].tolist()}); pass normalize=True to map raw losses to "
                    "[0, 1] by their percentiles"
                )
            self._low, self._high = 0.0, 1.0
        if x.numel() < 2:
            raise DataError(f"fitting a beta mixture needs at least 2 values, got {x.numel()}; pass more losses")
        x = self._to_unit(x, normalized=not self.normalize)
        self._alphas, self._betas, self._weights = (t.clone() for t in self._init)
        self.n_iter = 0
        for _ in range(self.max_iters):
            previous = torch.cat([self._alphas, self._betas, self._weights])
            resp = self._responsibilities(x)
            self._m_step(x, resp)
            self.n_iter += 1
            current = torch.cat([self._alphas, self._betas, self._weights])
            change = float(((current - previous).abs() / (1.0 + previous.abs())).max())
            if change <= self.tol:
                break
        self.fitted = True
        return self

    def _m_step(self, x: torch.Tensor, resp: torch.Tensor) -> None:
        """Weighted method of moments (eqs. 5-6) per component; a component without mass keeps its parameters."""
        mass = resp.sum(dim=0)
        for k in range(2):
            if float(mass[k]) < _MIN_MASS:
                continue
            w = resp[:, k]
            mean = float((w * x).sum() / mass[k])
            mean = min(max(mean, self.eps), 1.0 - self.eps)
            var = float((w * (x - mean) ** 2).sum() / mass[k])
            limit = mean * (1.0 - mean)
            var = min(max(var, _MIN_VARIANCE), limit * (1.0 - 1e-6))
            common = limit / var - 1.0
            self._alphas[k] = mean * common
            self._betas[k] = (1.0 - mean) * common
        self._weights = mass / mass.sum()

    def _responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """E-step (eq. 4) in log space: an (n, 2) tensor of p(k | x), each row summing to 1."""
        log_weighted = [
            math.log(w) + _beta_log_pdf(x, a, b) if w > 0 else torch.full_like(x, -math.inf)
            for a, b, w in zip(self._alphas.tolist(), self._betas.tolist(), self._weights.tolist(), strict=True)
        ]
        second = torch.sigmoid(log_weighted[1] - log_weighted[0])  # two components: a logistic of the log-ratio
        return torch.stack([1.0 - second, second], dim=1)

    # -- posteriors ---------------------------------------------------------------------------------------------

    def _to_unit(self, x: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        """Map raw losses to [eps, 1 - eps] with the fitted bounds (``normalized``: x is already on [0, 1])."""
        if not normalized:
            x = (x - self._low) / (self._high - self._low)
        return x.clamp(0.0, 1.0).clamp(self.eps, 1.0 - self.eps)

    def normalized(self, losses: LossesLike) -> torch.Tensor:
        """Return ``losses`` mapped to ``[eps, 1 - eps]`` as the mixture sees them (percentile bounds, clipping).

        Example:
            >>> BetaMixture(normalize=False).fit([0.2, 0.8]).normalized([0.0, 0.5]).tolist()
            [0.0001, 0.5]
        """
        return self._to_unit(_as_float64(losses, "losses"))

    def posterior(self, losses: LossesLike) -> torch.Tensor:
        """Return the (n, 2) responsibilities p(component k | loss) of raw ``losses``, columns in component order.

        Use :attr:`noisy_component` (or :meth:`noisy_posterior`) to know which column is the noisy one.

        Example:
            >>> bmm = BetaMixture(normalize=False)
            >>> p = bmm.posterior([0.1, 0.9])
            >>> p.shape, [round(v, 2) for v in p.sum(dim=1).tolist()]
            (torch.Size([2, 2]), [1.0, 1.0])
        """
        return self._responsibilities(self.normalized(losses))

    def increasing_range(self) -> tuple[float, float]:
        """Return the interval of normalised losses on which p(noisy | x) increases with x.

        The log-odds log p(noisy | x) - log p(clean | x) = const + Δa log x + Δb log(1 - x), with Δa and Δb the
        noisy minus the clean component's alpha and beta, has at most one turning point x* = Δa / (Δa + Δb): with
        Δa, Δb > 0 the noisy posterior falls again above x* (a noisy component narrower than the clean one); with
        Δa, Δb < 0 it rises again below x* (a U-shaped noisy component that claims the smallest losses). Otherwise
        (the usual case) it increases everywhere and the range is ``(eps, 1 - eps)``.

        Example:
            >>> BetaMixture(alphas_init=(2, 0.5), betas_init=(20, 0.5)).increasing_range()
            (0.07142857142857142, 0.9999)
        """
        noisy, clean = self.noisy_component, self.clean_component
        delta_a = float(self._alphas[noisy] - self._alphas[clean])
        delta_b = float(self._betas[noisy] - self._betas[clean])
        if (delta_a > 0 and delta_b > 0) or (delta_a < 0 and delta_b < 0):
            turn = min(max(delta_a / (delta_a + delta_b), self.eps), 1.0 - self.eps)
            return (self.eps, turn) if delta_a > 0 else (turn, 1.0 - self.eps)
        return (self.eps, 1.0 - self.eps)

    def noisy_posterior(self, losses: LossesLike, monotone: bool = True) -> torch.Tensor:
        """Return p(noisy | loss) for raw ``losses``, the noisy component being the one with the larger mean.

        With ``monotone`` (default), the posterior is made non-decreasing in the loss by evaluating it at the loss
        clamped into :meth:`increasing_range`: above a turning point it stays at its maximum, as the reference
        code's look-up table does (``lookup[argmax:] = max``), and below one (a U-shaped noisy component that would
        call the very smallest losses noisy) it stays at its minimum. ``monotone=False`` gives the raw posterior.

        Example:
            >>> bmm = BetaMixture(normalize=False)
            >>> [round(p, 2) for p in bmm.noisy_posterior([0.1, 0.9]).tolist()]
            [0.1, 0.9]
        """
        x = self.normalized(losses)
        if monotone:
            low, high = self.increasing_range()
            x = x.clamp(low, high)
        return self._responsibilities(x)[:, self.noisy_component]

    def clean_posterior(self, losses: LossesLike, monotone: bool = True) -> torch.Tensor:
        """Return p(clean | loss) = 1 - p(noisy | loss) for raw ``losses`` (``monotone``: non-increasing in the loss).

        Example:
            >>> bmm = BetaMixture(normalize=False)
            >>> [round(p, 2) for p in bmm.clean_posterior([0.1, 0.9]).tolist()]
            [0.9, 0.1]
        """
        return 1.0 - self.noisy_posterior(losses, monotone)
