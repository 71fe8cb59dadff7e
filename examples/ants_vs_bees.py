"""Ants vs bees: the PyTorch transfer-learning tutorial's data set, with the reference report.

``../shared/data/hymenoptera/{train,val}/{ants,bees}`` (245 training and 153 validation images;
the tutorial reports about 94-95 % validation accuracy with ResNet18 fine-tuned end to end). As in
the tutorial, the ``val`` folder is where the models are judged: here it is the report's **test**
split, touched once. The validation split (best epoch, fitted combination) is cut from ``train``
(``--val-fraction``, default 22 % as everywhere in ensemblenet, stratified, seeded). Unreadable
files (the set ships an ``imageNotFound.gif``) are skipped and counted. ``--limit 60`` trains on
a 60-image subset of the training images.

::

    python examples/ants_vs_bees.py                      # fast recipe (the default), ~2 min on 2 CPU cores
    python examples/ants_vs_bees.py --recipe reference   # the reference notebook's recipe

Writes the models, ``split.json``, ``report.md``, ``report.json`` and PNG figures to ``--out``
(default ``runs/ants_vs_bees-RECIPE``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ensemblenet import get_recipe, list_recipes, train_ensemble
from ensemblenet.api import VAL_FROM_TRAIN, parse_members

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hymenoptera"
ALIASES = {"seed": "reference", "best": "fast"}  # the 0.1 recipe names, kept for one release


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train/ and val/")
    parser.add_argument(
        "--members", help="comma-separated NAME[=WEIGHTS] (default: the recipe's members, Recipe.members)"
    )
    parser.add_argument("--recipe", choices=[*list_recipes(), *ALIASES], default="fast")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument(
        "--val-fraction", type=float, default=VAL_FROM_TRAIN[1], help="share of train/ used for validation"
    )
    parser.add_argument("--limit", type=int, help="train on a stratified subset of this many training images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    args.out = args.out or REPO / "runs" / f"ants_vs_bees-{args.recipe}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
        print(
            f"no hymenoptera data at {args.data} (expected train/ and val/ inside); pass --data",
            file=sys.stderr,
        )
        return 2
    recipe = get_recipe(ALIASES.get(args.recipe, args.recipe)).replace(batch_size=args.batch_size)
    device = None if args.device == "auto" else args.device
    progress = not args.no_progress
    started = time.perf_counter()
    run = train_ensemble(
        parse_members(args.members, recipe),  # NAME[=WEIGHTS],... or the recipe's own members
        {"train": args.data / "train", "test": args.data / "val"},  # validation is cut from train/
        split=(1 - args.val_fraction, args.val_fraction),
        limit=args.limit,
        recipe=recipe,
        epochs=args.epochs,  # given: taken as is; None: the recipe's (raised to min_steps on small data)
        out_dir=args.out,
        seed=args.seed,
        progress=progress,
        device=device,
        num_workers=args.workers,
    )
    ensemble = run.ensemble(progress=progress, device=device)
    report = run.report(
        ensemble, n_resamples=args.resamples, seed=args.seed, progress=progress, device=device
    )
    print(report)
    f = args.val_fraction
    note = f"{args.data}: train/ split {1 - f:.0%}/{f:.0%} into train/val, val/ as test"
    note += f", {args.limit} training images" if args.limit else ""
    meta = {"data": note, **run.meta(), "seconds": round(time.perf_counter() - started, 1)}
    report.save(args.out, title=f"Ants vs bees, recipe {recipe.name}", meta=meta)
    print(f"report: {args.out / 'report.md'}  ({meta['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
