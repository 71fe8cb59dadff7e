"""A report folder: ``report.md``, ``report.json`` and the figures, from one report.

:meth:`EnsembleReport.save <ensemblenet.scoring.EnsembleReport.save>` calls :func:`write_report_folder`
with the report as plain data and the evidence behind it (probabilities, labels, images, training
histories). The markdown is written from the same plain data as the JSON, so the two never
disagree. Figures need matplotlib (``pip install "ensemblenet[report]"``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ._figures import (
    Curves,
    plot_confident_errors,
    plot_confusion_matrices,
    plot_learning_curves,
    plot_reliability,
)

__all__ = ["ReportEvidence", "environment", "report_markdown", "write_report_folder"]

logger = logging.getLogger("ensemblenet.scoring")


@dataclass(frozen=True)
class ReportEvidence:
    """What a report's figures are drawn from; kept with the report, left out of its JSON.

    Attributes:
        member_probs: ``(M, N, C)`` member probabilities on the report's images.
        ensembles: combined probabilities ``(N, C)`` by row name.
        labels: ``(N,)`` true classes.
        images: one entry per image for the figure of confident errors (paths with ``load``, or
            decoded images), or None to leave that figure out.
        load: turns an entry of ``images`` into a picture (e.g. :func:`ensemblenet.load_image`).
        histories: training histories by member name, for the learning curves.
    """

    member_probs: torch.Tensor
    ensembles: Mapping[str, torch.Tensor]
    labels: torch.Tensor
    images: Sequence[Any] | None = None
    load: Callable[[Any], Any] | None = None
    histories: Mapping[str, Curves] = field(default_factory=dict)


def environment() -> dict[str, Any]:
    """Hardware, library versions and the command line of this process, for a report's record."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    hardware: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        hardware["gpu"] = torch.cuda.get_device_name(0)
    versions = {"python": platform.python_version(), "ensemblenet": __version__, "torch": torch.__version__}
    for package in ("torchvision", "timm", "numpy", "pillow", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    program = (
        ["python", *sys.argv] if sys.argv[0].endswith(".py") else [Path(sys.argv[0]).name, *sys.argv[1:]]
    )
    command = " ".join(program)
    return {"hardware": hardware, "versions": versions, "command": command}


def write_report_folder(
    folder: str | os.PathLike[str],
    payload: dict[str, Any],
    evidence: ReportEvidence | None,
    *,
    figures: bool | None = None,
) -> Path:
    """Write ``report.json``, ``report.md`` and (with ``evidence``) the figures into ``folder``.

    ``figures``: True draws them (matplotlib required), False leaves them out, None draws them
    when matplotlib is installed and otherwise logs how to get them.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    drawn: dict[str, str] = {}
    if evidence is not None and figures is not False:
        if figures is None and importlib.util.find_spec("matplotlib") is None:
            logger.warning('figures left out: they need matplotlib (pip install "ensemblenet[report]")')
        else:
            drawn = _draw(out, payload, evidence)
    document = {**payload, "figures": drawn}
    (out / "report.json").write_text(json.dumps(_finite(document), indent=2), encoding="utf-8")
    (out / "report.md").write_text(report_markdown(document), encoding="utf-8")
    return out


def _draw(out: Path, payload: dict[str, Any], evidence: ReportEvidence) -> dict[str, str]:
    report = payload["report"]
    classes = report["classes"]
    members = list(report["member_names"])
    primary = payload.get("primary") or next(iter(evidence.ensembles), None)
    all_probs = {**dict(zip(members, evidence.member_probs, strict=True)), **evidence.ensembles}
    matrices = payload["confusion_matrices"]
    files: dict[str, Path] = {}
    if evidence.histories:
        files["learning_curves"] = plot_learning_curves(evidence.histories, out / "learning_curves.png")
    shown = {k: matrices[k] for k in [*members, *([primary] if primary else [])] if k in matrices}
    files["confusion_matrix"] = plot_confusion_matrices(shown, classes, out / "confusion_matrix.png")
    files["reliability"] = plot_reliability(all_probs, evidence.labels, out / "reliability.png")
    if evidence.images is not None and primary is not None:
        captions = [Path(p).name if isinstance(p, (str, os.PathLike)) else "" for p in evidence.images]
        files["confident_errors"] = plot_confident_errors(
            evidence.images,
            evidence.ensembles[primary],
            evidence.labels,
            classes,
            out / "confident_errors.png",
            captions=captions if any(captions) else None,
            load=evidence.load,
        )
    return {k: v.name for k, v in files.items()}


def _finite(value: Any) -> Any:
    """NaN and infinities as null, so the file is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _number(value: Any, digits: int = 4) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
    )


def report_markdown(d: Mapping[str, Any]) -> str:
    """The markdown of a report folder, from its JSON document."""
    r = d["report"]
    classes = r["classes"]
    lines = [f"# {d.get('title') or 'Ensemble report'}", ""]
    lines += _meta_lines(d)
    lines += [
        "",
        "## Results",
        "",
        "| model | accuracy | 95% CI | log-loss | ECE | Brier |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lo, hi = row["accuracy_ci"] or (math.nan, math.nan)
        scores = " | ".join(_number(row[k]) for k in ("log_loss", "ece", "brier"))
        lines.append(f"| {row['name']} | {row['accuracy']:.4f} | [{lo:.4f}, {hi:.4f}] | {scores} |")
    choice = d.get("choice")
    if choice and choice.get("out_of_fold_scores"):
        scores = ", ".join(f"`{k}` {v:.4f}" for k, v in choice["out_of_fold_scores"].items())
        how = f"{choice['folds']}-fold cross-fitted {choice['metric']} on the validation split ({scores})"
        chosen = f"The combination `{choice['chosen']}` (first ensemble row)"
        if choice.get("chosen_by", "validation") == "validation":
            text = f"{chosen} was chosen by {how}"
        else:
            text = f"{chosen} is the recipe's (for comparison: {how})"
        lines += ["", text + "; the test split played no part."]
    lines += [
        "",
        f"Gain over the best member (`{r['best_member']}`), paired on the same {r['n']} images "
        "(b: images only the ensemble gets right; c: only the best member):",
        "",
        "| ensemble | accuracy gain | 95% CI | b | c | McNemar exact p |",
        "|---|---|---|---|---|---|",
    ]
    for c in r["comparisons"]:
        lo, hi = c["diff_ci"]
        lines.append(
            f"| {c['ensemble']} | {c['accuracy_diff']:+.4f} | [{lo:+.4f}, {hi:+.4f}] | {c['b']} | {c['c']} | "
            f"{c['p_value']:.4g} |"
        )
    lines += [
        "",
        f"Diversity: mean pairwise disagreement {r['mean_disagreement']:.4f}; oracle accuracy "
        f"{r['oracle_accuracy']:.4f}. ECE: top-label, {r['n_bins']} bins. {r['n']} images, {r['n_skipped']} "
        "skipped (unreadable).",
        "",
        "## Per class",
        "",
        "| model | class | precision | recall | F1 | images |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        per = row.get("per_class")
        if not per:
            continue
        for i, name in enumerate(classes):
            lines.append(
                f"| {row['name']} | {name} | {per['precision'][i]:.4f} | {per['recall'][i]:.4f} | "
                f"{per['f1'][i]:.4f} | {per['support'][i]} |"
            )
    lines += ["", "## Confusion matrices (rows: true, columns: predicted)", ""]
    for name, matrix in d.get("confusion_matrices", {}).items():
        cells = "; ".join(
            f"{classes[t]}→{classes[q]} {matrix[t][q]}"
            for t in range(len(classes))
            for q in range(len(classes))
        )
        lines.append(f"- {name}: {cells}")
    lines += _member_lines(d.get("members"))
    if d.get("figures"):
        lines += ["", "## Figures", ""]
        for key, file in d["figures"].items():
            lines += [f"![{key}]({file})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _meta_lines(d: Mapping[str, Any]) -> list[str]:
    lines = []
    if d.get("data"):
        lines.append(f"- data: {d['data']}")
    split = d.get("split")
    if isinstance(split, Mapping):
        lines.append("- split: " + " / ".join(f"{k} {v}" for k, v in split.items()))
    recipe = d.get("recipe")
    if d.get("recipe_summary"):
        lines.append(f"- {d['recipe_summary']}")
    elif isinstance(recipe, Mapping):
        settings = ", ".join(f"{k} {v}" for k, v in recipe.items() if k not in ("name", "description"))
        lines.append(f"- recipe `{recipe.get('name')}`: {settings}")
    if d.get("seed") is not None:
        lines.append(f"- seed {d['seed']}")
    if d.get("seconds") is not None:
        lines.append(f"- total wall time {d['seconds']:.0f} s")
    hardware = d.get("hardware")
    if isinstance(hardware, Mapping):
        gpu = f", GPU {hardware['gpu']}" if "gpu" in hardware else ", no GPU"
        lines.append(
            f"- hardware: {hardware.get('cpu')}, {hardware.get('cpu_count')} CPUs, "
            f"{hardware.get('torch_threads')} torch threads{gpu}"
        )
    if isinstance(d.get("versions"), Mapping):
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in d["versions"].items()))
    if d.get("command"):
        lines.append(f"- command: `{d['command']}`")
    return lines


def _member_lines(members: Any) -> list[str]:
    if not members:
        return []
    lines = [
        "",
        "## Members",
        "",
        "| member | train wall time (s) | of which feature cache (s) | best val loss | epochs |",
        "|---|---|---|---|---|",
    ]
    for m in members:
        losses = [h["val_loss"] for h in m.get("history", []) if h.get("val_loss") is not None]
        best = min((v for v in losses if not math.isnan(v)), default=math.nan)
        lines.append(
            f"| {m['backbone']} | {m['train_seconds']:.0f} | {m.get('feature_seconds', 0):.0f} | "
            f"{_number(best)} | {len(m.get('history', []))} |"
        )
    lines.append("")
    for m in members:
        source = m.get("weights_source") or "random init"
        lines.append(f"- `{m['backbone']}` started from weights `{m.get('weights')}`: {source}")
    return lines
