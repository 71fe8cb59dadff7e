"""The ``ensemblenet`` argument parser: the shared option groups and one sub-parser per command."""

from __future__ import annotations

import argparse
from typing import NoReturn

from .._version import __version__
from ._console import EXIT_USAGE, _floats, _positive_int, _weights_arg
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
    """Options shared by 'train' and 'train-ensemble': data, split, starting weights and the recipe."""
    parser.add_argument("data", help="training image folder (split into train/val unless --val is given)")
    parser.add_argument("--val", help="a separate validation folder with the same class sub-folders")
    parser.add_argument(
        "--split",
        type=_floats,
        default=[0.8, 0.2],
        metavar="F1,F2",
        help="train,val fractions (default 0.8,0.2)",
    )
    parser.add_argument(
        "--weights",
        type=_weights_arg,
        default="DEFAULT",
        help="starting weights: DEFAULT, a weights name, a local file, or none (random init)",
    )
    parser.add_argument(
        "--head", default="mlp", help="linear or mlp (default: mlp, Linear(n,512)->Linear(512,C))"
    )
    parser.add_argument(
        "--freeze", default="bn_only", help="bn_only (default), head_only, none, freeze_unfreeze"
    )
    parser.add_argument("--epochs", type=_positive_int, default=2, help="default: 2")
    parser.add_argument("--lr", type=float, default=1e-3, help="default: 1e-3")


def _run_options(parser: argparse.ArgumentParser, batch_size: int = 32) -> None:
    parser.add_argument("--batch-size", type=_positive_int, default=batch_size, help=f"default: {batch_size}")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")


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
            "class, or Kaggle's flat cat.1.jpg layout) and save the best model by validation loss.\n"
            "A resumable state is written before the first epoch and after every epoch; a run that\n"
            "was killed or interrupted continues with --resume STATE and reaches the same weights."
        ),
        epilog=(
            "example:\n  ensemblenet train data/dogs-vs-cats --backbone torchvision:mobilenet_v2 "
            "--epochs 2 --out runs/mnv2.pt"
        ),
    )
    _training_options(train)
    train.add_argument(
        "--backbone", required=True, help="e.g. torchvision:resnet18, timm:tf_efficientnet_lite0"
    )
    train.add_argument("--optimizer", default="adam", help="adam (default), adamw, sgd")
    train.add_argument("--schedule", default="constant", help="constant (default), cosine, linear")
    train.add_argument("--augment", action="store_true", help="random horizontal flips")
    train.add_argument("--seed", type=int, default=0, help="seed for the head, split, shuffling (default 0)")
    train.add_argument("--size", type=_positive_int, help="square input size instead of the backbone's own")
    train.add_argument("--limit", type=_positive_int, help="train on a stratified subsample of N images")
    train.add_argument("--patience", type=int, help="stop after N epochs without a better validation loss")
    train.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    train.add_argument("--out", "-o", help="where the best model goes (default runs/<backbone>.pt)")
    train.add_argument("--state", help="resumable state file (default <out>.state.pt)")
    train.add_argument("--resume", metavar="STATE", help="continue an interrupted run from its state file")
    _run_options(train)
    add_overwrite_option(train)
    train.set_defaults(func=_cmd_train)

    tens = sub.add_parser(
        "train-ensemble",
        parents=[common],
        formatter_class=fmt,
        help="fine-tune several ensemble members, several at a time (one process per member)",
        description=(
            "Fine-tune one model per --backbone on the same image folder and split, --parallel N at a\n"
            "time, each in its own process (CPU threads shared out, or one member per --devices entry).\n"
            "Member i uses seed SEED+i; the checkpoints are identical to training the members one after\n"
            "another with the same seeds and --threads. Combine them with 'ensemblenet ensemble'."
        ),
        epilog=(
            "example:\n  ensemblenet train-ensemble data/dogs-vs-cats --backbone torchvision:resnet18 "
            "--backbone torchvision:resnet34 --parallel 2 --out-dir runs"
        ),
    )
    _training_options(tens)
    tens.add_argument("--backbone", action="append", required=True, help="a member's backbone (repeat)")
    tens.add_argument("--seed", type=int, default=0, help="member i uses SEED+i (default 0)")
    tens.add_argument("--parallel", type=_positive_int, default=1, help="members trained at once (default 1)")
    tens.add_argument("--threads", type=_positive_int, help="torch threads per member (default: cores/N)")
    tens.add_argument(
        "--devices",
        type=lambda t: [d for d in t.split(",") if d],
        help="e.g. cuda:0,cuda:1: member i on device i",
    )
    tens.add_argument("--out-dir", default="runs", help="where <backbone>.pt files go (default runs)")
    _run_options(tens)
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
    evaluate.add_argument("data", help="labelled image folder (class sub-folders or Kaggle layout)")
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
        description="Build an ensemble from model files, optionally fit its weights on --val, and save it.",
        epilog="example:\n  ensemblenet ensemble runs/r18.pt runs/r34.pt --val data/val --out runs/ens.pt",
    )
    _models_options(ensemble, positional=True)
    ensemble.add_argument("--val", help="labelled validation folder to fit member weights on")
    ensemble.add_argument(
        "--calibrate", action="store_true", help="also fit temperatures (members and ensemble) on --val"
    )
    ensemble.add_argument(
        "--choose",
        action="store_true",
        help="choose mean, weighted or calibrated on --val by 5-fold cross-fitted log-loss",
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
            "Report accuracy (with bootstrap intervals), log-loss, calibration (ECE, Brier), member\n"
            "diversity and whether the ensemble beats its best member (paired bootstrap, McNemar)."
        ),
        epilog="example:\n  ensemblenet report -m runs/ens.pt data/test -o report.json",
    )
    _models_options(report)
    report.add_argument("data", help="labelled image folder")
    report.add_argument("--out", "-o", help="also write the report here (.json: JSON, else the text table)")
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
    return parser
