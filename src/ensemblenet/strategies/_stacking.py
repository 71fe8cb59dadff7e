"""Stacking: a cross-fitted multinomial logistic regression on the members' log-probabilities.

Features ``M * C``; fitted in torch (L-BFGS, float64, L2 penalty on the weights). **Cross-fitted**:
the validation rows are split into ``folds`` folds; for each L2 strength in ``l2`` a combiner is
fitted on all folds but one and predicts the held-out fold, so every row gets an out-of-fold
prediction from a combiner that never saw it. The L2 strength with the best out-of-fold log-loss
is chosen, then the final combiner is refitted on all rows. ``oof_probs`` / ``oof_log_loss`` keep
the honest out-of-fold estimate. (With a single validation row there is nothing to cross-fit: the
largest L2 strength is used and the out-of-fold estimate is None.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ..scoring import log_loss
from ._base import (
    check_labels,
    check_member_probs,
    fold_ids,
    register_strategy,
    single_thread,
    warn_small_validation,
)

__all__ = ["StackingStrategy"]

logger = logging.getLogger("ensemblenet.strategies")

_EPS = 1e-7


def _features(probs: torch.Tensor) -> torch.Tensor:
    """(M, N, C) probabilities -> (N, M * C) log-probabilities, member-major."""
    logp = torch.log(probs.double().clamp_min(_EPS))
    return logp.permute(1, 0, 2).reshape(probs.shape[1], -1)


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, max_iter: int) -> torch.Tensor:
    """Multinomial logistic regression; returns the (D + 1, C) parameters (last row: intercepts)."""
    with single_thread():
        return _fit_logreg_now(x, y, classes, l2, max_iter)


def _fit_logreg_now(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float, max_iter: int) -> torch.Tensor:
    params = torch.zeros(x.shape[1] + 1, classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [params],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x @ params[:-1] + params[-1]
        loss = torch.nn.functional.cross_entropy(logits, y) + l2 * (params[:-1] ** 2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return params.detach()


def _predict(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x @ params[:-1].to(x.dtype) + params[-1].to(x.dtype), dim=1)


@register_strategy("stacking")
class StackingStrategy:
    """Cross-fitted multinomial logistic regression on the members' log-probabilities.

    Args:
        folds: cross-fitting folds (at most the number of validation rows).
        l2: one L2 strength, or several to choose from by out-of-fold log-loss.
        seed: fold assignment seed.
        max_iter: L-BFGS iterations per fit.
    """

    def __init__(
        self,
        folds: int = 5,
        l2: float | Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        seed: int = 0,
        max_iter: int = 100,
    ) -> None:
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"folds must be an int >= 2, got {folds!r}")
        grid = [float(l2)] if isinstance(l2, (int, float)) else [float(v) for v in l2]
        if not grid or any(not math.isfinite(v) or v < 0 for v in grid):
            raise ConfigError(f"l2 must be a non-negative number or a non-empty list of them, got {l2!r}")
        self.folds, self.l2_grid, self.seed, self.max_iter = folds, grid, seed, max_iter
        self.params: torch.Tensor | None = None
        self.l2: float | None = None
        self.cv_log_loss: dict[float, float] = {}
        self.oof_probs: torch.Tensor | None = None
        self.oof_log_loss: float | None = None
        self.needs_fit = True

    def fit(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Cross-fit on validation ``probs`` ``(M, N, C)``, choose the L2 strength, refit on all rows."""
        probs = check_member_probs(probs).double()
        labels = check_labels(labels, probs)
        n, classes = probs.shape[1], probs.shape[2]
        warn_small_validation(n, "fitting a stacking combiner")
        x = _features(probs)
        if n < 2:  # nothing to cross-fit with: the strongest regularization, and no OOF estimate
            logger.warning(
                "stacking on %d validation image: no cross-fitting possible, using the largest l2", n
            )
            self.l2, self.oof_probs, self.oof_log_loss, self.cv_log_loss = max(self.l2_grid), None, None, {}
            self.params = _fit_logreg(x, labels, classes, self.l2, self.max_iter)
            self.needs_fit = False
            return
        k = min(self.folds, n)
        ids = fold_ids(n, k, self.seed, labels)
        best: tuple[float, float, torch.Tensor] | None = None
        self.cv_log_loss = {}
        for l2 in sorted(self.l2_grid, reverse=True):  # strongest first: it wins ties
            oof = torch.empty(n, classes, dtype=torch.float64)
            for fold in range(k):
                held = ids == fold
                params = _fit_logreg(x[~held], labels[~held], classes, l2, self.max_iter)
                oof[held] = _predict(params, x[held])
            loss = log_loss(oof, labels)
            self.cv_log_loss[l2] = loss
            if best is None or loss < best[0]:
                best = (loss, l2, oof)
        assert best is not None
        self.oof_log_loss, self.l2, self.oof_probs = best
        self.params = _fit_logreg(x, labels, classes, self.l2, self.max_iter)
        self.needs_fit = False
        logger.info("stacking: l2 %.3g, out-of-fold log-loss %.4f", self.l2, self.oof_log_loss)

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        probs = check_member_probs(probs)
        if self.params is None:
            raise ConfigError("StackingStrategy is not fitted: call Ensemble.fit_weights(val) first")
        x = _features(probs).to(probs.dtype)
        if x.shape[1] + 1 != self.params.shape[0] or probs.shape[2] != self.params.shape[1]:
            raise ConfigError(
                f"the stacking combiner was fitted for {(self.params.shape[0] - 1) // self.params.shape[1]} "
                f"members and {self.params.shape[1]} classes, got {probs.shape[0]} and {probs.shape[2]}"
            )
        return _predict(self.params, x)

    def state_dict(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "l2_grid": list(self.l2_grid),
            "seed": self.seed,
            "max_iter": self.max_iter,
            "params": None if self.params is None else self.params.tolist(),
            "l2": self.l2,
            "oof_log_loss": self.oof_log_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(int(state["folds"]), state["l2_grid"], int(state["seed"]), int(state["max_iter"]))  # type: ignore[misc]
        if state.get("params") is not None:
            self.params = torch.tensor(state["params"], dtype=torch.float64)
            self.needs_fit = False
        self.l2 = state.get("l2")
        self.oof_log_loss = state.get("oof_log_loss")

    def __repr__(self) -> str:
        return f"StackingStrategy(folds={self.folds}, l2={self.l2}, oof_log_loss={self.oof_log_loss})"
