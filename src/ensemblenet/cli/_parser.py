"""The ``ensemblenet`` argument parser: the shared option groups and one sub-parser per command."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from .._version import __version__
from ..api import COMBINE_CHOICES, DEFAULT_RECIPE, list_recipes
from ._console import EXIT_USAGE, _floats, _positive_int, _weights_arg
from ._distill import _cmd_distill
from ._ensemble_commands import _cmd_ensemble, _cmd_export, _cmd_report
from ._guards import add_overwrite_option
from ._inference import _cmd_evaluate, _cmd_predict
from ._train import _cmd_train, _cmd_train_ensemble


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _common() -> _Parser:
    common = _Parser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument(
        "--json", action="store_true", help="print one machine-readable JSON document on stdout"
    )
    noise = group.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes; errors only")
    noise.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log progress and show tracebacks on errors (-vv: debug log)",
    )
    return common


def _models_options(parser: argparse.ArgumentParser, *, positional: bool = False) -> None:
    if positional:
        parser.add_argument("models", nargs="+", metavar="MODEL", help="model files written by 'train'")
    else:
        parser.add_argument(
            "-m",
            "--model",
            action="append",
            required=True,
            metavar="PATH",
            help="a model file written by 'train' (repeat for an ensemble) or one ensemble file",
        )
    parser.add_argument(
        "--strategy",
        default=None,
        help="how members are combined: mean, vote, weighted, ... (default: mean, or an ensemble file's own)",
    )
    parser.add_argument(
        "--tta", default=None, help="test-time augmentation: flip or flip+crops (default: none)"
    )
    parser.add_argument(
        "--weights",
        type=_floats,
        default=None,
        metavar="W1,W2,...",
        help="one weight per member (weighted mean)",
    )
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="allow model files whose backbone runs code to build (hub: runs the repo's hubconf.py)",
    )


def _training_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by 'train' and 'train-ensemble', mapped one to one onto finetune()'s arguments.

    Training settings default to None: the recipe's value (see 'ensemblenet train --help').
    """
    data = parser.add_argument_group("data and split")
    data.add_argument(
        "data", help="training image folder (cut into train/val/test, or train/val with --test or --val)"
    )
    data.add_argument("--val", help="a separate validation folder with the same class sub-folders")
    data.add_argument("--test", help="a separate test folder (e.g. hymenoptera/val); reported after training")
    data.add_argument(
        "--split",
        type=_floats,
        default=None,
        metavar="F1,F2[,F3]",
        help="fractions to cut DATA into train,val[,test] (default 0.64,0.18,0.18; with --test: 0.78,0.22)",
    )
    data.add_argument(
        "--limit", type=_positive_int, help="train on a stratified subsample of N training images"
    )
    data.add_argument(
        "--seed", type=int, default=0, help="seed of the split, head, shuffling, augmentation (default 0)"
    )
    recipe = parser.add_argument_group("recipe (each option overrides the recipe's value)")
    recipe.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE,
        metavar="NAME",
        help=f"{', '.join(list_recipes())} (default {DEFAULT_RECIPE}; see docs/recipes.rst)",
    )
    recipe.add_argument(
        "--weights",
        type=_weights_arg,
        default="DEFAULT",
        help="starting weights: DEFAULT, a weights name, a local file, or none (random init)",
    )
    recipe.add_argument("--head", help="linear or mlp (Linear(n,512)->Linear(512,C))")
    recipe.add_argument(
        "--freeze",
        help="head_only, bn_only, none, freeze_unfreeze, or a policy with settings, e.g. "
        "'freeze_stages(-1, backbone_lr_scale=0.1)' (train the last stage at a tenth of the head's rate)",
    )
    recipe.add_argument("--epochs", type=_positive_int)
    recipe.add_argument("--lr", type=float)
    recipe.add_argument("--optimizer", help="adam, adamw, sgd")
    recipe.add_argument("--schedule", help="constant, cosine, linear")
    recipe.add_argument("--warmup", type=float, help="fraction of the steps with a linear warm-up")
    recipe.add_argument("--weight-decay", type=float)
    recipe.add_argument("--label-smoothing", type=float)
    recipe.add_argument("--grad-clip", type=float, help="maximum gradient norm")
    recipe.add_argument(
        "--augment",
        nargs="?",
        const="flip",
        help="none, flip (also --augment alone), light (flip + random resized crop), strong (+ TrivialAug)",
    )
    cache = recipe.add_mutually_exclusive_group()
    cache.add_argument(
        "--feature-cache", dest="feature_cache", action="store_const", const=True, default=None,
        help="train the head on frozen features computed once (head_only or freeze_stages)",
    )  # fmt: skip
    cache.add_argument("--no-feature-cache", dest="feature_cache", action="store_const", const=False)
    recipe.add_argument("--feature-views", type=int, help="augmented views per image in the feature cache")
    recipe.add_argument(
        "--min-steps", type=int, help="at least this many optimizer steps (more epochs on small data)"
    )
    recipe.add_argument(
        "--refit", action="store_const", const=True, default=None,
        help="also train on train + validation for the chosen epochs (saved as NAME.refit.pt)",
    )  # fmt: skip
    run = parser.add_argument_group("run")
    run.add_argument("--size", type=_positive_int, help="square input size instead of the backbone's own")
    run.add_argument("--patience", type=int, help="stop after N epochs without a better validation loss")
    run.add_argument("--num-workers", type=int, help="DataLoader worker processes (default 0)")
    run.add_argument("--precision", help="auto (bf16 on CUDA), fp32, bf16")
    run.add_argument("--cache-dir", help="decoded-image cache folder (decode and resize each image once)")
    run.add_argument(
        "--feature-store",
        metavar="DIR",
        help="keep frozen-backbone features here between runs; a rerun or refit on them reads them",
    )
    run.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard scalars here")


def _run_options(parser: argparse.ArgumentParser, batch_size: int | None = 32) -> None:
    default = "the recipe's" if batch_size is None else batch_size
    parser.add_argument("--batch-size", type=_positive_int, default=batch_size, help=f"default: {default}")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")


def _data_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("data", nargs="?", help=f"{what} (or --split)")
    parser.add_argument(
        "--split",
        nargs=2,
        metavar=("PART", "RUN_DIR"),
        help="a run's saved split instead of DATA: test RUN_DIR or val RUN_DIR (the folder of split.json)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``ensemblenet`` command (exposed for docs and tests)."""
    common = _common()
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="ensemblenet",
        description="Ensemble transfer learning on images: fine-tune pretrained backbones, combine them.",
        epilog="Run 'ensemblenet COMMAND --help' for a command's options. Docs: docs/cli.rst",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"ensemblenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    train = sub.add_parser(
        "train",
        parents=[common],
        formatter_class=fmt,
        help="fine-tune one model (an ensemble member) on an image folder",
        description=(
            "Fine-tune a pretrained backbone with a new head on an image folder (one sub-folder per\n"
            "class, or Kaggle's flat cat.1.jpg layout) with a recipe, and save the best model by\n"
            "validation loss, with its split (<out stem>.split.json: every file and its sha256) and\n"
            "metrics.csv beside it. The epoch table is printed as each epoch ends. A resumable state\n"
            "is written before the first epoch and after every epoch; a run that was killed or\n"
            "interrupted continues with --resume STATE and reaches the same weights.\n"
            "Same options and defaults as the finetune() function."
        ),
        epilog=(
            "example:\n  ensemblenet train data/dogs-vs-cats --backbone torchvision:mobilenet_v2 "
            "--out runs/mnv2.pt\n  ensemblenet train hymenoptera/train --test hymenoptera/val "
            "--backbone timm:tf_efficientnet_lite0 --recipe reference"
        ),
    )
    _training_options(train)
    train.add_argument(
        "--backbone", required=True, help="e.g. torchvision:resnet18, timm:tf_efficientnet_lite0"
    )
    train.add_argument("--out", "-o", help="where the best model goes (default runs/<backbone>.pt)")
    train.add_argument("--state", help="resumable state file (default <out>.state.pt)")
    train.add_argument("--resume", metavar="STATE", help="continue an interrupted run from its state file")
    _run_options(train, None)
    add_overwrite_option(train)
    train.set_defaults(func=_cmd_train)

    tens = sub.add_parser(
        "train-ensemble",
        parents=[common],
        formatter_class=fmt,
        help="fine-tune several ensemble members, several at a time (one process per member)",
        description=(
            "Fine-tune one model per --backbone on the same image folder and split (saved once as\n"
            "OUT_DIR/split.json), --parallel N at a time, each in its own process (CPU threads shared\n"
            "out, or one member per --devices entry), then combine them as the recipe says (fitted on\n"
            "the validation split) and save OUT_DIR/ensemble.pt. Same options and defaults as 'train'\n"
            "and the train_ensemble() function; progress lines name the member. Member i uses seed\n"
            "SEED+i for its head and shuffling; the split uses SEED."
        ),
        epilog=(
            "example:\n  ensemblenet train-ensemble hymenoptera/train --test hymenoptera/val "
            "--backbone torchvision:mobilenet_v2 --backbone timm:tf_efficientnet_lite0 --out-dir runs/ants\n"
            "  ensemblenet report -m runs/ants/ensemble.pt --split test runs/ants --out runs/ants/report"
        ),
    )
    _training_options(tens)
    tens.add_argument("--backbone", action="append", required=True, help="a member's backbone (repeat)")
    tens.add_argument(
        "--resume", action="store_true", help="continue interrupted members from their state files in OUT_DIR"
    )
    tens.add_argument("--parallel", type=_positive_int, default=1, help="members trained at once (default 1)")
    tens.add_argument("--threads", type=_positive_int, help="torch threads per member (default: cores/N)")
    tens.add_argument(
        "--devices",
        type=lambda t: [d for d in t.split(",") if d],
        help="e.g. cuda:0,cuda:1: member i on device i",
    )
    tens.add_argument("--out-dir", default="runs", help="where <backbone>.pt files go (default runs)")
    tens.add_argument(
        "--combine",
        choices=COMBINE_CHOICES,
        help="how the saved ensemble combines its members (default: the recipe's; fast: auto, chosen on val)",
    )
    _run_options(tens, None)
    add_overwrite_option(tens)
    tens.set_defaults(func=_cmd_train_ensemble)

    evaluate = sub.add_parser(
        "evaluate",
        parents=[common],
        formatter_class=fmt,
        help="accuracy and log-loss of a model or an ensemble on a labelled folder",
        description="Evaluate one model, or several combined with --strategy, on a labelled image folder.",
        epilog="example:\n  ensemblenet evaluate -m runs/r18.pt -m runs/r34.pt data/test --json",
    )
    _models_options(evaluate)
    _data_argument(evaluate, "labelled image folder (class sub-folders or Kaggle layout)")
    _run_options(evaluate, 64)
    evaluate.set_defaults(func=_cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        parents=[common],
        formatter_class=fmt,
        help="class probabilities for image files or folders, streamed as CSV or JSON",
        description=(
            "Predict class probabilities. Rows are written as each batch completes (a progress bar\n"
            "goes to stderr). Unreadable images get an empty row with error='unreadable image'."
        ),
        epilog="example:\n  ensemblenet predict -m runs/r18.pt photos/ --format json -o predictions.json",
    )
    _models_options(predict)
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders (recursive)")
    predict.add_argument(
        "--format", choices=("csv", "json", "jsonl"), help="output format (default csv; json with --json)"
    )
    predict.add_argument("--output", "-o", help="output file (default: stdout)")
    _run_options(predict, 32)
    add_overwrite_option(predict)
    predict.set_defaults(func=_cmd_predict)

    ensemble = sub.add_parser(
        "ensemble",
        parents=[common],
        formatter_class=fmt,
        help="combine model files; fit member weights on a validation folder; save",
        description=(
            "Build an ensemble from model files, optionally fit its weights on validation images\n"
            "(--val FOLDER, or --split val RUN_DIR: the run's own validation split), and save it."
        ),
        epilog="example:\n  ensemblenet ensemble runs/r18.pt runs/r34.pt --split val runs --out runs/ens.pt",
    )
    _models_options(ensemble, positional=True)
    held = ensemble.add_mutually_exclusive_group()
    held.add_argument("--val", help="labelled validation folder to fit member weights on")
    held.add_argument(
        "--split", nargs=2, metavar=("PART", "RUN_DIR"), help="a saved split part instead: val RUN_DIR"
    )
    ensemble.add_argument(
        "--calibrate", action="store_true", help="also fit temperatures (members and ensemble) on --val"
    )
    ensemble.add_argument(
        "--choose",
        action="store_true",
        help="choose mean, weighted or calibrated on --val by 5-fold cross-fitted log-loss "
        "(with --tta auto: also whether flip TTA lowers it)",
    )
    ensemble.add_argument(
        "--out", "-o", help="where to save the ensemble (one file, for -m in other commands)"
    )
    add_overwrite_option(ensemble)
    ensemble.set_defaults(func=_cmd_ensemble)

    report = sub.add_parser(
        "report",
        parents=[common],
        formatter_class=fmt,
        help="scores, diversity and significance of an ensemble on a labelled folder",
        description=(
            "Report accuracy (with bootstrap intervals), log-loss, calibration (ECE, Brier), per-class\n"
            "precision/recall/F1, confusion matrices, member diversity and whether the ensemble beats\n"
            "its best member (paired bootstrap, McNemar). --out DIR writes report.md, report.json and\n"
            "the figures there (what EnsembleReport.save writes)."
        ),
        epilog=(
            "example:\n  ensemblenet report -m runs/ants/ensemble.pt --split test runs/ants "
            "--out runs/ants/report"
        ),
    )
    _models_options(report)
    _data_argument(report, "labelled image folder")
    report.add_argument(
        "--out", "-o", help="a folder for report.md, report.json and figures (a .json file: the JSON only)"
    )
    report.add_argument("--n-resamples", type=_positive_int, default=10_000, help="bootstrap resamples")
    report.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    _run_options(report, 64)
    add_overwrite_option(report)
    report.set_defaults(func=_cmd_report)

    export = sub.add_parser(
        "export",
        parents=[common],
        formatter_class=fmt,
        help="export a model or an ensemble to one ONNX graph",
        description=(
            "Export a model or an ensemble (members and combination) to one ONNX graph with one input,\n"
            "'images' (N, 3, H, W), and one output, 'probs' (N, C). Needs the onnx package."
        ),
        epilog="example:\n  ensemblenet export -m runs/ens.pt -o ens.onnx --input-size 224",
    )
    _models_options(export)
    export.add_argument("--out", "-o", required=True, help="the .onnx file to write")
    export.add_argument(
        "--input-size", type=_positive_int, help="square input size (default: first member's)"
    )
    export.add_argument(
        "--input-dtype",
        choices=("float32", "uint8"),
        default="float32",
        help="float32 0..1 (default) or uint8",
    )
    add_overwrite_option(export)
    export.set_defaults(func=_cmd_export)
    _distill_parser(sub, common, fmt)
    return parser


def _distill_parser(sub: Any, common: argparse.ArgumentParser, fmt: Any) -> None:
    parser = sub.add_parser(
        "distill",
        parents=[common],
        formatter_class=fmt,
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
    _models_options(parser)
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
        default=None,
        metavar="F1,F2[,F3]",
        help="fractions to cut DATA into train,val[,test], as 'train' does (default 0.64,0.18,0.18)",
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
    parser.add_argument(
        "--recipe",
        default=None,
        help="the student's head and training settings come from this recipe (default: fast; "
        "strong: a linear head after dropout, AdamW with weight decay); the options below override it",
    )
    parser.add_argument(
        "--head", default=None, help="the student's head: linear or mlp (default: the recipe's)"
    )
    parser.add_argument(
        "--feature-store", metavar="DIR", help="keep the student's frozen features here between runs"
    )
    parser.add_argument(
        "--freeze",
        default="head_only",
        help="what stays frozen (its prefix is cached): head_only (default) or e.g. "
        "'freeze_stages(-1, backbone_lr_scale=0.1)' to adapt the student's last stage too",
    )
    parser.add_argument("--temperature", type=float, default=2.0, help="softening temperature (default 2)")
    parser.add_argument(
        "--hard-weight",
        type=float,
        default=0.0,
        help="share of cross-entropy on true labels, 0..1 (default 0)",
    )
    parser.add_argument("--epochs", type=_positive_int, default=None, help="default: the recipe's")
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--weight-decay", type=float, default=None, help="default: the recipe's")
    parser.add_argument(
        "--patience", type=_positive_int, default=3, help="early-stopping patience (default 3)"
    )
    parser.add_argument("--no-flips", action="store_true", help="do not train on mirrored images too")
    _run_options(parser, None)
    parser.add_argument("--out", "-o", help="the student model file (default: runs/<student>.student.pt)")
    parser.add_argument("--report", help="also write the scores as JSON here")
    add_overwrite_option(parser)
    parser.set_defaults(func=_cmd_distill)
