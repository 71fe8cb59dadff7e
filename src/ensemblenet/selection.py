"""Strategies fitted on validation data: greedy ensemble selection and stacking.

``"greedy"``
    Ensemble selection with replacement (Caruana et al., 2004, "Ensemble selection from libraries
    of models"): starting from an empty ensemble, repeatedly add the member (repeats allowed) whose
    addition gives the best validation metric for the **mean** of the selected members; after
    ``rounds`` additions keep the prefix with the best metric. A member picked k times gets weight
    ``k / total``; members never picked get 0. The first pick is the best single member, so the
    selection is never worse than the best member on the validation data, by the chosen metric.

``"stacking"``
    A multinomial logistic regression on the members' log-probabilities (features ``M * C``),
    fitted in torch (L-BFGS, float64, L2 penalty on the weights). **Cross-fitted**: the validation
    rows are split into ``folds`` folds; for each L2 strength in ``l2`` a combiner is fitted on all
    folds but one and predicts the held-out fold, so every row gets an out-of-fold prediction from
    a combiner that never saw it. The L2 strength with the best out-of-fold log-loss is chosen,
    then the final combiner is refitted on all rows. ``oof_probs`` / ``oof_log_loss`` keep the
    honest out-of-fold estimate. (With a single validation row there is nothing to cross-fit:
    the largest L2 strength is used and the out-of-fold estimate is None.)

>>> import torch
>>> from ensemblenet.selection import GreedyStrategy
>>> probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]],   # a good member
...                       [[0.4, 0.6], [0.6, 0.4], [0.5, 0.5]]])  # a poor one
>>> greedy = GreedyStrategy(rounds=5)
>>> greedy.fit(probs, torch.tensor([0, 1, 0]))
>>> greedy.weights
tensor([1., 0.], dtype=torch.float64)
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .calibration import brier_score
from .errors import ConfigError
from .metrics import accuracy, log_loss
from .strategies import _check_labels, _weighted_mean, check_member_probs, register_strategy

__all__ = ["GREEDY_METRICS", "GreedyStrategy", "StackingStrategy"]

logger = logging.getLogger("ensemblenet.selection")

#: Metrics greedy selection can optimize; all are turned into "lower is better".
GREEDY_METRICS = ("log_loss", "accuracy", "brier")

_EPS = 1e-7


def _score(metric: str, probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(primary, tie-break) scores, lower is better; accuracy ties are broken by log-loss."""
    if metric == "log_loss":
        return (log_loss(probs, labels), 0.0)
    if metric == "brier":
        return (brier_score(probs, labels), log_loss(probs, labels))
    return (-accuracy(probs, labels), log_loss(probs, labels))


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
        if metric not in GREEDY_METRICS:
            raise ConfigError(f"greedy metric must be one of {GREEDY_METRICS}, got {metric!r}")
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
        labels = _check_labels(labels, probs)
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
                score = _score(self.metric, (total + probs[m]) / step, labels)
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
        return _weighted_mean(probs, self._weights)

    def state_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "rounds": self.rounds,
            "counts": self.counts,
            "weights": None if self._weights is None else self._weights.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(str(state["metric"]), int(state["rounds"]), state.get("weights"))  # type: ignore[misc]
        counts = state.get("counts")
        self.counts = None if counts is None else [int(c) for c in counts]

    def __repr__(self) -> str:
        return f"GreedyStrategy(metric={self.metric!r}, counts={self.counts})"


def _features(probs: torch.Tensor) -> torch.Tensor:
    """(M, N, C) probabilities -> (N, M * C) log-probabilities, member-major."""
    logp = torch.log(probs.double().clamp_min(_EPS))
    return logp.permute(1, 0, 2).reshape(probs.shape[1], -1)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny tensor work on one intra-op thread, then restore the previous setting.

    The combiners fit a few hundred numbers; on a busy machine, waking a thread pool for each of
    thousands of tiny ops makes them tens of times slower than one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def fold_ids(n: int, folds: int, seed: int) -> torch.Tensor:
    """Fold of each row: a seeded random permutation dealt round-robin (labels play no part)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    ids = torch.empty(n, dtype=torch.int64)
    ids[perm] = torch.arange(n) % folds
    return ids


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
        labels = _check_labels(labels, probs)
        n, classes = probs.shape[1], probs.shape[2]
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
        ids = fold_ids(n, k, self.seed)
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
