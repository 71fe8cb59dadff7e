"""The result types of every evaluation, in one family.

* :class:`Evaluation` -- what :meth:`Trainer.evaluate <ensemblenet.Trainer.evaluate>` measures
  during training: mean cross-entropy and accuracy of one model.
* :class:`ModelScore` -- one row of scores for a member or an ensemble, computed from probabilities
  by :func:`score_model`; rows of :meth:`Ensemble.evaluate <ensemblenet.Ensemble.evaluate>`
  (``MemberEvaluation`` is its 0.1 name) and of :class:`~ensemblenet.scoring.EnsembleReport`.
* :class:`EnsembleEvaluation` -- the ensemble's row and its members' rows on the same images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ._metrics import (
    accuracy,
    brier_score,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    per_class_scores,
)

__all__ = ["ClassScores", "EnsembleEvaluation", "Evaluation", "MemberEvaluation", "ModelScore", "score_model"]


@dataclass(frozen=True)
class Evaluation:
    """Loss and accuracy of a model on a dataset (unreadable images excluded and counted)."""

    loss: float
    accuracy: float
    n: int
    n_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClassScores:
    """Per-class precision, recall, F1 and support, and the confusion matrix, in class order.

    ``confusion[t][p]`` counts images of class ``t`` predicted as ``p`` (rows true, columns
    predicted, as :func:`~ensemblenet.scoring.confusion_matrix`).
    """

    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    confusion: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, probs: torch.Tensor, labels: torch.Tensor) -> ClassScores:
        """The scores of the most probable classes of ``probs`` ``(N, C)`` against ``labels``."""
        preds, num_classes = probs.argmax(dim=1), probs.shape[1]
        scores = per_class_scores(preds, labels.long(), num_classes)
        matrix = confusion_matrix(preds, labels.long(), num_classes)
        return cls(
            precision=tuple(float(v) for v in scores["precision"]),
            recall=tuple(float(v) for v in scores["recall"]),
            f1=tuple(float(v) for v in scores["f1"]),
            support=tuple(int(v) for v in scores["support"]),
            confusion=tuple(tuple(int(v) for v in row) for row in matrix),
        )


@dataclass(frozen=True)
class ModelScore:
    """One model's scores (a member's or an ensemble's) on labelled images.

    Attributes:
        name: the member's backbone name, or the ensemble's label.
        accuracy: share of images whose most probable class is right.
        log_loss: mean negative log-probability of the true class (see
            :func:`~ensemblenet.scoring.log_loss`).
        ece: top-label expected calibration error (see :mod:`ensemblenet.scoring`).
        brier: multi-class Brier score.
        kind: ``"member"`` or ``"ensemble"``.
        accuracy_ci: a bootstrap confidence interval of the accuracy, where one was computed.
        per_class: precision, recall, F1, support and the confusion matrix, per class.
    """

    name: str
    accuracy: float
    log_loss: float
    ece: float = math.nan
    brier: float = math.nan
    kind: str = "member"
    accuracy_ci: tuple[float, float] | None = None
    per_class: ClassScores | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The 0.1 name of :class:`ModelScore` as a row of :class:`EnsembleEvaluation`.
MemberEvaluation = ModelScore


def score_model(
    name: str,
    probs: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: str = "member",
    n_bins: int = 15,
    accuracy_ci: tuple[float, float] | None = None,
) -> ModelScore:
    """Every score of one model's probabilities ``(N, C)`` against ``labels`` ``(N,)``."""
    return ModelScore(
        name=name,
        accuracy=accuracy(probs, labels),
        log_loss=log_loss(probs, labels),
        ece=expected_calibration_error(probs, labels, n_bins),
        brier=brier_score(probs, labels),
        kind=kind,
        accuracy_ci=accuracy_ci,
        per_class=ClassScores.of(probs, labels),
    )


@dataclass(frozen=True)
class EnsembleEvaluation:
    """The ensemble's and each member's accuracy and log-loss on ``n`` images.

    ``n_skipped`` images could not be used and are excluded from every number: files that failed
    to decode, plus those a :class:`~ensemblenet.Samples` lists as rejected by its scan.
    """

    accuracy: float
    log_loss: float
    members: tuple[ModelScore, ...]
    n: int
    n_skipped: int
    strategy: str
    ece: float = math.nan  # top-label, 15 equal-width bins (see ensemblenet.scoring)
    brier: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable types."""
        return asdict(self) | {"members": [asdict(m) for m in self.members]}

    def __str__(self) -> str:
        label = f"ensemble ({self.strategy})"
        rows = [(m.name, m.accuracy, m.log_loss, m.ece, m.brier) for m in self.members] + [
            (label, self.accuracy, self.log_loss, self.ece, self.brier)
        ]
        width = max(len("model"), *(len(r[0]) for r in rows))
        lines = [f"{'model':<{width}}  {'accuracy':>8}  {'log_loss':>8}  {'ECE':>6}  {'Brier':>6}"]
        lines += [f"{r[0]:<{width}}  {r[1]:>8.4f}  {r[2]:>8.4f}  {r[3]:>6.4f}  {r[4]:>6.4f}" for r in rows]
        lines.append(f"n={self.n} images, {self.n_skipped} skipped (unreadable)")
        return "\n".join(lines)
