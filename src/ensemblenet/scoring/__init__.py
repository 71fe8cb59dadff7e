"""Judging probabilities: metrics, significance, the report and its figures.

Pure functions of class probabilities ``(N, C)`` and integer labels ``(N,)``, with no knowledge of
images or models, so the trainer, the strategies and the ensemble all score the same way. Each
metric is defined once (:mod:`metrics <ensemblenet.scoring>` below); :class:`EnsembleReport`,
the figures, the strategy chooser and the stacking combiner all call these.

:meth:`EnsembleReport.save` writes a report folder (``report.md``, ``report.json``, figures).
Figures need the optional matplotlib (``pip install "ensemblenet[report]"``), imported only when
one is drawn.
"""

from ._figures import (
    Curves,
    most_confident_errors,
    plot_confident_errors,
    plot_confusion_matrices,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_reliability,
)
from ._metrics import (
    KAGGLE_EPS,
    METRICS,
    accuracy,
    brier_score,
    check_probs,
    confusion_matrix,
    expected_calibration_error,
    log_loss,
    metric_score,
    per_class_scores,
    reliability_bins,
)
from ._report import Comparison, EnsembleReport, build_report
from ._report_files import ReportEvidence, environment, report_markdown, write_report_folder
from ._results import ClassScores, EnsembleEvaluation, Evaluation, MemberEvaluation, ModelScore, score_model
from ._significance import BootstrapResult, McNemarResult, mcnemar_exact, paired_bootstrap

__all__ = [
    "KAGGLE_EPS",
    "METRICS",
    "BootstrapResult",
    "ClassScores",
    "Comparison",
    "Curves",
    "EnsembleEvaluation",
    "EnsembleReport",
    "Evaluation",
    "McNemarResult",
    "MemberEvaluation",
    "ModelScore",
    "ReportEvidence",
    "accuracy",
    "brier_score",
    "build_report",
    "check_probs",
    "confusion_matrix",
    "environment",
    "expected_calibration_error",
    "log_loss",
    "mcnemar_exact",
    "metric_score",
    "most_confident_errors",
    "paired_bootstrap",
    "per_class_scores",
    "plot_confident_errors",
    "plot_confusion_matrices",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "plot_reliability",
    "reliability_bins",
    "report_markdown",
    "score_model",
    "write_report_folder",
]
