"""Distil one saved ensemble into several students, with one teacher pass for all of them.

The teacher's probabilities on the training images (each member once) and on the scored split
are kept in memory between the students (:meth:`ensemblenet.Ensemble.reuse_predictions`), so the
second student costs only its own feature pass and training. Every student gets the recipe's
head and training settings (``--recipe strong``: a linear head after dropout 0.2, AdamW with
weight decay 0.01) and the run's own split (``RUN/split.json``: the members' training images only).

    python benchmarks/distill_students.py --run runs/cats_vs_dogs-strong-full \\
        --student "timm:tf_efficientnet_lite2" \\
        --student "timm:tf_efficientnet_lite2 freeze='freeze_stages(-1, backbone_lr_scale=0.1)' epochs=4"

``--json docs/benchmark_reports/students/RUN_NAME.json`` keeps the document where the benchmarks
page looks for a run's later students (``{NAME_students}``, and the student the targets check).

A student is a backbone name followed by ``KEY=VALUE`` settings of :func:`ensemblenet.distill`
(Python literals: ``flips=False``, ``epochs=4``, ``temperature=4.0``, ``freeze='...'``). Prints one
table per student (ensemble, members and student on the run's test split, agreement, McNemar p,
prediction time of 500 images each) and one JSON document with the hardware and every student's
seconds.
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, hardware

from ensemblenet import distill, get_recipe, load_ensemble
from ensemblenet.data import load_split


def parse_student(text: str) -> tuple[str, dict[str, Any]]:
    """``"NAME KEY=VALUE ..."`` -> (NAME, {KEY: literal VALUE})."""
    name, *pairs = shlex.split(text)
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--student {text!r}: {pair!r} is not KEY=VALUE")
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value  # a bare word, e.g. freeze=head_only
    return name, settings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, required=True, help="a run folder with ensemble.pt and split.json"
    )
    parser.add_argument("--student", action="append", required=True, help="NAME [KEY=VALUE ...] (repeat)")
    parser.add_argument("--recipe", default="strong", help="the students' head and training settings")
    parser.add_argument("--feature-store", help="keep the students' frozen features in this folder")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "distill_students")
    parser.add_argument(
        "--json", type=Path, help="also write the JSON document here (docs/benchmarks_page.py reads it)"
    )
    args = parser.parse_args()

    recipe = get_recipe(args.recipe)
    teacher = load_ensemble(args.run / "ensemble.pt").reuse_predictions()  # one teacher pass for all
    splits = load_split(args.run / "split.json")
    command = "python benchmarks/distill_students.py " + shlex.join(sys.argv[1:])
    results: dict[str, Any] = {
        "command": command,
        "hardware": hardware(),
        "run": str(args.run),
        "recipe": recipe.name,
        "students": [],
    }
    for text in args.student:
        name, settings = parse_student(text)
        options = {"recipe": recipe, "progress": False, **settings}
        if args.feature_store:
            options.setdefault("feature_store", args.feature_store)
        label = "-".join(shlex.split(text)).replace(":", "_").replace("'", "").replace(" ", "")
        started = time.perf_counter()
        result = distill(teacher, splits, student=name, out=args.out / f"{label[:120]}.pt", **options)
        seconds = time.perf_counter() - started
        print(f"\n{text} ({seconds:.0f} s)\n\n{result.table()}\n", flush=True)
        shown = {k: str(v) for k, v in options.items()}
        results["students"].append(
            {"student": text, "settings": shown, **result.to_dict(), "total_seconds": round(seconds, 1)}
        )
    document = json.dumps(results, indent=1, default=str)
    print(document)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(document + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
