"""The ``ensemble``, ``report`` and ``export`` commands: combine, judge and ship model files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..api import file_stem, run_files
from ..ensemble import Ensemble
from ..errors import ConfigError
from ..strategies import fittable_strategy, strategy_name
from ..training import History, read_metrics_csv
from ._console import EXIT_OK, Console
from ._loading import _device, _held_out_data, _load_ensemble


def _cmd_ensemble(args: argparse.Namespace, con: Console) -> int:
    val = _held_out_data(args, "val") if (args.val is not None or args.split is not None) else None
    if args.split is not None and args.split[0] != "val":
        raise ConfigError(
            f"'ensemble' fits on validation images: use --split val RUN_DIR, not {args.split[0]!r}"
        )
    flip_auto = args.tta == "auto"  # decided on validation with the combination, like a recipe's tta="auto"
    if flip_auto and not args.choose:
        raise ConfigError(
            "--tta auto decides flip test-time augmentation on validation together with the combination: "
            "add --choose (and --val FOLDER or --split val RUN_DIR), or give --tta flip"
        )
    tta = None if flip_auto else args.tta
    ensemble = _load_ensemble(args.models, args.strategy, args.weights, tta, trust_code=args.trust_code)
    progress = not con.quiet
    fitted: list[float] | None = None
    choice = None
    if args.choose:
        if val is None or args.calibrate or args.strategy or args.weights:
            raise ConfigError(
                "--choose picks the strategy itself (mean, weighted or calibrated) on validation data: "
                "give --val FOLDER and leave out --strategy, --weights and --calibrate"
            )
        choice = ensemble.fit_combination(val, "auto", tta="auto" if flip_auto else "keep", progress=progress)
    elif val is not None and fittable_strategy(ensemble.strategy) is not None:
        fitted = [float(w) for w in ensemble.fit_weights(val, progress=progress)]
    if args.calibrate:
        if val is None:
            raise ConfigError("--calibrate fits temperatures on validation data: add --val FOLDER")
        ensemble.calibrate(val, progress=progress)
    if getattr(ensemble.strategy, "needs_fit", False):
        raise ConfigError(
            f"strategy {args.strategy!r} must be fitted on validation data: add --val FOLDER "
            "(or give --weights W1,W2,...)"
        )
    evaluation = ensemble.evaluate(val, progress=False) if val is not None else None
    if args.out is not None:
        ensemble.save(args.out)
    con.say(repr(ensemble) + (f"\nfitted weights: {fitted}" if fitted else ""))
    if choice is not None:
        con.say(str(choice))
    if ensemble.flip_choice is not None:
        con.say(str(ensemble.flip_choice))
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
            "flip_tta": None if ensemble.flip_choice is None else ensemble.flip_choice.to_dict(),
            "validation": evaluation.to_dict() if evaluation is not None else None,
        }
    )
    return EXIT_OK


def _histories(model_paths: list[str], ensemble: Ensemble) -> dict[str, History]:
    """Training histories from the ``metrics.csv`` files training wrote beside the models (an
    ensemble file: in its folder, named after each member's backbone), by member name."""
    if len(model_paths) == len(ensemble.members):
        candidates = [run_files(p)["metrics"] for p in model_paths]
    else:
        folder = Path(model_paths[0]).parent
        candidates = [folder / f"{file_stem(m.config.backbone)}.metrics.csv" for m in ensemble.members]
    if not all(c.is_file() for c in candidates):
        return {}
    return {name: read_metrics_csv(c) for name, c in zip(ensemble.member_names, candidates, strict=True)}


def _cmd_report(args: argparse.Namespace, con: Console) -> int:
    data = _held_out_data(args, "report")
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta, trust_code=args.trust_code)
    report = ensemble.report(
        data,
        histories=_histories(list(map(str, args.model)), ensemble),
        n_resamples=args.n_resamples,
        seed=args.seed,
        batch_size=args.batch_size,
        device=_device(args),
        progress=not con.quiet,
    )
    if args.out is not None:
        target = Path(args.out)
        if target.suffix.lower() == ".json":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(report.to_json(indent=2), encoding="utf-8")
        else:
            where = " ".join(args.split) if args.split else str(args.data)
            report.save(
                target, title=f"Report: {', '.join(map(str, args.model))} on {where}", meta={"data": where}
            )
        con.note(f"wrote the report to {target}")
    con.say(str(report))
    con.result({"command": "report", "models": list(args.model), **report.to_dict()})
    return EXIT_OK


def _cmd_export(args: argparse.Namespace, con: Console) -> int:
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta, trust_code=args.trust_code)
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
