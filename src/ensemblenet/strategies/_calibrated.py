"""Calibration by temperature scaling, per member and for the ensemble.

Temperature scaling divides the log-probabilities by one learned ``T > 0`` and renormalizes
(``softmax(log p / T)``, the same as dividing the logits): the predicted class never changes,
only the confidence. The calibration metrics themselves (ECE, Brier) are in
:mod:`ensemblenet.scoring`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ..scoring import check_probs, log_loss
from ._base import (
    check_member_probs,
    quiet_small_validation,
    register_strategy,
    single_thread,
    small_validation_quiet,
    strategy_from_state,
    strategy_state,
    warn_small_validation,
)
from ._resolve import StrategyLike, resolve_strategy

__all__ = ["MAX_TEMPERATURE", "MIN_TEMPERATURE", "CalibratedStrategy", "apply_temperature", "fit_temperature"]

logger = logging.getLogger("ensemblenet.strategies")

#: Probabilities are clamped to at least this before taking logs (as in scoring.log_loss).
EPS = 1e-7
#: Fitted temperatures are clipped to this range: beyond it a fit is chasing a few rows, not calibrating.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def apply_temperature(probs: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """``softmax(log(p) / T)`` row-wise; ``(N, C)`` with a scalar ``T``, or ``(M, N, C)`` with ``T`` ``(M,)``.

    Probabilities are clamped to at least 1e-7 before the log; ``T = 1`` returns them unchanged.
    """
    t = torch.as_tensor(temperature, dtype=probs.dtype, device=probs.device)
    if t.dim() == 1:
        t = t.view(-1, *([1] * (probs.dim() - 1)))
    scaled = torch.softmax(torch.log(probs.clamp_min(EPS)) / t, dim=-1)
    # T == 1 is the identity, exactly (no clamp/renormalization rounding): "not fitted" changes nothing.
    return torch.where(t == 1, probs, scaled)


def fit_temperature(probs: torch.Tensor, labels: torch.Tensor, *, prior_rows: float = 0.0) -> float:
    """The temperature minimizing the log-loss of ``probs`` ``(N, C)`` against ``labels``.

    ``prior_rows`` shrinks the fit toward ``T = 1`` on few rows: fitted on ``n`` rows, ``log T`` is
    ``n / (n + prior_rows)`` of the fitted ``log T`` (:class:`CalibratedStrategy` uses 50, as
    :class:`~ensemblenet.WeightedStrategy` does for weights). Between 1 and the fit, the log-loss is
    never above 1's (it is convex in ``log T``).

    L-BFGS over ``log T`` in float64, started at ``T = 1``. ``T = 1`` is kept unless the fitted
    temperature is at least as good, so scaling never raises the log-loss on the data it was fitted
    on (as measured by :func:`~ensemblenet.scoring.log_loss`).

    Two guards against fitting noise: when ``probs`` gets every row right, the log-loss keeps
    falling as ``T -> 0`` (sharper is always "better" on data without a single error), which says
    nothing about unseen images, so ``T = 1`` is kept; and ``T`` is clipped to
    ``[MIN_TEMPERATURE, MAX_TEMPERATURE]``.
    """
    probs, labels = check_probs(probs, labels)
    if not torch.isfinite(probs).all():
        raise ConfigError("cannot fit a temperature on non-finite probabilities; drop the NaN rows first")
    if bool((probs.argmax(1) == labels).all()):
        # Inside a chooser's folds this is expected on many folds: a note, not a warning per fold.
        logger.log(
            logging.INFO if small_validation_quiet() else logging.WARNING,
            "no validation errors among %d images: a temperature fitted there would only sharpen "
            "without limit, so T = 1 is kept for these probabilities",
            len(labels),
        )
        return 1.0
    logp = torch.log(probs.double().clamp_min(EPS))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=100, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logp / log_t.exp(), labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    with single_thread():
        optimizer.step(closure)  # type: ignore[no-untyped-call]
    fitted = float(log_t.detach().exp().item())
    if not math.isfinite(fitted) or fitted <= 0:
        return 1.0
    fitted = min(max(fitted, MIN_TEMPERATURE), MAX_TEMPERATURE)
    if prior_rows > 0:
        fitted = math.exp(len(labels) / (len(labels) + prior_rows) * math.log(fitted))
    before = log_loss(probs.double(), labels)
    after = log_loss(apply_temperature(probs.double(), fitted), labels)
    return fitted if after <= before else 1.0


@register_strategy("calibrated")
class CalibratedStrategy:
    """Temperature scaling per member and for the ensemble, around another strategy.

    ``combine`` scales each member's probabilities with its own temperature, combines them with
    ``inner`` and scales the result with the ensemble temperature. :meth:`fit` learns, on the same
    validation data and in this order, the member temperatures, the inner strategy (when it can be
    fitted) on the scaled probabilities, then the ensemble temperature. ``Ensemble.calibrate(val)``
    wraps the ensemble's current strategy this way.

    Args:
        inner: the strategy to wrap: a registered name, or a strategy object.
        member_temperatures: one temperature per member, or None to fit them.
        temperature: the ensemble temperature, or None to fit it.
        members: scale the members (False: keep them as they are, temperature 1).
        refit_inner: re-fit an already fitted inner strategy on the scaled probabilities.
        prior_rows: shrink fitted temperatures toward 1 on few validation images (see
            :func:`fit_temperature`); 0 turns shrinking off.
    """

    def __init__(
        self,
        inner: StrategyLike = "mean",
        member_temperatures: Sequence[float] | None = None,
        temperature: float | None = None,
        members: bool = True,
        refit_inner: bool = True,
        prior_rows: float = 50.0,
    ) -> None:
        if not (math.isfinite(prior_rows) and prior_rows >= 0):
            raise ConfigError(f"prior_rows must be a finite number >= 0, got {prior_rows!r}")
        self.prior_rows = float(prior_rows)
        self.inner = resolve_strategy(inner)
        self.member_temperatures: list[float] | None = (
            None if member_temperatures is None else [_check_t(t) for t in member_temperatures]
        )
        self.temperature: float | None = None if temperature is None else _check_t(temperature)
        self.members = members
        self.refit_inner = refit_inner
        self.needs_fit = True
        self._update_needs_fit()

    def _update_needs_fit(self) -> None:
        self.needs_fit = self.temperature is None or bool(getattr(self.inner, "needs_fit", False))

    def scale_members(self, probs: torch.Tensor) -> torch.Tensor:
        """Member probabilities after each member's temperature (unchanged before fitting)."""
        probs = check_member_probs(probs)
        if self.member_temperatures is None:
            return probs
        if len(self.member_temperatures) != probs.shape[0]:
            raise ConfigError(
                f"CalibratedStrategy has {len(self.member_temperatures)} member temperatures but got "
                f"{probs.shape[0]} members; re-fit it with Ensemble.calibrate(val)."
            )
        t = torch.tensor(self.member_temperatures, dtype=probs.dtype, device=probs.device)
        return apply_temperature(probs, t)

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        if self.temperature is None:
            raise ConfigError("CalibratedStrategy is not fitted: call Ensemble.calibrate(val) first")
        combined = self.inner.combine(self.scale_members(probs))
        return apply_temperature(combined, self.temperature)

    def fit(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit member temperatures, the inner strategy, then the ensemble temperature."""
        probs = check_member_probs(probs).double()
        warn_small_validation(probs.shape[1], "fitting temperatures")
        if self.members:
            self.member_temperatures = [fit_temperature(p, labels, prior_rows=self.prior_rows) for p in probs]
        else:
            self.member_temperatures = [1.0] * probs.shape[0]
        scaled = self.scale_members(probs)
        fit = getattr(self.inner, "fit", None)
        if callable(fit) and (self.refit_inner or getattr(self.inner, "needs_fit", False)):
            with quiet_small_validation():  # warned just above
                fit(scaled, labels)
        combined = self.inner.combine(scaled).double()
        self.temperature = fit_temperature(combined, labels, prior_rows=self.prior_rows)
        self._update_needs_fit()
        logger.info(
            "calibrated: member temperatures %s, ensemble temperature %.4g",
            [round(t, 4) for t in self.member_temperatures],
            self.temperature,
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state (for :func:`~ensemblenet.save_ensemble`)."""
        return {
            "inner": strategy_state(self.inner),
            "member_temperatures": self.member_temperatures,
            "temperature": self.temperature,
            "members": self.members,
            "refit_inner": self.refit_inner,
            "prior_rows": self.prior_rows,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner = strategy_from_state(state["inner"])
        temps = state.get("member_temperatures")
        self.member_temperatures = None if temps is None else [float(t) for t in temps]
        t = state.get("temperature")
        self.temperature = None if t is None else float(t)
        self.members = bool(state.get("members", True))
        self.refit_inner = bool(state.get("refit_inner", True))
        self.prior_rows = float(state.get("prior_rows", 0.0))  # 0.1 files fitted without shrinking
        self._update_needs_fit()

    def __repr__(self) -> str:
        temps = None if self.member_temperatures is None else [round(t, 4) for t in self.member_temperatures]
        t = None if self.temperature is None else round(self.temperature, 4)
        return f"CalibratedStrategy(inner={self.inner!r}, member_temperatures={temps}, temperature={t})"


def _check_t(t: object) -> float:
    try:
        value = float(t)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"a temperature must be a number, got {t!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"a temperature must be finite and > 0, got {t!r}")
    return value
