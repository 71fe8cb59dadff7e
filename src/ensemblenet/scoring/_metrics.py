"""Classification metrics on probability tensors: the one place each is defined.

Plain tensor code with no state, so the trainer, the strategies, the ensemble, the report and its
figures all measure the same way.

>>> import torch
>>> from ensemblenet.scoring import accuracy, confusion_matrix, log_loss
>>> probs = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
>>> labels = torch.tensor([0, 1, 1])
>>> accuracy(probs, labels)
0.6666666666666666
>>> round(log_loss(probs, labels), 4)  # -(ln 0.8 + ln 0.6 + ln 0.3) / 3
0.646
>>> confusion_matrix(probs.argmax(dim=1), labels, num_classes=2)
tensor([[1, 0],
        [1, 1]])

Calibration, binning stated once: **top-label** confidence (the largest probability of each row),
**15 equal-width bins** over ``[0, 1]`` by default, bin ``b`` holding confidences in
``(b / B, (b + 1) / B]`` (a confidence of exactly 0 goes to the first bin); the ECE is
``sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|`` over the non-empty bins (Guo et al.,
2017), and the reliability diagram plots the same bins.

Per class, from the confusion matrix: precision (of the images predicted as the class, the share
that are), recall (of the images of the class, the share found) and F1 (their harmonic mean); a
class never predicted has precision 0, as scikit-learn's ``zero_division=0`` gives.

>>> from ensemblenet.scoring import per_class_scores
>>> scores = per_class_scores(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]), num_classes=2)
>>> [round(v, 4) for v in scores["precision"].tolist()], [round(v, 4) for v in scores["recall"].tolist()]
([1.0, 0.6667], [0.5, 1.0])
>>> [round(v, 4) for v in scores["f1"].tolist()], scores["support"].tolist()
([0.6667, 0.8], [2.0, 2.0])

>>> from ensemblenet.scoring import brier_score, expected_calibration_error
>>> probs = torch.tensor([[0.95, 0.05], [0.85, 0.15], [0.25, 0.75], [0.55, 0.45]])
>>> labels = torch.tensor([0, 1, 1, 0])
>>> # 5 bins: (0.8, 1] holds 0.95 (right) and 0.85 (wrong): |0.5 - 0.9| * 2/4 = 0.2;
>>> # (0.6, 0.8] holds 0.75 (right): 0.25 * 1/4; (0.4, 0.6] holds 0.55 (right): 0.45 * 1/4.
>>> round(expected_calibration_error(probs, labels, n_bins=5), 4)
0.375
>>> round(brier_score(probs, labels), 4)
0.495
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

__all__ = [
    "KAGGLE_EPS",
    "METRICS",
    "accuracy",
    "brier_score",
    "check_probs",
    "confusion_matrix",
    "expected_calibration_error",
    "log_loss",
    "metric_score",
    "per_class_scores",
    "reliability_bins",
]

#: Metrics a fitted combination can be chosen or selected by (:func:`metric_score`).
METRICS = ("log_loss", "accuracy", "brier")


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``probs`` ``(N, C)`` whose argmax equals ``labels`` ``(N,)``."""
    probs, labels = check_probs(probs, labels)
    return float((probs.argmax(dim=1) == labels).double().mean().item())


KAGGLE_EPS = 1e-15
"""The clip of Kaggle's log-loss (and of scikit-learn's ``log_loss`` before 1.5)."""


def log_loss(probs: torch.Tensor, labels: torch.Tensor, eps: float = KAGGLE_EPS) -> float:
    """Mean negative log-probability of the true class (cross-entropy on probabilities).

    The true-class probability is clamped to ``[eps, 1]`` first, so one confident mistake costs at
    most ``-ln(eps)`` instead of infinity. The default, ``1e-15``, is the competition's own clip
    (Dogs vs Cats on Kaggle scores ``max(min(p, 1 - 1e-15), 1e-15)``), so the number is comparable
    with its leaderboard: a confident mistake costs up to 34.5 (Kaggle's upper clip moves a mean by
    less than 1e-15 and is left out). ensemblenet 0.1 clamped at ``1e-7`` (at most 16.1 per
    mistake); pass ``eps=1e-7`` for its numbers. Computed in float64.
    """
    probs, labels = check_probs(probs, labels)
    if not 0.0 < eps < 1.0:
        raise ConfigError(f"eps must be in (0, 1), got {eps!r}")
    true = probs.double()[torch.arange(probs.shape[0], device=probs.device), labels]
    return float(-torch.log(true.clamp(eps, 1.0)).mean().item())


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Multi-class Brier score: mean over rows of ``sum_c (p_c - onehot_c)^2`` (0 best, 2 worst).

    For two classes this is twice scikit-learn's binary ``brier_score_loss``.
    """
    probs, labels = check_probs(probs, labels)
    onehot = torch.nn.functional.one_hot(labels, probs.shape[1]).double()
    return float(((probs.double() - onehot) ** 2).sum(dim=1).mean().item())


def reliability_bins(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per bin: ``(count, accuracy, mean confidence)``, float64 ``(n_bins,)`` each (NaN for empty bins).

    The binning of the module docstring; :func:`expected_calibration_error` sums these bins' terms.
    """
    count, correct_sum, conf_sum = _bin_sums(probs, labels, n_bins)
    return count, correct_sum / count, conf_sum / count  # 0/0 gives NaN for empty bins


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Top-label ECE with ``n_bins`` equal-width bins (see the module docstring for the binning)."""
    count, correct_sum, conf_sum = _bin_sums(probs, labels, n_bins)
    return float(((correct_sum - conf_sum).abs().sum() / count.sum()).item())


def _bin_sums(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per bin: the count, the number right and the sum of confidences (float64)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive int, got {n_bins!r}")
    probs, labels = check_probs(probs, labels)
    conf, pred = probs.double().max(dim=1)
    correct = (pred == labels).double()
    # ceil(conf * B) - 1 puts conf in (b/B, (b+1)/B] into bin b; conf == 0 is clamped into bin 0.
    bins = (torch.ceil(conf * n_bins) - 1).clamp(0, n_bins - 1).long()
    count = torch.bincount(bins, minlength=n_bins).double()
    correct_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    return count, correct_sum, conf_sum


def metric_score(metric: str, probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(primary, tie-break)`` for ``metric`` in :data:`METRICS`, both lower-is-better.

    Accuracy is negated; accuracy and Brier ties are broken by log-loss.
    """
    if metric == "log_loss":
        return (log_loss(probs, labels), 0.0)
    if metric == "brier":
        return (brier_score(probs, labels), log_loss(probs, labels))
    if metric == "accuracy":
        return (-accuracy(probs, labels), log_loss(probs, labels))
    raise ConfigError(f"metric must be one of {list(METRICS)}, got {metric!r}")


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts: row = true class, column = predicted class.

    Same orientation as scikit-learn's ``confusion_matrix(y_true, y_pred)``.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    for name, t in (("preds", preds), ("labels", labels)):
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.is_floating_point():
            raise ConfigError(f"{name} must be a 1-D integer tensor of class indices, got {_describe(t)}")
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ConfigError(f"{name} must lie in [0, {num_classes - 1}], got values outside it")
    if preds.shape != labels.shape:
        raise ConfigError(f"preds {tuple(preds.shape)} and labels {tuple(labels.shape)} differ in length")
    flat = labels.long().cpu() * num_classes + preds.long().cpu()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_scores(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and support per class, float64 ``(num_classes,)`` each (keys
    ``"precision"``, ``"recall"``, ``"f1"``, ``"support"``), from :func:`confusion_matrix`."""
    matrix = confusion_matrix(preds, labels, num_classes).double()
    hits = matrix.diag()
    predicted, support = matrix.sum(dim=0), matrix.sum(dim=1)
    precision = torch.where(predicted > 0, hits / predicted.clamp_min(1), torch.zeros_like(hits))
    recall = torch.where(support > 0, hits / support.clamp_min(1), torch.zeros_like(hits))
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both.clamp_min(1e-300), torch.zeros_like(hits))
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def check_probs(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(probs, labels as int64)`` when ``probs`` is a float ``(N, C)`` tensor and ``labels`` an
    integer ``(N,)`` tensor of classes in range, with ``N >= 1``; else a ConfigError saying which."""
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or not probs.is_floating_point():
        raise ConfigError(f"probs must be a float tensor of shape (N, C), got {_describe(probs)}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ConfigError(f"labels must be a 1-D integer tensor, got {_describe(labels)}")
    if labels.shape[0] != probs.shape[0]:
        raise ConfigError(f"probs has {probs.shape[0]} rows but labels has {labels.shape[0]} entries")
    if probs.shape[0] == 0:
        raise ConfigError("cannot compute a metric on zero images")
    labels = labels.long().to(probs.device)
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ConfigError(f"labels must lie in [0, {probs.shape[1] - 1}], got values outside it")
    return probs, labels


def _describe(t: object) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.dtype} tensor of shape {tuple(t.shape)}"
    return type(t).__name__
