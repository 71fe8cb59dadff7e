"""The ``train`` and ``train-ensemble`` commands: finetune() and train_ensemble(), option for option."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..api import default_model_path, finetune, get_recipe, train_ensemble
from ..errors import CheckpointError, ConfigError, TrainingError
from ..models import load_checkpoint
from ._console import EXIT_OK, CommandInterrupted, Console

#: Command-line options passed to finetune()/train_ensemble() under the same name.
_FINETUNE_OPTIONS = (
    "weights", "head", "freeze", "epochs", "lr", "batch_size", "optimizer", "schedule", "warmup",
    "weight_decay", "label_smoothing", "grad_clip", "augment", "feature_cache", "feature_views", "min_steps",
    "refit", "limit", "patience", "num_workers", "precision", "cache_dir", "feature_store",
    "tensorboard",
)  # fmt: skip


def _state_path_for(out: Path) -> Path:
    return out.with_name(out.stem + ".state" + (out.suffix or ".pt"))


def _data(args: argparse.Namespace) -> Any:
    """What finetune() calls ``data``: the folder alone, or a mapping with the separate folders."""
    if args.val is None and args.test is None:
        return args.data
    if args.val is not None and args.split is not None:
        raise ConfigError(
            "--split cuts DATA into train/val[/test]; with --val FOLDER all of DATA is training data"
        )
    return {"train": args.data, "val": args.val, "test": args.test}


def _common(args: argparse.Namespace, con: Console) -> dict[str, Any]:
    """finetune() keyword arguments from the shared training options (None: the recipe's value)."""
    get_recipe(args.recipe)  # an unknown recipe fails here, before any scan, with the valid names
    options = {name: getattr(args, name) for name in _FINETUNE_OPTIONS}
    options = {k: v for k, v in options.items() if v is not None or k == "weights"}
    options |= {"recipe": args.recipe, "seed": args.seed, "progress": not con.quiet, "stream": con.stderr}
    options |= {"split": tuple(args.split or ()), "input_size": args.size}
    if args.device != "auto":
        options["device"] = args.device
    return options


def _cmd_train(args: argparse.Namespace, con: Console) -> int:
    out = Path(args.out) if args.out else default_model_path(args.backbone)
    state = Path(args.state) if args.state else _state_path_for(out)
    con.note(f"training {args.backbone}; model {out}, resumable state {state}")
    try:
        result = finetune(
            args.backbone, _data(args), out=out, state_path=state, resume=args.resume, **_common(args, con)
        )
    except KeyboardInterrupt:
        done = _epochs_in(state)
        raise CommandInterrupted(
            f"interrupted during epoch {done + 1}; the state after epoch {done} is in {state}: "
            f"run the same command with --resume {state} to continue"
        ) from None
    history = result.history
    train = result.splits["train"]
    during = sum(r.skipped for r in history.records)
    skipped_files = [{"path": str(p), "reason": r} for p, r in result.skipped_files]
    if skipped_files:
        shown = "; ".join(f"{s['path']} ({s['reason']})" for s in skipped_files[:10])
        con.note(f"skipped {len(skipped_files)} unreadable file(s) at scan time: {shown}")
    if during:
        con.note(f"skipped {during} image(s) that failed to decode during training (see the warnings)")
    if not out.is_file():  # say "saved" only about a file that is there
        raise TrainingError(f"training ended but no model file was written to {out}; see the warnings above")
    which = (
        f"the best model (epoch {result.best_epoch})" if result.best_epoch else "the model of the last epoch"
    )
    test = f"; test accuracy {result.test.accuracy:.4f} on {result.test.n} images" if result.test else ""
    con.say(f"saved {which} to {out}{test}; resumable state in {state}")
    con.note(f"split: {result.files['split']}; per-epoch metrics: {result.files['metrics']}")
    con.result(
        {
            "command": "train",
            "model": out,
            "state": state,
            "split": result.files["split"],
            "metrics": result.files["metrics"],
            "recipe": result.recipe.to_dict() if result.recipe else None,
            "best_epoch": result.best_epoch,
            "classes": list(train.classes),
            "sizes": {name: len(part) for name, part in result.splits.items()},
            "history": [r.to_dict() for r in history.records],
            "test": result.test.to_dict() if result.test else None,
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
    out_dir = Path(args.out_dir)
    members = [{"backbone": backbone, "seed": args.seed + i} for i, backbone in enumerate(args.backbone)]
    con.note(
        f"training {len(members)} member(s), {min(args.parallel, len(members))} at a time, into {out_dir}"
    )
    common = _common(args, con)
    common.pop("seed")
    if args.parallel > 1:
        common.pop("stream")  # not picklable into worker processes; their progress is off anyway
    run = train_ensemble(
        members,
        _data(args),
        parallel=args.parallel,
        threads=args.threads,
        devices=args.devices,
        out_dir=out_dir,
        seed=args.seed,
        resume=args.resume,
        **common,
    )
    ensemble = run.ensemble(args.combine, progress=not con.quiet)
    path = ensemble.save(out_dir / "ensemble.pt")
    for r in run:
        test = f"; test accuracy {r.test.accuracy:.4f}" if r.test is not None else ""
        con.say(f"{r.name}: {r.path} ({r.device}, {r.seconds:.1f}s, best epoch {r.best_epoch}){test}")
    con.say(f"{run.choice}; saved the ensemble to {path}")
    if run.flip_choice is not None:
        con.say(str(run.flip_choice))
    refit = None
    if all(m.refit_path is not None for m in run):
        refit = run.refit_ensemble().save(out_dir / "ensemble-refit.pt")
        con.say(f"members refitted on train + validation, same combination: {refit}")
    if "test" in run.splits:
        report = f"ensemblenet report -m {path} --split test {out_dir} --out {out_dir / 'report'}"
        con.note(f"report on the test split: {report}")
    con.result(
        {
            "command": "train-ensemble",
            "ensemble": path,
            "split": out_dir / "split.json",
            "choice": run.choice.to_dict() if run.choice else None,
            "flip_tta": run.flip_choice.to_dict() if run.flip_choice else None,
            "refit_ensemble": refit,
            "members": [{"model": m.path, **m.to_dict()} for m in run],
        }
    )
    return EXIT_OK
