"""The ``ensemblenet`` command line: train, train-ensemble, evaluate, predict, ensemble, report, export.

Every command exits 0 on success and, on failure, prints ONE line ``ensemblenet <command>: error: ...``
on stderr and exits non-zero (1 for an error, 2 for a bad command line, 130 for Ctrl-C). ``--json``
prints one machine-readable JSON document on stdout; ``-q`` keeps stderr to errors only (results
still print); ``-v`` adds progress logging and tracebacks on errors (``-vv``: debug logging).

>>> from ensemblenet.cli import build_parser
>>> build_parser().parse_args(["train", "data/", "--backbone", "torchvision:resnet18"]).epochs
2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from ._version import __version__
from .errors import ConfigError, EnsembleNetError

__all__ = ["build_parser", "main"]

log = logging.getLogger("ensemblenet.cli")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CommandInterrupted(Exception):
    """Ctrl-C during a command; the message says what was kept and how to go on."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- output helpers


class Console:
    """Where a command's human text, JSON document and progress bars go."""

    def __init__(self, args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> None:
        self.json = bool(getattr(args, "json", False))
        self.quiet = bool(getattr(args, "quiet", False))
        self.stdout, self.stderr = stdout, stderr

    def say(self, text: str) -> None:
        """Human-readable result (stdout), unless --json (--quiet keeps results, drops chatter)."""
        if not self.json:
            print(text, file=self.stdout)

    def note(self, text: str) -> None:
        """A side remark (stderr), unless --quiet."""
        if not self.quiet:
            print(text, file=self.stderr)

    def result(self, document: dict[str, Any]) -> None:
        """The machine-readable result (stdout), with --json only."""
        if self.json:
            print(json.dumps(_jsonable(document), indent=2, allow_nan=False), file=self.stdout)


def _jsonable(value: Any) -> Any:
    """NaN/inf become null and paths/tuples plain JSON types, so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text += f": {exc.filename}"
    return text


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _weights_arg(text: str) -> str | None:
    return None if text.lower() in ("none", "random") else text


# ----------------------------------------------------------------------------- loading models


def _file_format(path: str) -> str | None:
    """The ``format`` tag of an ensemblenet file, read without loading its tensors (None if unknown)."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError):
        return None  # the loader below reports what is wrong with the file
    return payload.get("format") if isinstance(payload, dict) else None


def _load_ensemble(
    paths: Sequence[str], strategy: str | None, weights: Sequence[float] | None, tta: str | None = None
) -> Any:
    """Model files (one is fine) or one ensemble file -> an Ensemble.

    An ensemble file keeps its own fitted strategy unless ``strategy``/``weights`` are given.
    """
    from .ensemble import Ensemble

    if not paths:
        raise ConfigError("no model given; pass -m/--model PATH (repeat it for an ensemble)")
    kinds = [_file_format(p) for p in paths]
    if "ensemblenet.ensemble" in kinds:
        if len(paths) > 1:
            raise ConfigError(
                f"{paths[kinds.index('ensemblenet.ensemble')]!r} is an ensemble file; pass it alone "
                "(-m ENSEMBLE) or pass the member model files instead"
            )
        ensemble = Ensemble.load(paths[0])
        if strategy is not None or weights is not None or tta is not None:
            ensemble = Ensemble(ensemble.members, strategy=strategy or "mean", weights=weights, tta=tta)
        return ensemble
    ensemble = Ensemble.from_checkpoints(list(paths), strategy=strategy or "mean", weights=weights)
    if tta is not None:
        ensemble = Ensemble(ensemble.members, strategy=ensemble.strategy, tta=tta)
    return ensemble


def _device(args: argparse.Namespace) -> str | None:
    return None if args.device == "auto" else str(args.device)


# ----------------------------------------------------------------------------- train


def _state_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".state" + (out.suffix or ".pt"))


def _default_out(backbone: str) -> Path:
    return Path("runs") / (re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone).strip("_") + ".pt")


def _train_data(args: argparse.Namespace) -> tuple[Any, Any, list[tuple[Path, str]]]:
    """Training and validation Samples, and the files the scans rejected (with reasons)."""
    from .data import scan_folder, split_samples
    from .errors import ClassMismatchError

    train = scan_folder(args.data)
    skipped = list(train.skipped)
    if args.val is not None:
        val = scan_folder(args.val)
        skipped += list(val.skipped)
        if val.classes != train.classes:
            only_train = sorted(set(train.classes) - set(val.classes))
            only_val = sorted(set(val.classes) - set(train.classes))
            raise ClassMismatchError(
                f"the validation folder {args.val} has classes {list(val.classes)} but the training folder "
                f"{args.data} has {list(train.classes)} (only in train: {only_train}, only in val: "
                f"{only_val}); give both folders the same class sub-folders"
            )
    else:
        train, val = split_samples(train, args.split, seed=args.seed)
    if args.limit is not None:
        train = train.limit(min(args.limit, len(train)), seed=args.seed)
    return train, val, skipped


def _cmd_train(args: argparse.Namespace, con: Console) -> int:
    import torch

    from .callbacks import Callback, EarlyStopping, ModelCheckpoint
    from .checkpoint import save_model
    from .distributed import is_main_process
    from .model import TransferModel, create_model
    from .trainer import TrainConfig, Trainer

    out = Path(args.out) if args.out else _default_out(args.backbone)
    state = Path(args.state) if args.state else _state_path_for(out)
    config = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        batch_size=args.batch_size,
        augment=args.augment,
        num_workers=args.num_workers,
        device=args.device,
        seed=args.seed,
        progress=not con.quiet,
    )
    train, val, scan_skipped = _train_data(args)
    torch.manual_seed(args.seed)  # the new head's initial weights, as finetune() does
    model = create_model(args.backbone, train.classes, head=args.head, weights=args.weights)
    if args.size is not None:
        spec = dataclasses.replace(model.spec, size=(args.size, args.size))
        model = TransferModel(model.backbone, model.head, dataclasses.replace(model.config, spec=spec))
    saver = ModelCheckpoint(out, monitor="val_loss")
    callbacks: list[Callback] = [saver]
    if args.patience is not None:
        callbacks.append(EarlyStopping(monitor="val_loss", patience=args.patience))
    trainer = Trainer(config, freeze=args.freeze, callbacks=callbacks, state_path=state)
    con.note(
        f"training {args.backbone} on {len(train)} images ({len(val)} validation), classes "
        f"{list(train.classes)}; state file {state}"
    )
    try:
        history = trainer.fit(model, train, val, resume=args.resume)
    except KeyboardInterrupt:
        done = len(trainer.history)
        raise CommandInterrupted(
            f"interrupted during epoch {done + 1}; the state after epoch {done} is in {state}: "
            f"run the same command with --resume {state} to continue"
        ) from None
    # e.g. every validation loss was NaN: still save what we have (one writer under torchrun)
    if saver.best_epoch is None and is_main_process():
        save_model(model, out, metrics=history.records[-1].to_dict() if history.records else {})
    skipped_files = [{"path": str(p), "reason": r} for p, r in scan_skipped]
    during = sum(r.skipped for r in history.records)
    for record in history.records:
        con.note(str(record))
    if skipped_files or during:
        shown = "; ".join(f"{s['path']} ({s['reason']})" for s in skipped_files[:10])
        con.note(f"skipped {len(skipped_files)} unreadable file(s) at scan time: {shown or '-'}")
        con.note(f"skipped {during} image(s) that failed to decode during training (see the warnings)")
    con.say(f"saved the best model (epoch {saver.best_epoch}) to {out}; resumable state in {state}")
    con.result(
        {
            "command": "train",
            "model": out,
            "state": state,
            "best_epoch": saver.best_epoch,
            "classes": list(train.classes),
            "history": [r.to_dict() for r in history.records],
            "skipped_files": skipped_files,
            "skipped_during_training": during,
        }
    )
    return EXIT_OK


# ----------------------------------------------------------------------------- train-ensemble


def _cmd_train_ensemble(args: argparse.Namespace, con: Console) -> int:
    from .parallel import train_ensemble

    members = [{"backbone": b, "seed": args.seed + i} for i, b in enumerate(args.backbone)]
    data: Any = (args.data, args.val) if args.val is not None else args.data
    con.note(
        f"training {len(members)} member(s), {min(args.parallel, len(members))} at a time, "
        f"into {args.out_dir}"
    )
    results = train_ensemble(
        members,
        data,
        parallel=args.parallel,
        threads=args.threads,
        devices=args.devices,
        out_dir=args.out_dir,
        split=() if args.val is not None else tuple(args.split),
        weights=args.weights,
        head=args.head,
        freeze=args.freeze,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        progress=not con.quiet,
        **({"config": _train_config_for_device(args.device)} if args.device != "auto" else {}),
    )
    for r in results:
        last = r.history.records[-1] if r.history.records else None
        con.say(f"{r.name}: {r.path} ({r.device}, {r.seconds:.1f}s){f'; last epoch: {last}' if last else ''}")
    con.note("combine them with: ensemblenet ensemble " + " ".join(str(r.path) for r in results))
    con.result(
        {
            "command": "train-ensemble",
            "members": [
                {
                    "name": r.name,
                    "model": r.path,
                    "device": r.device,
                    "seconds": r.seconds,
                    "history": [rec.to_dict() for rec in r.history.records],
                }
                for r in results
            ],
        }
    )
    return EXIT_OK


def _train_config_for_device(device: str) -> Any:
    from .trainer import TrainConfig

    return TrainConfig(device=device)


# ----------------------------------------------------------------------------- evaluate


def _cmd_evaluate(args: argparse.Namespace, con: Console) -> int:
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta)
    result = ensemble.evaluate(
        str(args.data), batch_size=args.batch_size, device=_device(args), progress=not con.quiet
    )
    con.say(str(result))
    con.result({"command": "evaluate", "models": list(args.model), **result.to_dict()})
    return EXIT_OK


# ----------------------------------------------------------------------------- predict


def _expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given; folders searched recursively for image files (sorted)."""
    from .data import list_image_files

    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = list_image_files(path)
            if not found:
                log.warning("no image files under %s", path)
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(2, "no such file or folder", str(path))
    if not files:
        raise ConfigError(f"no image files to predict in {list(inputs)}")
    return files


class _RowWriter:
    """Writes prediction rows as they come: CSV, a JSON array (valid once closed) or JSON lines."""

    def __init__(self, stream: IO[str], fmt: str, classes: Sequence[str]) -> None:
        self.stream, self.fmt, self.classes, self.rows = stream, fmt, list(classes), 0
        if fmt == "csv":
            self.csv = csv.writer(stream, lineterminator="\n")
            self.csv.writerow(["path", "prediction", *self.classes, "error"])
        elif fmt == "json":
            stream.write("[")

    def write(self, path: Path, probs: Sequence[float]) -> None:
        bad = any(math.isnan(p) for p in probs)
        pred = None if bad else self.classes[max(range(len(probs)), key=probs.__getitem__)]
        error = "unreadable image" if bad else None
        if self.fmt == "csv":
            cells = ["" if bad else f"{p:.6g}" for p in probs]
            self.csv.writerow([str(path), pred or "", *cells, error or ""])
        else:
            row = {
                "path": str(path),
                "prediction": pred,
                "probabilities": None if bad else dict(zip(self.classes, probs, strict=True)),
                "error": error,
            }
            text = json.dumps(row, allow_nan=False)
            if self.fmt == "json":
                self.stream.write(("\n  " if self.rows == 0 else ",\n  ") + text)
            else:
                self.stream.write(text + "\n")
        self.rows += 1

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("\n]\n" if self.rows else "]\n")
        self.stream.flush()


def _chunks(items: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _cmd_predict(args: argparse.Namespace, con: Console) -> int:
    from tqdm.auto import tqdm

    fmt = args.format or ("json" if args.json else "csv")
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta)
    files = _expand_inputs(args.inputs)
    stream: IO[str]
    stream = open(args.output, "w", encoding="utf-8", newline="") if args.output else con.stdout  # noqa: SIM115
    unreadable = 0
    try:
        writer = _RowWriter(stream, fmt, ensemble.classes)
        with tqdm(total=len(files), desc="predict", unit="img", disable=con.quiet, file=con.stderr) as bar:
            for chunk in _chunks(files, args.batch_size):
                probs = ensemble.predict_proba(
                    chunk, batch_size=args.batch_size, device=_device(args), progress=False
                )
                for path, row in zip(chunk, probs.tolist(), strict=True):
                    writer.write(path, row)
                    unreadable += any(math.isnan(p) for p in row)
                stream.flush()  # streaming: each batch's rows are visible as soon as they are computed
                bar.update(len(chunk))
        writer.close()
    finally:
        if stream is not con.stdout:
            stream.close()
    where = args.output or "stdout"
    con.note(f"predicted {len(files)} image(s), {unreadable} unreadable, written to {where} as {fmt}")
    return EXIT_OK


# ----------------------------------------------------------------------------- ensemble, report, export


def _cmd_ensemble(args: argparse.Namespace, con: Console) -> int:
    from .strategies import strategy_name

    ensemble = _load_ensemble(args.models, args.strategy, args.weights, args.tta)
    progress = not con.quiet
    fitted: list[float] | None = None
    choice = None
    if args.choose:
        if args.val is None or args.calibrate or args.strategy or args.weights:
            raise ConfigError(
                "--choose picks the strategy itself (mean, weighted or calibrated) on validation data: "
                "give --val FOLDER and leave out --strategy, --weights and --calibrate"
            )
        choice = ensemble.choose_strategy(str(args.val), progress=progress)
    elif args.val is not None and (
        callable(getattr(ensemble.strategy, "fit", None)) or args.strategy in (None, "mean")
    ):
        fitted = [float(w) for w in ensemble.fit_weights(str(args.val), progress=progress)]
    if args.calibrate:
        if args.val is None:
            raise ConfigError("--calibrate fits temperatures on validation data: add --val FOLDER")
        ensemble.calibrate(str(args.val), progress=progress)
    if getattr(ensemble.strategy, "needs_fit", False):
        raise ConfigError(
            f"strategy {args.strategy!r} must be fitted on validation data: add --val FOLDER "
            "(or give --weights W1,W2,...)"
        )
    evaluation = ensemble.evaluate(str(args.val), progress=False) if args.val is not None else None
    if args.out is not None:
        ensemble.save(args.out)
    con.say(repr(ensemble) + (f"\nfitted weights: {fitted}" if fitted else ""))
    if choice is not None:
        con.say(str(choice))
    if evaluation is not None:
        con.say(str(evaluation))
    if args.out is not None:
        con.note(f"saved the ensemble to {args.out}")
    con.result(
        {
            "command": "ensemble",
            "models": list(args.models),
            "out": args.out,
            "strategy": strategy_name(ensemble.strategy),
            "weights": fitted or None,
            "choice": None if choice is None else {"chosen": choice.name, "log_loss_oof": choice.scores},
            "validation": evaluation.to_dict() if evaluation is not None else None,
        }
    )
    return EXIT_OK


def _cmd_report(args: argparse.Namespace, con: Console) -> int:
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta)
    report = ensemble.report(
        str(args.data),
        n_resamples=args.n_resamples,
        seed=args.seed,
        batch_size=args.batch_size,
        device=_device(args),
        progress=not con.quiet,
    )
    if args.out is not None:
        target = Path(args.out)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = report.to_json(indent=2) if target.suffix.lower() == ".json" else str(report) + "\n"
        target.write_text(text, encoding="utf-8")
        con.note(f"wrote the report to {target}")
    con.say(str(report))
    con.result({"command": "report", "models": list(args.model), **report.to_dict()})
    return EXIT_OK


def _cmd_export(args: argparse.Namespace, con: Console) -> int:
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta)
    path = ensemble.export_onnx(args.out, input_size=args.input_size, input_dtype=args.input_dtype)
    con.say(
        f"exported {len(ensemble.members)} member(s) and the {args.strategy or 'saved'} strategy to {path}"
    )
    con.result(
        {
            "command": "export",
            "models": list(args.model),
            "out": path,
            "classes": list(ensemble.classes),
            "input_dtype": args.input_dtype,
        }
    )
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


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
    export.set_defaults(func=_cmd_export)
    return parser


# ----------------------------------------------------------------------------- entry point


def _configure_logging(verbose: int, quiet: bool, stream: IO[str]) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("ensemblenet: %(levelname)s: %(message)s"))
    level = (
        logging.ERROR
        if quiet
        else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    )
    root = logging.getLogger("ensemblenet")
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def main(
    argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None
) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Errors the library raises on purpose (:class:`~ensemblenet.EnsembleNetError`) and file-system
    errors become one line on stderr and exit code 1; Ctrl-C exits with 130.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    con = Console(args, stdout, stderr)
    handler = _configure_logging(args.verbose, args.quiet, stderr)
    prefix = f"ensemblenet {args.command}"
    func: Callable[[argparse.Namespace, Console], int] = args.func
    try:
        return func(args, con)
    except CommandInterrupted as exc:
        print(f"{prefix}: {exc}", file=stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away ('| head'): not an error of ours
        if stdout is sys.stdout:
            # Point stdout at /dev/null so the interpreter's final flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (EnsembleNetError, OSError) as exc:
        if args.verbose:
            traceback.print_exc(file=stderr)
        print(f"{prefix}: error: {_one_line(exc)}", file=stderr)
        return EXIT_ERROR
    finally:
        logging.getLogger("ensemblenet").removeHandler(handler)
        stderr.flush()
        with contextlib.suppress(BrokenPipeError):  # e.g. '| head' closed the pipe early
            stdout.flush()
