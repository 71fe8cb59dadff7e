"""The ``train`` and ``train-ensemble`` commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..api import default_model_path, finetune, train_ensemble
from ..data import Samples, scan_folder, split_samples
from ..errors import CheckpointError, ClassMismatchError, TrainingError
from ..models import load_checkpoint
from ..training import TrainConfig
from ._console import EXIT_OK, CommandInterrupted, Console


def _state_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".state" + (out.suffix or ".pt"))


def _train_data(args: argparse.Namespace) -> tuple[Samples, Samples, list[tuple[Path, str]]]:
    """Training and validation Samples, and the files the scans rejected (with reasons)."""
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
    out = Path(args.out) if args.out else default_model_path(args.backbone)
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
    con.note(
        f"training {args.backbone} on {len(train)} images ({len(val)} validation), classes "
        f"{list(train.classes)}; state file {state}"
    )
    try:
        result = finetune(
            args.backbone,
            (train, val),
            weights=args.weights,
            head=args.head,
            freeze=args.freeze,
            out=out,
            config=config,
            input_size=args.size,
            patience=args.patience,
            state_path=state,
            resume=args.resume,
        )
    except KeyboardInterrupt:
        done = _epochs_in(state)
        raise CommandInterrupted(
            f"interrupted during epoch {done + 1}; the state after epoch {done} is in {state}: "
            f"run the same command with --resume {state} to continue"
        ) from None
    history = result.history
    skipped_files = [{"path": str(p), "reason": r} for p, r in scan_skipped]
    during = sum(r.skipped for r in history.records)
    for record in history.records:
        con.note(str(record))
    if skipped_files or during:
        shown = "; ".join(f"{s['path']} ({s['reason']})" for s in skipped_files[:10])
        con.note(f"skipped {len(skipped_files)} unreadable file(s) at scan time: {shown or '-'}")
        con.note(f"skipped {during} image(s) that failed to decode during training (see the warnings)")
    if not out.is_file():  # say "saved" only about a file that is there
        raise TrainingError(f"training ended but no model file was written to {out}; see the warnings above")
    which = (
        f"the best model (epoch {result.best_epoch})" if result.best_epoch else "the model of the last epoch"
    )
    con.say(f"saved {which} to {out}; resumable state in {state}")
    con.result(
        {
            "command": "train",
            "model": out,
            "state": state,
            "best_epoch": result.best_epoch,
            "classes": list(train.classes),
            "history": [r.to_dict() for r in history.records],
            "skipped_files": skipped_files,
            "skipped_during_training": during,
        }
    )
    return EXIT_OK


def _epochs_in(state: Path) -> int:
    """How many epochs the state file holds (0 when there is none yet)."""
    try:
        return int(load_checkpoint(state).get("train_state", {}).get("epoch", 0))
    except (CheckpointError, OSError):
        return 0


def _cmd_train_ensemble(args: argparse.Namespace, con: Console) -> int:
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
        **({"config": TrainConfig(device=args.device)} if args.device != "auto" else {}),
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
