"""What :meth:`Ensemble.evaluate <ensemblenet.ensemble.Ensemble.evaluate>` returns: the ensemble's
and each member's scores on labelled images.

Both classes are also importable from :mod:`ensemblenet.ensemble` and from ``ensemblenet``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EnsembleEvaluation", "MemberEvaluation"]


@dataclass(frozen=True)
class MemberEvaluation:
    """One member's scores on the images every member could read."""

    name: str
    accuracy: float
    log_loss: float
    ece: float = math.nan  # top-label, 15 equal-width bins (ensemblenet.calibration)
    brier: float = math.nan


@dataclass(frozen=True)
class EnsembleEvaluation:
    """The ensemble's and each member's accuracy and log-loss on ``n`` images.

    ``n_skipped`` images could not be used and are excluded from every number: files that failed
    to decode, plus those a :class:`~ensemblenet.Samples` lists as rejected by its scan.
    """

    accuracy: float
    log_loss: float
    members: tuple[MemberEvaluation, ...]
    n: int
    n_skipped: int
    strategy: str
    ece: float = math.nan  # top-label, 15 equal-width bins (ensemblenet.calibration)
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
