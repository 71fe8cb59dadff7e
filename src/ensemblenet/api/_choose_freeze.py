"""Where to cut a backbone, chosen on validation: train one model per freeze policy, keep the best.

How much of a pretrained backbone to adapt depends on the backbone and the data: the head alone
(``"head_only"``: features computed once, seconds per epoch), the last stage or two as well
(``FreezeStages(-1)``, ``FreezeStages(-2)``: the frozen prefix is still computed once, the later
stages train on it), or every BatchNorm layer (``"bn_only"``: the whole backbone runs forwards and
backwards every epoch). :func:`choose_freeze` fine-tunes one model per candidate on **the same
split**, keeps the one with the lowest validation loss at its best epoch, and reports every
candidate's validation and (for information only: it never decides) test scores.

.. code-block:: python

   choice = choose_freeze("timm:tf_efficientnet_lite0", "images/", ["head_only", FreezeStages(-1)])
   print(choice.table())
   choice.best.path          # the winner's model file
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models import FreezePolicy, freeze_label
from ._finetune import FinetuneResult, file_stem, finetune
from ._splits import resolve_splits

__all__ = ["FreezeChoice", "choose_freeze", "freeze_label"]


@dataclass(frozen=True)
class FreezeChoice:
    """What :func:`choose_freeze` returns.

    Attributes:
        label: the winning candidate's :func:`freeze_label`.
        results: every candidate's :class:`FinetuneResult`, by label, in the order given.
        val_loss: each candidate's validation loss at its best epoch (what decided).
    """

    label: str
    results: dict[str, FinetuneResult]
    val_loss: dict[str, float]

    @property
    def best(self) -> FinetuneResult:
        """The winner's result (its model, file, history)."""
        return self.results[self.label]

    def rows(self) -> list[dict[str, Any]]:
        """One plain-data row per candidate: validation loss and accuracy at the best epoch, test
        accuracy and loss when there is a test split, best epoch, seconds, and whether it won."""
        rows = []
        for label, result in self.results.items():
            best = _best_record(result)
            rows.append(
                {
                    "freeze": label,
                    "chosen": label == self.label,
                    "val_loss": self.val_loss[label],
                    "val_accuracy": None if best is None else best.val_accuracy,
                    "test_accuracy": None if result.test is None else result.test.accuracy,
                    "test_loss": None if result.test is None else result.test.loss,
                    "best_epoch": result.best_epoch,
                    "seconds": round(result.seconds, 1),
                    "path": str(result.path),
                }
            )
        return rows

    def table(self) -> str:
        """The candidates as a Markdown table (the chosen one starred)."""
        lines = [
            "| freeze | val loss | val acc | test acc | test loss | best epoch | seconds |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in self.rows():
            star = " *" if row["chosen"] else ""
            lines.append(
                f"| {row['freeze']}{star} | {row['val_loss']:.4f} | {_num(row['val_accuracy'])} | "
                f"{_num(row['test_accuracy'])} | {_num(row['test_loss'])} | {row['best_epoch']} | "
                f"{row['seconds']:.0f} |"
            )
        return "\n".join(lines) + "\n\n* chosen by validation loss; test scores are shown, never used"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _best_record(result: FinetuneResult) -> Any:
    """The record of the epoch whose weights were saved (None when no epoch improved)."""
    return next((r for r in result.history.records if r.epoch == result.best_epoch), None)


Candidate = str | FreezePolicy | tuple[str | FreezePolicy, Mapping[str, Any]]


def _policy(candidate: Candidate) -> tuple[str | FreezePolicy, dict[str, Any]]:
    if isinstance(candidate, tuple):
        policy, overrides = candidate
        return policy, dict(overrides)
    return candidate, {}


def choose_freeze(
    backbone: str,
    data: Any,
    candidates: Sequence[Candidate] = ("head_only", "bn_only"),
    *,
    out_dir: str | os.PathLike[str] = "runs",
    seed: int = 0,
    split: Sequence[float] = (),
    **finetune_kwargs: Any,
) -> FreezeChoice:
    """Fine-tune ``backbone`` once per freeze policy in ``candidates`` on one split of ``data`` and
    keep the policy with the lowest validation loss.

    Args:
        backbone, data: as :func:`~ensemblenet.finetune` takes them (the split is cut once, with
            ``seed`` and ``split``, and shared by every candidate).
        candidates: freeze policies (names or objects), e.g. ``["head_only", FreezeStages(-1),
            FreezeStages(-2), "bn_only"]``; a ``(policy, overrides)`` pair gives that candidate its
            own :func:`~ensemblenet.finetune` settings, e.g. ``("bn_only", {"epochs": 2})`` (a
            backbone trained end to end costs minutes per epoch where a cached head costs seconds).
        out_dir: where each candidate's model goes (``<backbone>.<label>.pt``).
        **finetune_kwargs: the recipe and any override, for every candidate (``recipe="strong"``,
            ``epochs=5``...). A recipe's feature cache is used where the policy keeps a prefix frozen.

    Raises:
        ConfigError: fewer than one candidate, or two with the same label.
    """
    policies = [_policy(c) for c in candidates]
    labels = [freeze_label(policy) for policy, _ in policies]
    if not labels:
        raise ConfigError(
            "choose_freeze needs at least one candidate freeze policy, e.g. ['head_only', 'bn_only']"
        )
    if len(set(labels)) != len(labels):
        raise ConfigError(f"choose_freeze candidates must differ, got {labels}")
    if "freeze" in finetune_kwargs or "out" in finetune_kwargs:
        raise ConfigError("choose_freeze sets each candidate's freeze and out; pass candidates= and out_dir=")
    splits = resolve_splits(data, split=split, seed=seed)
    results: dict[str, FinetuneResult] = {}
    losses: dict[str, float] = {}
    for label, (policy, overrides) in zip(labels, policies, strict=True):
        name = label.replace("(", "").replace(")", "").replace(", ", "-").replace("backbone_lr_scale=", "lr")
        out = Path(out_dir) / f"{file_stem(backbone)}.{name}.pt"
        settings = {**finetune_kwargs, **overrides}
        result = finetune(backbone, splits, freeze=policy, out=out, seed=seed, name=label, **settings)
        best = _best_record(result)
        results[label], losses[label] = result, math.inf if best is None else best.val_loss
    winner = min(labels, key=lambda label: losses[label])  # ties: the first given (list the cheapest first)
    return FreezeChoice(label=winner, results=results, val_loss=losses)
