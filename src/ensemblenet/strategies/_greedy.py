"""Greedy ensemble selection with replacement (Caruana et al., 2004, "Ensemble selection from
libraries of models").

Starting from an empty ensemble, repeatedly add the member (repeats allowed) whose addition gives
the best validation metric for the **mean** of the selected members; after ``rounds`` additions
keep the prefix with the best metric. A member picked k times gets weight ``k / total``; members
never picked get 0. The first pick is the best single member, so the selection is never worse
than the best member on the validation data, by the chosen metric.

>>> import torch
>>> from ensemblenet.strategies import GreedyStrategy
>>> probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]],   # a good member
...                       [[0.4, 0.6], [0.6, 0.4], [0.5, 0.5]]])  # a poor one
>>> greedy = GreedyStrategy(rounds=5)
>>> greedy.fit(probs, torch.tensor([0, 1, 0]))
>>> greedy.weights
tensor([1., 0.], dtype=torch.float64)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ..scoring import METRICS, metric_score
from ._base import check_labels, check_member_probs, register_strategy, single_thread
from ._weighted import restored_weights, weighted_mean

__all__ = ["GreedyStrategy"]

logger = logging.getLogger("ensemblenet.strategies")


@register_strategy("greedy")
class GreedyStrategy:
    """Greedy ensemble selection with replacement (Caruana et al., 2004).

    Args:
        metric: what to optimize on validation data: ``"log_loss"`` (default), ``"accuracy"``
            (ties broken by log-loss) or ``"brier"``.
        rounds: how many additions to try (repeats allowed).
        weights: fitted weights to reuse (as saved), or None to fit them.
    """

    def __init__(self, metric: str = "log_loss", rounds: int = 25, weights: Sequence[float] | None = None):
        if metric not in METRICS:
            raise ConfigError(f"greedy metric must be one of {METRICS}, got {metric!r}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ConfigError(f"rounds must be a positive int, got {rounds!r}")
        self.metric = metric
        self.rounds = rounds
        self.counts: list[int] | None = None
        self._weights: torch.Tensor | None = None
        if weights is not None:
            self._set_weights(weights)
        self.needs_fit = self._weights is None

    def _set_weights(self, weights: Sequence[float]) -> None:
        values = torch.tensor([float(w) for w in weights], dtype=torch.float64)
        if values.numel() == 0 or (values < 0).any() or not torch.isfinite(values).all() or values.sum() <= 0:
            raise ConfigError(
                f"greedy weights must be finite, non-negative, not all zero; got {list(weights)}"
            )
        self._weights = values / values.sum()

    @property
    def weights(self) -> torch.Tensor | None:
        """Selection frequencies (float64, summing to 1), or None before :meth:`fit`."""
        return None if self._weights is None else self._weights.clone()

    def fit(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Select members on validation ``probs`` ``(M, N, C)`` and ``labels`` ``(N,)``."""
        probs = check_member_probs(probs).double()
        labels = check_labels(labels, probs)
        with single_thread():
            self._select(probs, labels)

    def _select(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        members = probs.shape[0]
        total = torch.zeros_like(probs[0])
        counts = [0] * members
        history: list[tuple[tuple[float, float], list[int]]] = []
        for step in range(1, self.rounds + 1):
            best: tuple[tuple[float, float], int] | None = None
            for m in range(members):  # lowest index wins exact ties: deterministic
                score = metric_score(self.metric, (total + probs[m]) / step, labels)
                if best is None or score < best[0]:
                    best = (score, m)
            assert best is not None  # members >= 1
            total += probs[best[1]]
            counts[best[1]] += 1
            history.append((best[0], list(counts)))
        # The best prefix; on ties the shorter (earlier) one.
        _, chosen = min(history, key=lambda item: item[0])
        self.counts = chosen
        self._set_weights(chosen)
        self.needs_fit = False
        logger.info("greedy selection (%s): counts %s", self.metric, chosen)

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        probs = check_member_probs(probs)
        if self._weights is None:
            raise ConfigError("GreedyStrategy is not fitted: call Ensemble.fit_weights(val) first")
        return weighted_mean(probs, self._weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "rounds": self.rounds,
            "counts": self.counts,
            "weights": None if self._weights is None else self._weights.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(str(state["metric"]), int(state["rounds"]), state.get("weights"))  # type: ignore[misc]
        if state.get("weights") is not None:  # bit for bit as saved (see restored_weights)
            self._weights = restored_weights(state["weights"])
        counts = state.get("counts")
        self.counts = None if counts is None else [int(c) for c in counts]

    def __repr__(self) -> str:
        return f"GreedyStrategy(metric={self.metric!r}, counts={self.counts})"
