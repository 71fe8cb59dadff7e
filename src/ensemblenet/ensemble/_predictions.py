"""``Predictions``: what :meth:`Ensemble.predict <ensemblenet.Ensemble.predict>` returns.

Class names with their probabilities, one entry per input image, in input order; the tensors
stay available (``indices``, ``probs``) for code that computes with them.

>>> import torch
>>> from ensemblenet.ensemble import Predictions
>>> preds = Predictions(
...     torch.tensor([[0.9, 0.1], [0.3, 0.7], [float("nan")] * 2], dtype=torch.float64),
...     ("cats", "dogs"),
...     sources=["a.jpg", "b.jpg", "broken.jpg"],
... )
>>> preds.labels
['cats', 'dogs', None]
>>> preds.indices.tolist()
[0, 1, -1]
>>> preds[1]
Prediction(label='dogs', confidence=0.7, probabilities={'cats': 0.3, 'dogs': 0.7}, source='b.jpg')
>>> print(preds)
source      prediction    confidence
a.jpg       cats              0.9000
b.jpg       dogs              0.7000
broken.jpg  (unreadable)           -
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import torch

__all__ = ["Prediction", "Predictions"]

_SHOWN = 20  # rows printed before "... N more"


@dataclass(frozen=True)
class Prediction:
    """One image's prediction.

    Attributes:
        label: the most probable class name, or None when the image could not be read.
        confidence: its probability (NaN when unreadable).
        probabilities: every class's probability by name (empty when unreadable).
        source: the image's file, when the input was files.
    """

    label: str | None
    confidence: float
    probabilities: dict[str, float]
    source: str | None = None


class Predictions(Sequence[Prediction]):
    """Class names and probabilities for a batch of images (a sequence of :class:`Prediction`).

    Args:
        probs: ``(N, C)`` probabilities, NaN rows for images that could not be read.
        classes: the class names, in column order.
        sources: one file name per row, when the input was files.
    """

    def __init__(
        self,
        probs: torch.Tensor,
        classes: Sequence[str],
        sources: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        self.probs: torch.Tensor = probs
        self.classes: tuple[str, ...] = tuple(classes)
        self.sources: tuple[str, ...] | None = (
            None if sources is None else tuple(os.fspath(s) for s in sources)
        )
        if self.sources is not None and len(self.sources) != probs.shape[0]:
            raise ValueError(f"{len(self.sources)} sources for {probs.shape[0]} rows of probabilities")

    @property
    def readable(self) -> torch.Tensor:
        """Mask ``(N,)`` of the images that could be read."""
        return ~torch.isnan(self.probs).any(dim=1)

    @property
    def indices(self) -> torch.Tensor:
        """Predicted class indices, int64 ``(N,)`` into :attr:`classes`; -1 for unreadable images."""
        out = self.probs.argmax(dim=1) if self.probs.numel() else torch.empty(0, dtype=torch.int64)
        out[~self.readable] = -1
        return out

    @property
    def labels(self) -> list[str | None]:
        """Predicted class names (None for unreadable images)."""
        return [self.classes[i] if i >= 0 else None for i in self.indices.tolist()]

    @property
    def confidence(self) -> torch.Tensor:
        """The probability of each predicted class, float64 ``(N,)`` (NaN for unreadable images)."""
        return self.probs.max(dim=1).values if self.probs.numel() else torch.empty(0, dtype=self.probs.dtype)

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    @overload
    def __getitem__(self, i: int) -> Prediction: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Prediction]: ...

    def __getitem__(self, i: int | slice) -> Prediction | Sequence[Prediction]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self.probs[i]
        source = None if self.sources is None else self.sources[i]
        if bool(torch.isnan(row).any()):
            return Prediction(None, math.nan, {}, source)
        values = [round(float(v), 6) for v in row.tolist()]
        best = max(range(len(values)), key=values.__getitem__)
        return Prediction(
            self.classes[best], values[best], dict(zip(self.classes, values, strict=True)), source
        )

    def __iter__(self) -> Iterator[Prediction]:
        for i in range(len(self)):
            yield self[i]

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per image: ``source``, ``label``, ``confidence``, ``probabilities``."""
        return [
            {
                "source": p.source,
                "label": p.label,
                "confidence": p.confidence,
                "probabilities": p.probabilities,
            }
            for p in self
        ]

    def __repr__(self) -> str:
        counts = {c: self.labels.count(c) for c in self.classes}
        unreadable = len(self) - int(self.readable.sum())
        extra = f", unreadable={unreadable}" if unreadable else ""
        return f"Predictions({len(self)} images: {counts}{extra})"

    def __str__(self) -> str:
        names = [s or f"#{i}" for i, s in enumerate(self.sources or [""] * len(self))][:_SHOWN]
        shown = [self[i] for i in range(len(names))]
        labels = [p.label if p.label is not None else "(unreadable)" for p in shown]
        width = max([len("source"), *(len(n) for n in names)])
        lw = max([len("prediction"), *(len(label) for label in labels)])
        lines = [f"{'source':<{width}}  {'prediction':<{lw}}  {'confidence':>10}"]
        for name, label, p in zip(names, labels, shown, strict=True):
            conf = "-" if p.label is None else f"{p.confidence:.4f}"
            lines.append(f"{name:<{width}}  {label:<{lw}}  {conf:>10}")
        if len(self) > _SHOWN:
            lines.append(f"... {len(self) - _SHOWN} more")
        return "\n".join(lines)
