"""Did the ensemble help? One report: scores, diversity and significance.

:func:`build_report` works on probability tensors (so one forward pass can feed several
strategies); :meth:`Ensemble.report <ensemblenet.Ensemble.report>` computes them on
labelled data first. The result is a plain dataclass (``to_dict()`` / ``to_json()``) that prints
as a text table:

* per member and per ensemble: accuracy with its bootstrap confidence interval, log-loss, ECE
  (top-label, ``n_bins`` equal-width bins) and the multi-class Brier score;
* diversity: the pairwise disagreement rate (share of images on which two members' predicted
  classes differ) and the oracle accuracy (share of images that at least one member gets right,
  an upper bound for any combination of their votes);
* significance of each ensemble against the **best member** (highest accuracy on the report's own
  data, ties broken by log-loss, unless ``best_member`` is given — choosing it on the same data is
  conservative for the ensemble): the accuracy difference with its paired-bootstrap interval and
  McNemar's exact test;
* per member and per ensemble: precision, recall and F1 per class, and the confusion matrix.

:meth:`EnsembleReport.save` writes it as a folder: ``report.md``, ``report.json`` and the figures
(learning curves when training histories are given, confusion matrices, the reliability diagram,
the most confidently wrong images when the images are known).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ._figures import Curves
from ._report_files import ReportEvidence, environment, write_report_folder
from ._results import ModelScore, score_model
from ._significance import mcnemar_exact, paired_bootstrap

__all__ = ["Comparison", "EnsembleReport", "build_report"]


@dataclass(frozen=True)
class Comparison:
    """An ensemble against the best member on the same images."""

    ensemble: str
    baseline: str
    accuracy_diff: float  # ensemble minus baseline
    diff_ci: tuple[float, float]
    b: int  # images only the ensemble gets right
    c: int  # images only the baseline gets right
    p_value: float  # McNemar exact, two-sided


@dataclass(frozen=True)
class EnsembleReport:
    """Everything :func:`build_report` measured; plain data, JSON-serializable via :meth:`to_dict`.

    ``evidence`` keeps the probabilities (and images, histories) the report was computed from, for
    the figures of :meth:`save`; it is not part of :meth:`to_dict`.
    """

    n: int
    n_skipped: int
    classes: tuple[str, ...]
    rows: tuple[ModelScore, ...]
    best_member: str
    comparisons: tuple[Comparison, ...]
    member_names: tuple[str, ...]
    disagreement: tuple[tuple[float, ...], ...]  # (M, M), symmetric, zero diagonal
    mean_disagreement: float
    oracle_accuracy: float
    n_bins: int
    level: float
    n_resamples: int
    seed: int
    tta_passes: int = 1
    evidence: ReportEvidence | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists); the evidence is left out."""
        plain = asdict(replace(self, evidence=None))
        del plain["evidence"]
        return json.loads(json.dumps(plain))  # type: ignore[no-any-return]

    @property
    def primary(self) -> str | None:
        """The first ensemble row's name (the ensemble's own strategy), or None without one."""
        return next((r.name for r in self.rows if r.kind == "ensemble"), None)

    def save(
        self,
        folder: str | os.PathLike[str],
        *,
        title: str = "Ensemble report",
        meta: Mapping[str, Any] | None = None,
        figures: bool | None = None,
    ) -> Path:
        """Write ``report.md``, ``report.json`` and the figures into ``folder``; return it.

        Args:
            folder: created if needed; files of the same names are replaced.
            title: the markdown's heading.
            meta: more plain data for both files, e.g. ``{"data": ..., "split": {...}, "recipe": {...},
                "members": [...], "choice": {...}, "seed": 0}`` (the markdown lays these keys out).
                The hardware, library versions and command line are added unless given.
            figures: True draws them (needs matplotlib: ``pip install "ensemblenet[report]"``),
                False leaves them out; None (default) draws them when matplotlib is installed.

        Figures: ``learning_curves.png`` (when the report was given training histories),
        ``confusion_matrix.png`` (members and the first ensemble row), ``reliability.png`` (every
        row) and ``confident_errors.png`` (the first ensemble row's most confidently wrong images,
        when the images are known).
        """
        payload: dict[str, Any] = {
            "title": title,
            **environment(),
            **dict(meta or {}),
            "report": self.to_dict(),
            "primary": self.primary,
            "confusion_matrices": {
                r.name: [list(row) for row in r.per_class.confusion] for r in self.rows if r.per_class
            },
        }
        return write_report_folder(folder, payload, self.evidence, figures=figures)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def row(self, name: str) -> ModelScore:
        """The row named ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise ConfigError(f"no row {name!r} in the report; rows: {[r.name for r in self.rows]}")

    def __str__(self) -> str:
        pct = round(self.level * 100)
        width = max(len("model"), *(len(r.name) for r in self.rows))
        ci_head = f"{pct}% CI"
        head = (
            f"{'model':<{width}}  {'accuracy':>8}  {ci_head:>17}  {'log_loss':>8}  {'ECE':>6}  {'Brier':>6}"
        )
        lines = [head, "-" * len(head)]
        for i, r in enumerate(self.rows):
            if i and r.kind != self.rows[i - 1].kind:
                lines.append("-" * len(head))
            lo, hi = r.accuracy_ci or (math.nan, math.nan)
            ci = f"[{lo:.4f}, {hi:.4f}]"
            scores = f"{r.log_loss:>8.4f}  {r.ece:>6.4f}  {r.brier:>6.4f}"
            lines.append(f"{r.name:<{width}}  {r.accuracy:>8.4f}  {ci:>17}  {scores}")
        lines.append("")
        lines.append(f"gain over the best member ({self.best_member}), paired on the same {self.n} images:")
        cw = max(len("ensemble"), *(len(c.ensemble) for c in self.comparisons)) if self.comparisons else 8
        lines.append(
            f"{'ensemble':<{cw}}  {'acc diff':>8}  {ci_head:>17}  {'b':>4}  {'c':>4}  {'McNemar p':>9}"
        )
        for c in self.comparisons:
            ci = f"[{c.diff_ci[0]:+.4f}, {c.diff_ci[1]:+.4f}]"
            counts = f"{c.b:>4}  {c.c:>4}  {c.p_value:>9.4g}"
            lines.append(f"{c.ensemble:<{cw}}  {c.accuracy_diff:>+8.4f}  {ci:>17}  {counts}")
        lines.append("(b: images only the ensemble gets right; c: only the best member)")
        lines.append("")
        lines.append(
            f"diversity: mean pairwise disagreement {self.mean_disagreement:.4f}; "
            f"oracle accuracy (some member right) {self.oracle_accuracy:.4f}"
        )
        if len(self.member_names) > 1:
            nw = max(len(n) for n in self.member_names)
            for name, values in zip(self.member_names, self.disagreement, strict=True):
                lines.append(f"  {name:<{nw}}  " + "  ".join(f"{v:.4f}" for v in values))
        lines += self._per_class_lines()
        lines.append(
            f"n={self.n} images ({self.n_skipped} skipped); ECE: top-label, {self.n_bins} equal-width bins; "
            f"CIs: paired percentile bootstrap, {self.n_resamples} resamples, seed {self.seed}"
            + (f"; TTA: {self.tta_passes} forward passes per member" if self.tta_passes > 1 else "")
        )
        return "\n".join(lines)

    def _per_class_lines(self) -> list[str]:
        rows = [r for r in self.rows if r.per_class is not None]
        if not rows or not self.classes:
            return []
        width = max(len("model"), *(len(r.name) for r in rows))
        cw = max(len("class"), *(len(c) for c in self.classes))
        head = (
            f"{'model':<{width}}  {'class':<{cw}}  {'precision':>9}  {'recall':>6}  {'F1':>6}  {'images':>6}"
        )
        lines = ["per class:", head]
        for r in rows:
            scores = r.per_class
            assert scores is not None  # filtered above
            for i, name in enumerate(self.classes):
                values = f"{scores.precision[i]:>9.4f}  {scores.recall[i]:>6.4f}  {scores.f1[i]:>6.4f}"
                lines.append(f"{r.name:<{width}}  {name:<{cw}}  {values}  {scores.support[i]:>6}")
        return lines


def build_report(
    member_probs: torch.Tensor,
    labels: torch.Tensor,
    ensembles: Mapping[str, torch.Tensor],
    *,
    member_names: Sequence[str] | None = None,
    classes: Sequence[str] = (),
    best_member: int | None = None,
    n_bins: int = 15,
    n_resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    n_skipped: int = 0,
    tta_passes: int = 1,
    images: Sequence[Any] | None = None,
    load: Callable[[Any], Any] | None = None,
    histories: Mapping[str, Curves] | None = None,
) -> EnsembleReport:
    """Score members ``(M, N, C)`` and combined predictions ``{name: (N, C)}`` on ``labels``.

    Args:
        member_probs: member probabilities on the report's images (no NaN rows).
        labels: true class indices ``(N,)``.
        ensembles: combined probabilities by name (e.g. ``{"mean": ..., "stacking": ...}``).
        member_names: one name per member (default ``member0``, ``member1``...).
        best_member: index of the baseline member; default: the most accurate here.
        n_bins, n_resamples, seed, level: ECE bins and bootstrap settings.
        images, load: one entry per image (e.g. paths, with ``load=ensemblenet.load_image``), for the
            figure of confident errors that :meth:`EnsembleReport.save` draws.
        histories: training histories by member name, for its learning curves.
    """
    if member_probs.dim() != 3:
        raise ConfigError(f"member_probs must be (members, images, classes), got {tuple(member_probs.shape)}")
    m = member_probs.shape[0]
    names = tuple(member_names) if member_names is not None else tuple(f"member{i}" for i in range(m))
    if len(names) != m:
        raise ConfigError(f"{len(names)} member names for {m} members")
    if torch.isnan(member_probs).any():
        raise ConfigError("member_probs has NaN rows (unreadable images); drop them before reporting")
    labels = labels.long()
    if images is not None and len(images) != labels.numel():
        raise ConfigError(f"{len(images)} images for {labels.numel()} labels; pass one entry per image")

    def score(name: str, kind: str, probs: torch.Tensor) -> tuple[ModelScore, torch.Tensor]:
        correct = probs.argmax(dim=1) == labels
        boot = paired_bootstrap(correct, n_resamples=n_resamples, seed=seed, level=level)
        return score_model(name, probs, labels, kind=kind, n_bins=n_bins, accuracy_ci=boot.ci_a), correct

    member_rows = [score(n, "member", p) for n, p in zip(names, member_probs, strict=True)]
    ensemble_rows = [score(n, "ensemble", p) for n, p in ensembles.items()]
    if best_member is None:
        best_member = min(range(m), key=lambda i: (-member_rows[i][0].accuracy, member_rows[i][0].log_loss))
    elif not 0 <= best_member < m:
        raise ConfigError(f"best_member must be a member index in [0, {m - 1}], got {best_member}")
    base_correct = member_rows[best_member][1]
    comparisons = []
    for row, correct in ensemble_rows:
        test = mcnemar_exact(correct, base_correct)
        boot = paired_bootstrap(correct, base_correct, n_resamples=n_resamples, seed=seed, level=level)
        assert boot.diff is not None and boot.ci_diff is not None
        comparisons.append(
            Comparison(row.name, names[best_member], boot.diff, boot.ci_diff, test.b, test.c, test.p_value)
        )
    preds = member_probs.argmax(dim=2)  # (M, N)
    disagree = (preds[:, None, :] != preds[None, :, :]).double().mean(dim=2)
    pairs = [float(disagree[i, j]) for i in range(m) for j in range(i + 1, m)]
    oracle = float((preds == labels[None, :]).any(dim=0).double().mean())
    return EnsembleReport(
        n=int(labels.numel()),
        n_skipped=n_skipped,
        classes=tuple(classes),
        rows=tuple(r for r, _ in member_rows + ensemble_rows),
        best_member=names[best_member],
        comparisons=tuple(comparisons),
        member_names=names,
        disagreement=tuple(tuple(float(v) for v in row) for row in disagree),
        mean_disagreement=sum(pairs) / len(pairs) if pairs else 0.0,
        oracle_accuracy=oracle,
        n_bins=n_bins,
        level=level,
        n_resamples=n_resamples,
        seed=seed,
        tta_passes=tta_passes,
        evidence=ReportEvidence(
            member_probs=member_probs,
            ensembles=dict(ensembles),
            labels=labels,
            images=images,
            load=load,
            histories=dict(histories or {}),
        ),
    )
