"""Figures for a benchmark report: learning curves, confusion matrix, reliability diagram, and the
test images the model got wrong most confidently.

Each ``plot_*`` function writes one PNG of a fixed pixel size (``figsize`` times ``dpi``, no tight
cropping, so reports lay out predictably) and returns its path. matplotlib is an optional
dependency (``pip install "ensemblenet[report]"``); it is imported when a figure is drawn, through
its object API (no ``pyplot`` global state, no GUI backend). The selection and binning helpers
(:func:`most_confident_errors`, and :func:`~ensemblenet.scoring.reliability_bins` in the metrics)
need only torch:

>>> import torch
>>> from ensemblenet.scoring import most_confident_errors
>>> probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
>>> labels = torch.tensor([1, 1, 1, 0])
>>> most_confident_errors(probs, labels, k=5).tolist()  # row 0 (wrong at 0.9), then 3 (0.7), then 2
[0, 3, 2]
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from ..errors import ConfigError, MissingDependencyError
from ._metrics import expected_calibration_error, reliability_bins

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "Curves",
    "most_confident_errors",
    "plot_confident_errors",
    "plot_confusion_matrices",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_reliability",
]

DPI = 100


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.figure import Figure  # optional dependency, imported when a figure is drawn
    except ImportError as exc:
        raise MissingDependencyError(
            'drawing report figures needs matplotlib: pip install "ensemblenet[report]" (or matplotlib)'
        ) from exc
    return Figure(figsize=(width, height), dpi=DPI)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Figure.savefig attaches an Agg canvas itself; dpi is fixed so the PNG is figsize * DPI pixels.
    fig.savefig(out, dpi=DPI, format="png")
    return out


def _check_probs(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if probs.dim() != 2 or labels.dim() != 1 or probs.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"expected probs (N, C) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    return probs.double(), labels.long()


def most_confident_errors(probs: torch.Tensor, labels: torch.Tensor, k: int = 16) -> torch.Tensor:
    """Indices of up to ``k`` misclassified rows, most confident first.

    Confidence is the probability of the predicted (wrong) class; ties keep the lower index first.
    Rows with NaN (unreadable images) are never selected.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"k must be an int >= 0, got {k!r}")
    probs, labels = _check_probs(probs, labels)
    valid = ~torch.isnan(probs).any(dim=1)
    conf, pred = torch.nan_to_num(probs, nan=0.0).max(dim=1)
    wrong = torch.nonzero(valid & (pred != labels)).flatten()
    # stable sort on -confidence: equal confidences stay in index order
    order = torch.sort(-conf[wrong], stable=True).indices
    return wrong[order][:k]


class Curves(Protocol):
    """What a learning-curve figure reads: a per-epoch column by name, e.g. a training ``History``."""

    def column(self, name: str) -> list[float]:
        """One metric across epochs: ``"epoch"``, ``"train_loss"``, ``"val_loss"``, ``"val_accuracy"``."""
        ...


def plot_learning_curves(histories: Mapping[str, Curves], path: str | os.PathLike[str]) -> Path:
    """Loss (train and validation) and validation accuracy per epoch, one line colour per member.

    ``histories`` maps a name to a training :class:`~ensemblenet.History` (or anything with the
    same ``column(name)``).
    """
    if not histories:
        raise ConfigError("plot_learning_curves needs at least one history")
    fig = _figure(10, 4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for i, (name, history) in enumerate(histories.items()):
        colour = f"C{i}"
        epochs = [int(e) for e in history.column("epoch")]  # 1-based, as logged
        loss_ax.plot(epochs, history.column("train_loss"), "--o", color=colour, label=f"{name} train")
        loss_ax.plot(epochs, history.column("val_loss"), "-o", color=colour, label=f"{name} val")
        acc_ax.plot(epochs, history.column("val_accuracy"), "-o", color=colour, label=name)
    loss_ax.set(title="loss (dashed: train, solid: validation)", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title="validation accuracy", xlabel="epoch", ylabel="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrices(
    matrices: Mapping[str, torch.Tensor | Sequence[Sequence[int]]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
) -> Path:
    """Confusion matrices side by side (rows: true class, columns: predicted), counts and row shares."""
    if not matrices:
        raise ConfigError("plot_confusion_matrices needs at least one matrix")
    n = len(matrices)
    fig = _figure(3.6 * n, 3.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, matrix) in zip(axes, matrices.items(), strict=True):
        m = torch.as_tensor(matrix, dtype=torch.float64)
        if m.shape != (len(classes), len(classes)):
            raise ConfigError(f"confusion matrix {name!r} is {tuple(m.shape)} for {len(classes)} classes")
        share = m / m.sum(dim=1, keepdim=True).clamp_min(1)
        ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
        for r in range(len(classes)):
            for c in range(len(classes)):
                colour = "white" if share[r, c] > 0.5 else "black"
                label = f"{int(m[r, c])}\n{share[r, c]:.1%}"
                ax.text(c, r, label, ha="center", va="center", color=colour, fontsize="small")
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set(title=name, xlabel="predicted", ylabel="true")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: torch.Tensor | Sequence[Sequence[int]],
    classes: Sequence[str],
    path: str | os.PathLike[str],
    title: str = "confusion matrix",
) -> Path:
    """One confusion matrix (see :func:`plot_confusion_matrices`)."""
    return plot_confusion_matrices({title: torch.as_tensor(matrix)}, classes, path)


def plot_reliability(
    probs: Mapping[str, torch.Tensor],
    labels: torch.Tensor,
    path: str | os.PathLike[str],
    n_bins: int = 15,
) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, one line per model, with the
    diagonal of perfect calibration and a histogram of confidences below."""
    if not probs:
        raise ConfigError("plot_reliability needs at least one model's probabilities")
    fig = _figure(6, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for i, (name, p) in enumerate(probs.items()):
        count, acc, conf = reliability_bins(p, labels, n_bins)
        keep = count > 0
        ece = expected_calibration_error(p, labels, n_bins)
        top.plot(conf[keep].numpy(), acc[keep].numpy(), "-o", color=f"C{i}", label=f"{name} (ECE {ece:.4f})")
        centers = (torch.arange(n_bins, dtype=torch.float64) + 0.5) / n_bins
        width = 0.8 / n_bins / len(probs)
        offset = (i - (len(probs) - 1) / 2) * width
        bottom.bar((centers + offset).numpy(), count.numpy(), width=width, color=f"C{i}")
    top.set(title=f"reliability ({n_bins} equal-width bins, top-label)", ylabel="accuracy", ylim=(0, 1.02))
    top.legend(fontsize="small", loc="upper left")
    top.grid(alpha=0.3)
    bottom.set(xlabel="confidence", ylabel="images", yscale="log", xlim=(0, 1))
    fig.tight_layout()
    return _save(fig, path)


def plot_confident_errors(
    images: Sequence[Any],
    probs: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    path: str | os.PathLike[str],
    *,
    k: int = 16,
    captions: Sequence[str] | None = None,
    load: Callable[[Any], Any] | None = None,
) -> Path:
    """A grid of the ``k`` most confidently wrong images (see :func:`most_confident_errors`).

    Args:
        images: one entry per row of ``probs``: a PIL image, an ``(H, W, 3)`` uint8 array, a
            ``(3, H, W)`` tensor, or anything ``load`` turns into one of those (e.g. a path with
            ``load=ensemblenet.load_image``); only the selected ones are loaded.
        probs, labels: the model's probabilities ``(N, C)`` and the true classes ``(N,)``.
        captions: an optional extra line per image (e.g. its file name).
        load: applied to each selected entry of ``images`` before drawing it.

    With no wrong prediction the figure says so instead of showing an empty grid.
    """
    if len(images) != probs.shape[0]:
        raise ConfigError(f"{len(images)} images for {probs.shape[0]} probability rows")
    chosen = most_confident_errors(probs, labels, k).tolist()
    cols = 4
    rows = max(1, math.ceil(len(chosen) / cols))
    fig = _figure(3 * cols, 3.3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes:
        ax.axis("off")
    if not chosen:
        axes[0].text(0, 0.5, "no wrong predictions", fontsize="large")
    for ax, i in zip(axes, chosen, strict=False):
        ax.imshow(_pixels(images[i] if load is None else load(images[i])))
        p = probs[i].double()
        pred = int(p.argmax())
        true = int(labels[i])
        title = f"true {classes[true]}: {p[true]:.3f}\npredicted {classes[pred]}: {p[pred]:.3f}"
        if captions is not None:
            title += f"\n{captions[i]}"
        ax.set_title(title, fontsize="small")
    fig.suptitle(f"most confidently wrong ({len(chosen)} shown)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.3 * rows)))  # keep the title clear of the captions
    fig.subplots_adjust(hspace=0.5)  # three caption lines above each image
    return _save(fig, path)


def _pixels(image: Any) -> Any:
    if isinstance(image, (str, os.PathLike)):
        raise ConfigError(
            f"plot_confident_errors got the path {os.fspath(image)!r}: pass load=ensemblenet.load_image "
            "to decode paths, or pass the decoded images"
        )
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy() if image.dim() == 3 and image.shape[0] == 3 else image.numpy()
    return np.asarray(image)
