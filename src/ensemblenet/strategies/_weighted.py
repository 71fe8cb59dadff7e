"""The weighted soft vote, with weights given or fitted on validation log-loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ..scoring import log_loss
from ._base import check_labels, check_member_probs, register_strategy

__all__ = ["WeightedStrategy", "normalize_weights", "weighted_mean"]


@register_strategy("weighted")
class WeightedStrategy:
    """Weighted soft vote: ``sum_m w_m * probs[m]`` with weights normalized to sum to 1.

    Args:
        weights: one non-negative weight per member (normalized here), or None to learn them with
            :meth:`fit` (``Ensemble.fit_weights(val)``) on validation data.

    :meth:`fit` minimizes the validation log-loss over the simplex (softmax parametrization,
    L-BFGS in float64, started at uniform weights; deterministic) and keeps uniform weights unless
    the fitted ones are at least as good, so fitted weights are never worse than uniform on the
    data they were fitted on.
    """

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        self._weights: torch.Tensor | None = None if weights is None else normalize_weights(weights)
        self.needs_fit = weights is None

    @property
    def weights(self) -> torch.Tensor | None:
        """The normalized float64 weights, or None before :meth:`fit` when none were given."""
        return None if self._weights is None else self._weights.clone()

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        probs = check_member_probs(probs)
        if self._weights is None:
            raise ConfigError(
                "WeightedStrategy has no weights yet: call Ensemble.fit_weights(val) to learn them on "
                "validation data, or pass them, e.g. strategy='weighted', weights=[0.6, 0.4]."
            )
        return weighted_mean(probs, self._weights)

    def fit(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Learn the weights that minimize the log-loss of ``probs`` ``(M, N, C)`` against ``labels``."""
        probs = check_member_probs(probs)
        labels = check_labels(labels, probs)
        if not torch.isfinite(probs).all():
            raise ConfigError("cannot fit weights on non-finite probabilities; drop the NaN rows first")
        members = probs.shape[0]
        uniform = torch.full((members,), 1.0 / members, dtype=torch.float64)
        # Only the probability each member gives the true class matters for the log-loss.
        true_probs = probs.double()[:, torch.arange(probs.shape[1]), labels]  # (M, N)
        logits = torch.zeros(members, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [logits], lr=1.0, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            mixed = (torch.softmax(logits, dim=0)[:, None] * true_probs).sum(dim=0)
            loss = -torch.log(mixed.clamp_min(1e-12)).mean()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        if members > 1:
            optimizer.step(closure)  # type: ignore[no-untyped-call]
        fitted = torch.softmax(logits.detach(), dim=0)
        # Judge with the exact computation users will measure (combine + metrics.log_loss), so the
        # "never worse than uniform" promise holds on these data, rounding included.
        fitted_loss = log_loss(weighted_mean(probs, fitted), labels)
        uniform_loss = log_loss(weighted_mean(probs, uniform), labels)
        self._weights = fitted if math.isfinite(fitted_loss) and fitted_loss <= uniform_loss else uniform
        self.needs_fit = False

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state, for saving an ensemble to one file."""
        return {"weights": None if self._weights is None else self._weights.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state.get("weights")
        self._weights = None if weights is None else restored_weights(weights)
        self.needs_fit = weights is None

    def __repr__(self) -> str:
        shown = None if self._weights is None else [round(w, 4) for w in self._weights.tolist()]
        return f"WeightedStrategy(weights={shown})"


def normalize_weights(weights: Sequence[float]) -> torch.Tensor:
    try:
        values = torch.tensor([float(w) for w in weights], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"weights must be a sequence of numbers, one per member, got {weights!r}") from None
    if values.numel() == 0:
        raise ConfigError("weights is empty; pass one non-negative weight per ensemble member")
    if not torch.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ConfigError(
            f"weights must be finite, non-negative and not all zero, got {list(weights)!r}; "
            "they are normalized to sum to 1, so e.g. [2, 1] means 2/3 and 1/3."
        )
    return values / values.sum()


def restored_weights(saved: Sequence[float]) -> torch.Tensor:
    """Weights read back from a file: bit for bit as saved when they already sum to 1.

    Normalizing again would move the last bit on CPUs whose summation order differs (AVX2 against
    the default kernels): a reloaded ensemble must predict exactly what the saved one did.
    """
    normalized = normalize_weights(saved)  # also checks them
    exact = torch.tensor([float(w) for w in saved], dtype=torch.float64)
    return exact if torch.allclose(exact, normalized, rtol=0.0, atol=1e-12) else normalized


def weighted_mean(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    if weights.numel() != probs.shape[0]:
        raise ConfigError(
            f"WeightedStrategy has {weights.numel()} weights but the ensemble has {probs.shape[0]} members; "
            "pass exactly one weight per member, in member order."
        )
    w = weights.to(device=probs.device, dtype=probs.dtype).view(-1, 1, 1)
    return (w * probs).sum(dim=0)
