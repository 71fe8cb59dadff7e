"""Fit the combination on validation, and decide there whether flip test-time augmentation helps.

Flip TTA doubles every member's prediction cost, so it should earn its place on validation like
any other setting. The members run once on the plain images and once on the mirrored ones (the
cost of flip TTA alone); the flipped probabilities are exactly the mean of the two, as
:func:`~ensemblenet.ensemble.member_probs` averages them. The combination is chosen (or fitted, when
named) on each, and flip is kept when its cross-fitted score of the chosen combination is lower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..models import TransferModel
from ..strategies import StrategyChoice, choose_strategy
from ._inputs import Data, labelled_probas
from ._tta import MirrorOnly

__all__ = ["FlipChoice", "choose_combination", "fit_combination_and_flip"]


@dataclass(frozen=True)
class FlipChoice:
    """Whether flip TTA was kept, and the chosen combination's cross-fitted validation score
    (the choice's metric, lower is better) without and with it."""

    flip: bool
    score_plain: float
    score_flip: float
    metric: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "flip": self.flip,
            "plain": self.score_plain,
            "flip_score": self.score_flip,
            "metric": self.metric,
        }

    def __str__(self) -> str:
        kept = "kept" if self.flip else "not kept"
        return (
            f"flip TTA {kept}: validation {self.metric} {self.score_flip:.5f} with it, "
            f"{self.score_plain:.5f} without"
        )


def choose_combination(
    probs: torch.Tensor,
    labels: torch.Tensor,
    combine: str,
    candidates: Any,
    metric: str,
    folds: int,
    seed: int,
) -> StrategyChoice:
    """``combine`` (a candidate's name) fitted on ``probs``, or, for ``"auto"``, the candidate with
    the best cross-fitted ``metric`` (:func:`~ensemblenet.strategies.choose_strategy`)."""
    if combine == "auto":
        return choose_strategy(probs, labels, candidates, metric=metric, folds=folds, seed=seed)
    return StrategyChoice.given(combine, probs, labels, candidates)


def fit_combination_and_flip(
    members: Sequence[TransferModel],
    data: Data,
    combine: str,
    candidates: Any,
    metric: str,
    folds: int,
    seed: int,
    **kwargs: Any,
) -> tuple[StrategyChoice, FlipChoice]:
    """The combination chosen with and without flip TTA on labelled ``data``, the better of the two,
    and the decision. Keyword arguments go to the members' forward passes."""
    plain, labels, valid, _ = labelled_probas(members, None, data, "fit_combination", **kwargs)
    mirrored, _, valid_mirrored, _ = labelled_probas(members, MirrorOnly(), data, "fit_combination", **kwargs)
    keep = valid & valid_mirrored
    plain, mirrored, labels = plain[:, keep].double(), mirrored[:, keep].double(), labels[keep]
    without = choose_combination(plain, labels, combine, candidates, metric, folds, seed)
    with_flip = choose_combination((plain + mirrored) / 2, labels, combine, candidates, metric, folds, seed)
    score_plain, score_flip = without.scores[without.name], with_flip.scores[with_flip.name]
    flip = score_flip < score_plain  # a tie keeps the cheaper prediction
    decision = FlipChoice(flip=flip, score_plain=score_plain, score_flip=score_flip, metric=without.metric)
    return (with_flip if flip else without), decision
