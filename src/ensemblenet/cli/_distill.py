"""The ``distill`` command: one student model trained on an ensemble's probabilities."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..api import default_student_path, distill
from ..data import load_split
from ..errors import ConfigError
from ._console import EXIT_OK, Console, _floats, _positive_int, _weights_arg
from ._loading import _load_ensemble


def add_distill_command(sub: Any, common: argparse.ArgumentParser, models_options: Any) -> None:
    """Register ``ensemblenet distill`` on the sub-parsers ``sub``."""
    parser = sub.add_parser(
        "distill",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train one student model on an ensemble's soft probabilities (one model's inference cost)",
        description=(
            "Label every training image with the ensemble's probabilities, cache the student backbone's\n"
            "frozen features (and those of mirrored images), and train the student's head on the\n"
            "ensemble's softened probabilities (KL divergence at --temperature, plus --hard-weight of\n"
            "cross-entropy on the true labels). The best epoch by validation log-loss is saved as an\n"
            "ordinary model file; the ensemble, its members and the student are then scored on the same\n"
            "validation (or --test) images, with their agreement and prediction times.\n"
            "Use the split the members were trained with (--run RUN_DIR reads their split.json; or the\n"
            "same DATA, --split and --seed), so that the student never learns from held-out images."
        ),
        epilog=(
            "examples:\n  ensemblenet distill -m runs/ens/ensemble.pt --run runs/ens --out runs/student.pt\n"
            "  ensemblenet distill -m runs/ens.ens data/train --student timm:tf_efficientnet_lite0 "
            "--out runs/student.pt"
        ),
    )
    models_options(parser)
    parser.add_argument(
        "data", nargs="?", help="training image folder (split into train/val unless --val is given)"
    )
    parser.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="use the split the members were trained on (the split.json in RUN_DIR) instead of DATA",
    )
    parser.add_argument("--val", help="a separate validation folder with the same class sub-folders")
    parser.add_argument("--test", help="a separate test folder to score on (default: score on validation)")
    parser.add_argument(
        "--split",
        type=_floats,
        default=[0.8, 0.2],
        metavar="F1,F2",
        help="train,val fractions (default 0.8,0.2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    parser.add_argument(
        "--student", default="timm:tf_efficientnet_lite0", help="the student backbone (default: %(default)s)"
    )
    parser.add_argument(
        "--student-weights",
        type=_weights_arg,
        default="DEFAULT",
        help="the student's starting weights: DEFAULT, a weights name, a local file, or none",
    )
    parser.add_argument("--head", default="mlp", help="the student's head: linear or mlp (default: mlp)")
    parser.add_argument("--temperature", type=float, default=2.0, help="softening temperature (default 2)")
    parser.add_argument(
        "--hard-weight",
        type=float,
        default=0.0,
        help="share of cross-entropy on true labels, 0..1 (default 0)",
    )
    parser.add_argument("--epochs", type=_positive_int, default=10, help="default: 10")
    parser.add_argument("--lr", type=float, default=1e-3, help="default: 1e-3")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="default: 0")
    parser.add_argument(
        "--patience", type=_positive_int, default=3, help="early-stopping patience (default 3)"
    )
    parser.add_argument("--no-flips", action="store_true", help="do not train on mirrored images too")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="default: 64")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--out", "-o", help="the student model file (default: runs/<student>.student.pt)")
    parser.add_argument("--report", help="also write the scores as JSON here")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist (default: refuse)"
    )
    parser.set_defaults(func=_cmd_distill)


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
        head=args.head,
        temperature=args.temperature,
        hard_weight=args.hard_weight,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        flips=not args.no_flips,
        patience=args.patience,
        split=args.split,
        seed=args.seed,
        out=out,
        progress=not con.quiet,
        device=args.device,
    )
    document = {"command": "distill", "models": list(args.model), "student": args.student, **result.to_dict()}
    if args.report:
        target = Path(args.report)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    con.say(f"saved the student {args.student} to {result.path}\n\n{result.table()}")
    con.result(document)
    return EXIT_OK
