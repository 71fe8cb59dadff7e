"""Validation-split numbers of finished ensemble runs, side by side: what the recipes page's table
is made of (the default recipe is chosen on these, never on a test split).

For each run folder (written by ``examples/ants_vs_bees.py``, ``examples/cats_vs_dogs.py`` or
``ensemblenet train-ensemble``) it reads the members' ``metrics.csv`` (validation loss and
accuracy at the epoch that was kept), re-scores the members and their plain mean on the saved
validation split (``split.json``; the mean fits nothing, so scoring it on validation is fair), and
adds the cross-fitted (out-of-fold) log-loss of each fitted combination from ``report.json`` when
there is one. ::

    python benchmarks/recipe_validation.py runs/ants_vs_bees-fast runs/ants_vs_bees-reference

Prints one Markdown table and one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ensemblenet import Ensemble
from ensemblenet.data import load_split
from ensemblenet.training import read_metrics_csv


def _members(run: Path) -> list[Path]:
    split_files = {p.name for p in run.glob("*.split.json")}
    return sorted(
        p for p in run.glob("*.pt") if p.stem + ".split.json" in split_files and not p.stem.endswith(".state")
    )


def measure(run: Path) -> dict[str, Any]:
    members = _members(run)
    if not members:
        sys.exit(f"{run}: no member models with their split files")
    val = load_split(run, verify=("val",)).part("val")
    ensemble = Ensemble.from_checkpoints(members, strategy="mean")
    evaluation = ensemble.evaluate(val, progress=False)
    kept = []
    for path in members:
        history = read_metrics_csv(path.with_name(path.stem + ".metrics.csv"))
        best = min(history.records, key=lambda r: r.val_loss if r.val_loss is not None else math.inf)
        kept.append({"member": path.stem, "epoch": best.epoch, "val_loss": best.val_loss})
    report_file = run / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    choice = report.get("choice") or {}
    return {
        "run": str(run),
        "recipe": (report.get("recipe") or {}).get("name"),
        "val_images": evaluation.n,
        "members": {
            m.name: {"accuracy": m.accuracy, "log_loss": m.log_loss, **k}
            for m, k in zip(evaluation.members, kept, strict=True)
        },
        "mean": {"accuracy": evaluation.accuracy, "log_loss": evaluation.log_loss},
        "out_of_fold_log_loss": choice.get("out_of_fold_scores"),
        "chosen": choice.get("chosen"),
        "seconds": report.get("seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    args = parser.parse_args(argv)
    rows = [measure(run) for run in args.runs]
    print("| run | recipe | val images | members: val accuracy (log-loss) | mean: val accuracy (log-loss) "
          "| out-of-fold log-loss (chosen) | wall s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        members = "; ".join(
            f"{name} {m['accuracy']:.4f} ({m['log_loss']:.4f})" for name, m in row["members"].items()
        )
        oof = row["out_of_fold_log_loss"] or {}
        chosen = ", ".join(f"{k} {v:.4f}" for k, v in oof.items()) + (f" ({row['chosen']})" if oof else "-")
        seconds = f"{row['seconds']:.0f}" if row["seconds"] else "-"
        print(
            f"| {row['run']} | {row['recipe'] or '-'} | {row['val_images']} | {members} | "
            f"{row['mean']['accuracy']:.4f} ({row['mean']['log_loss']:.4f}) | {chosen} | {seconds} |"
        )
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
