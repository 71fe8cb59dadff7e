"""The ``distill`` command: one student model trained on an ensemble's probabilities."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..api import default_student_path, distill
from ..data import load_split
from ..errors import ConfigError
from ._console import EXIT_OK, Console
from ._loading import _load_ensemble


def _cmd_distill(args: argparse.Namespace, con: Console) -> int:
    teacher = _load_ensemble(args.model, args.strategy, args.weights, args.tta, trust_code=args.trust_code)
    data: Any
    if (args.run is None) == (args.data is None):
        raise ConfigError(
            "give the training images as DATA (a folder) or --run RUN_DIR (the members' saved split), "
            "not both and not neither"
        )
    if args.run is not None:
        data = load_split(args.run)  # re-hashes the held-out files: evaluation on the very same images
    elif args.test and args.val is None:
        raise ConfigError(
            f"--test {args.test} needs --val too (with one folder, DATA is split into train and val "
            "by --split and the scores are on val); pass --val VAL_FOLDER"
        )
    else:
        data = args.data if args.val is None else tuple(p for p in (args.data, args.val, args.test) if p)
    out = Path(args.out) if args.out else default_student_path(args.student)
    con.note(f"distilling {len(teacher.members)} member(s) into {args.student}")
    result = distill(
        teacher,
        data,
        student=args.student,
        weights=args.student_weights,
        recipe=args.recipe,
        head=args.head,
        freeze=args.freeze,
        temperature=args.temperature,
        hard_weight=args.hard_weight,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        flips=not args.no_flips,
        patience=args.patience,
        split=args.split or (),
        seed=args.seed,
        out=out,
        progress=not con.quiet,
        device=args.device,
        feature_store=args.feature_store,
    )
    document = {"command": "distill", "models": list(args.model), "student": args.student, **result.to_dict()}
    if args.report:
        target = Path(args.report)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    con.say(f"saved the student {args.student} to {result.path}\n\n{result.table()}")
    con.result(document)
    return EXIT_OK
