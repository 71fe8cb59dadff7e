"""Classification metrics on probability tensors: accuracy, log-loss, confusion matrix.

Plain tensor code with no state, so the trainer, the ensemble and tests all measure the same way.

>>> import torch
>>> from ensemblenet.metrics import accuracy, confusion_matrix, log_loss
>>> probs = torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
>>> labels = torch.tensor([0, 1, 1])
>>> accuracy(probs, labels)
0.6666666666666666
>>> round(log_loss(probs, labels), 4)  # -(ln 0.8 + ln 0.6 + ln 0.3) / 3
0.646
>>> confusion_matrix(probs.argmax(dim=1), labels, num_classes=2)
tensor([[1, 0],
        [1, 1]])
"""

from __future__ import annotations

import torch

from .errors import ConfigError

__all__ = ["accuracy", "confusion_matrix", "log_loss"]


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``probs`` ``(N, C)`` whose argmax equals ``labels`` ``(N,)``."""
    probs, labels = _check(probs, labels)
    return float((probs.argmax(dim=1) == labels).double().mean().item())


def log_loss(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-7) -> float:
    """Mean negative log-probability of the true class (cross-entropy on probabilities).

    The true-class probability is clamped to ``[eps, 1]`` first, so one confident mistake costs at
    most ``-ln(eps)`` (about 16.1 for the default) instead of infinity. Computed in float64.
    """
    probs, labels = _check(probs, labels)
    if not 0.0 < eps < 1.0:
        raise ConfigError(f"eps must be in (0, 1), got {eps!r}")
    true = probs.double()[torch.arange(probs.shape[0], device=probs.device), labels]
    return float(-torch.log(true.clamp(eps, 1.0)).mean().item())


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


def _check(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
