"""Choose how to combine the members, on validation data, without trusting in-sample scores.

A fitted strategy (``"weighted"``, ``"calibrated"``, ``"stacking"``...) always looks at least as
good as the plain ``"mean"`` on the rows it was fitted on, so comparing candidates by their fit on
the validation split picks the most flexible one even when it overfits (on a small split that the
members already classify without an error, fitted weights pile onto one member). Here every
candidate is **cross-fitted**: the validation rows are dealt into ``folds`` folds; a fresh copy of
the candidate is fitted on all folds but one and predicts the held-out fold, so each row gets an
out-of-fold prediction from a combiner that never saw it. The candidate with the best metric on
those pooled out-of-fold predictions wins; ties (equal up to float rounding) go to the candidate
listed first (list the simplest first). The winner is then refitted on all rows. A candidate
with nothing to fit (``"mean"``) is scored on every row as it is.

>>> import torch
>>> from ensemblenet.strategies import choose_strategy
>>> g = torch.Generator().manual_seed(0)
>>> labels = torch.randint(0, 2, (200,), generator=g)
>>> good = torch.nn.functional.one_hot(labels, 2).double() * 0.8 + 0.1   # right, 90 % sure
>>> noise = torch.rand(200, 1, generator=g, dtype=torch.float64)
>>> poor = torch.cat([noise, 1 - noise], dim=1)                          # a coin
>>> choice = choose_strategy(torch.stack([good, poor]), labels, ["mean", "weighted"])
>>> choice.name, choice.scores["weighted"] < choice.scores["mean"]
('weighted', True)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError
from ..scoring import METRICS, metric_score
from ._base import (
    Strategy,
    check_labels,
    check_member_probs,
    fold_ids,
    quiet_small_validation,
    strategy_name,
    warn_small_validation,
)
from ._calibrated import CalibratedStrategy
from ._resolve import resolve_strategy

__all__ = ["COMBINATIONS", "DEFAULT_CANDIDATES", "StrategyChoice", "choose_strategy", "fit_candidate"]

logger = logging.getLogger("ensemblenet.strategies")

#: What :func:`choose_strategy` compares by default, simplest first (it wins ties): the soft vote,
#: weights fitted on log-loss, and temperature scaling (each member and the ensemble) around them.
DEFAULT_CANDIDATES: tuple[str, ...] = ("mean", "weighted", "calibrated")

Candidates = Sequence[str | Strategy] | Mapping[str, str | Strategy]

#: The combinations a recipe names (``Recipe.combine``): the soft vote, weights fitted on
#: log-loss, and temperatures per member and for the ensemble around fitted weights.
COMBINATIONS: Mapping[str, str | Strategy] = {
    "mean": "mean",
    "weighted": "weighted",
    "calibrated": CalibratedStrategy("weighted"),
}


@dataclass(frozen=True)
class StrategyChoice:
    """The outcome of :func:`choose_strategy`.

    Attributes:
        name: the chosen candidate's label.
        strategy: that candidate, refitted on all the validation rows (ready to use).
        scores: each candidate's out-of-fold metric (lower is better; accuracy is negated).
        metric: ``"log_loss"``, ``"accuracy"`` or ``"brier"``.
        folds: the number of folds used (0: nothing was chosen, see :meth:`given`).
        n: the number of validation rows.
        fitted: every candidate refitted on all the validation rows (the winner among them), e.g. to
            show each one's test scores in a report.
        chosen_by: ``"validation"`` (the best out-of-fold score won) or ``"recipe"`` (the name was
            given, see :meth:`given`; the scores are for information).
    """

    name: str
    strategy: Strategy
    scores: dict[str, float] = field(default_factory=dict)
    metric: str = "log_loss"
    folds: int = 5
    n: int = 0
    fitted: dict[str, Strategy] = field(default_factory=dict, repr=False)
    chosen_by: str = "validation"

    @classmethod
    def given(
        cls,
        name: str,
        probs: torch.Tensor,
        labels: torch.Tensor,
        candidates: Candidates = DEFAULT_CANDIDATES,
    ) -> StrategyChoice:
        """No choice made: ``name`` (one of ``candidates``) as asked (``chosen_by="recipe"``). Every
        candidate is still cross-fitted and scored, and fitted on all rows, so a report can show
        what the others would have done."""
        named = _label_candidates(candidates)
        if name not in named:
            raise ConfigError(f"combination {name!r} is not among the candidates {list(named)}")
        if callable(getattr(_fresh(named[name]), "fit", None)):
            warn_small_validation(probs.shape[1], "fitting the combination")
        raw, fitted, k = _cross_fit(named, probs, labels, "log_loss", 5, 0)
        scores = {label: s[0] for label, s in raw.items()}
        return cls(name, fitted[name], scores, "log_loss", k, probs.shape[1], fitted, chosen_by="recipe")

    def to_dict(self) -> dict[str, Any]:
        """Plain data: what was chosen, how, and each candidate's score and fitted state."""
        return {
            "chosen": self.name,
            "metric": self.metric,
            "folds": self.folds,
            "n": self.n,
            "out_of_fold_scores": dict(self.scores),
            "chosen_by": self.chosen_by,
            "fitted": {k: repr(v) for k, v in self.fitted.items()},
        }

    def __str__(self) -> str:
        if self.chosen_by != "validation":
            return f"using {self.name!r} as the recipe says (fitted on {self.n} validation rows)"
        ranked = ", ".join(f"{k} {v:.4f}" for k, v in sorted(self.scores.items(), key=lambda kv: kv[1]))
        how = f"{self.folds}-fold out-of-fold {self.metric} on {self.n} rows"
        return f"chose {self.name!r} by {how} ({ranked})"


def choose_strategy(
    probs: torch.Tensor,
    labels: torch.Tensor,
    candidates: Candidates = DEFAULT_CANDIDATES,
    *,
    metric: str = "log_loss",
    folds: int = 5,
    seed: int = 0,
) -> StrategyChoice:
    """Pick the combination with the best cross-fitted ``metric`` on validation ``probs``.

    Args:
        probs: the members' validation probabilities ``(M, N, C)``.
        labels: the true classes ``(N,)``.
        candidates: registered names and/or strategy objects (copied, never modified), or a
            mapping from labels to them; listed simplest first.
        metric: ``"log_loss"`` (default), ``"accuracy"`` (ties broken by log-loss) or ``"brier"``.
        folds: cross-fitting folds, at least 2 (at most one per row).
        seed: the fold assignment seed.

    Raises:
        ConfigError: no candidates, a repeated label, an unknown metric, fewer than 2 folds or
            fewer than 2 rows.
    """
    probs = check_member_probs(probs).double()
    labels = check_labels(labels, probs)
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"folds must be an int >= 2, got {folds!r}")
    n = probs.shape[1]
    if n < 2:
        raise ConfigError(f"choosing a strategy needs at least 2 validation rows to cross-fit, got {n}")
    named = _label_candidates(candidates)
    warn_small_validation(n, "choosing the combination")
    raw, fitted, k = _cross_fit(named, probs, labels, metric, folds, seed)
    best = next(iter(raw))
    for label in raw:  # in the caller's order, so a tie keeps the earlier (simpler) candidate
        if _better(raw[label], raw[best]):
            best = label
    scores = {label: (-s[0] if metric == "accuracy" else s[0]) for label, s in raw.items()}
    choice = StrategyChoice(best, fitted[best], scores, metric, k, n, fitted)
    logger.info("%s", choice)
    return choice


def _cross_fit(
    named: dict[str, str | Strategy],
    probs: torch.Tensor,
    labels: torch.Tensor,
    metric: str,
    folds: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Strategy], int]:
    """Each candidate's out-of-fold score (stratified folds), each fitted on all rows, and the fold count."""
    probs = check_member_probs(probs).double()
    labels = check_labels(labels, probs)
    n = probs.shape[1]
    k = min(folds, n)
    ids = fold_ids(n, k, seed, labels)
    scores: dict[str, Any] = {}
    with quiet_small_validation():  # the caller warned once, not once per fold and candidate
        for label, candidate in named.items():
            scores[label] = metric_score(metric, _out_of_fold(candidate, probs, labels, ids, k), labels)
        fitted = {label: fit_candidate(c, probs, labels) for label, c in named.items()}
    return scores, fitted, k


def _better(a: tuple[float, float], b: tuple[float, float], rel: float = 1e-9) -> bool:
    """``a`` beats ``b`` by more than float rounding (the mean and the geometric mean of identical
    members differ in the 16th digit; that is a tie, not a win)."""
    for x, y in zip(a, b, strict=True):
        if abs(x - y) > rel * max(1.0, abs(x), abs(y)):
            return x < y
    return False


def _label_candidates(candidates: Candidates) -> dict[str, str | Strategy]:
    pairs: list[tuple[str, str | Strategy]]
    if isinstance(candidates, Mapping):
        pairs = [(str(label), c) for label, c in candidates.items()]
    elif isinstance(candidates, str):
        raise ConfigError(
            f"candidates must be a list of strategies, got the string {candidates!r}; write [{candidates!r}]"
        )
    else:
        pairs = [(c if isinstance(c, str) else strategy_name(c), c) for c in candidates]
    if not pairs:
        raise ConfigError(f"no candidates to choose from; pass names such as {list(DEFAULT_CANDIDATES)}")
    labels = [label for label, _ in pairs]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(
            f"candidate labels {repeated} appear more than once; pass a mapping such as "
            "{'weighted-accuracy': ..., 'weighted-loss': ...} to tell them apart"
        )
    for _, c in pairs:
        _fresh(c)  # fail now on an unknown name or a non-strategy, not after some folds
    return dict(pairs)


def _fresh(candidate: str | Strategy) -> Any:
    """A new, unfitted instance for a name; a deep copy for an object (the caller's stays as it is)."""
    if isinstance(candidate, str):
        return resolve_strategy(candidate)
    return copy.deepcopy(resolve_strategy(candidate))


def fit_candidate(candidate: str | Strategy, probs: torch.Tensor, labels: torch.Tensor) -> Strategy:
    """A new instance of ``candidate`` (a copy of an object, which stays as it is), fitted on
    ``probs`` ``(M, N, C)`` and ``labels`` when it has something to fit."""
    strategy = _fresh(candidate)
    fit = getattr(strategy, "fit", None)
    if callable(fit):
        fit(probs, labels)
    return strategy  # type: ignore[no-any-return]


def _out_of_fold(
    candidate: str | Strategy, probs: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, k: int
) -> torch.Tensor:
    probe = _fresh(candidate)
    if not callable(getattr(probe, "fit", None)):  # nothing learnt from the rows: no leak to avoid
        return probe.combine(probs).double()  # type: ignore[no-any-return]
    oof = torch.empty(probs.shape[1], probs.shape[2], dtype=torch.float64)
    for fold in range(k):
        held = ids == fold
        oof[held] = fit_candidate(candidate, probs[:, ~held], labels[~held]).combine(probs[:, held]).double()
    return oof
