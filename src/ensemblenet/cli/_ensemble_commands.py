"""The ``ensemble``, ``report`` and ``export`` commands: combine, judge and ship model files."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..strategies import fittable_strategy, strategy_name
from ._console import EXIT_OK, Console
from ._loading import _device, _load_ensemble


def _cmd_ensemble(args: argparse.Namespace, con: Console) -> int:
    ensemble = _load_ensemble(args.models, args.strategy, args.weights, args.tta, trust_code=args.trust_code)
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
    elif args.val is not None and fittable_strategy(ensemble.strategy) is not None:
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
    ensemble = _load_ensemble(args.model, args.strategy, args.weights, args.tta, trust_code=args.trust_code)
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
