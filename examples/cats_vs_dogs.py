"""Dogs vs Cats: fine-tune two pretrained backbones, combine them, write a report with figures.

The reference notebook as ensemblenet calls. With no arguments this is a SMALL DEMO (600 images of
``../shared/data/dogs-vs-cats-200px``, a few minutes on 2 CPU cores); point it at a whole folder
(flat ``cat.123.jpg`` files, or one folder per class) for the real benchmark::

    python examples/cats_vs_dogs.py                                                 # demo, fast recipe
    python examples/cats_vs_dogs.py --data ~/kaggle/train --limit 0 --recipe reference   # the notebook's
    python examples/cats_vs_dogs.py --download        # no local data: fetch Oxford-IIIT Pet cats vs dogs
    python examples/cats_vs_dogs.py --synthetic       # coloured noise: exercises the code, nothing more

Recipes (``ensemblenet.list_recipes()``; the docs' recipes page says what each does and measured):
``fast`` (the default), ``strong`` (the benchmark's: four members, heads that do not memorize,
flip TTA chosen on validation), ``reference`` (the notebook's), ``full``; ``seed`` and ``best``, this
script's 0.1 names for ``reference`` and ``fast``, still work. Members are offline ImageNet
backbones, each ``NAME`` or ``NAME=WEIGHTS`` (a weights name or a local file), e.g. the notebook's
pair: ``--members torchvision:resnet18=r18.pth,torchvision:resnet34=r34.pth``.

Writes the member models, ``ensemble.pt``, ``split.json``, ``report.md``, ``report.json`` and PNG
figures to ``--out`` (default ``runs/cats_vs_dogs-RECIPE``); with ``--distill STUDENT`` also
``student.pt``, one model trained on the ensemble's probabilities, scored in ``report.json``.
``benchmarks/gpu_reference.sh`` runs it on a GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ensemblenet import DataError, distill, get_recipe, list_recipes, scan_folder, train_ensemble
from ensemblenet.api import parse_members
from ensemblenet.datasets import dataset_folder, synthetic_folder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dogs-vs-cats-200px"
DEMO_LIMIT = 600
ALIASES = {"seed": "reference", "best": "fast"}  # the 0.1 recipe names, kept for one release


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help=f"image folder (default: the demo subset of {DEFAULT_DATA})"
    )
    parser.add_argument(
        "--limit", type=int, help=f"stratified subset (0 = all; default {DEMO_LIMIT} for the demo)"
    )
    parser.add_argument(
        "--members", help="comma-separated NAME[=WEIGHTS] (default: the recipe's members, Recipe.members)"
    )
    parser.add_argument("--recipe", choices=[*list_recipes(), *ALIASES], default="fast")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument(
        "--refit", action="store_const", const=True, help="also refit the members on train + validation"
    )
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1...")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for training")
    parser.add_argument("--feature-store", help="keep frozen features in this folder for later runs")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples for the CIs")
    parser.add_argument("--out", type=Path, help="report folder (default runs/cats_vs_dogs-RECIPE)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or epoch tables")
    parser.add_argument("--download", action="store_true", help="without local data: download a public set")
    parser.add_argument("--synthetic", action="store_true", help="train on generated coloured noise")
    parser.add_argument(
        "--distill", metavar="STUDENT", help="also distil the ensemble into one STUDENT model"
    )
    args = parser.parse_args(argv)
    args.out = args.out or REPO / "runs" / f"cats_vs_dogs-{args.recipe}"
    return args


def choose_data(args: argparse.Namespace) -> tuple[Path, int, bool]:
    """(folder, how many images to use (0 = all), whether this is the small demo)."""
    if args.data is not None:
        return args.data, args.limit or 0, False
    if args.synthetic:
        return synthetic_folder(args.out / "synthetic-images"), 0, True
    if DEFAULT_DATA.is_dir():
        return DEFAULT_DATA, DEMO_LIMIT if args.limit is None else args.limit, True
    return dataset_folder("oxford-pets-binary", download=args.download), args.limit or 0, False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        folder, limit, demo = choose_data(args)
    except DataError as exc:  # no data here: the message says what to download and where to put it
        print(f"{exc}\n(or pass --data FOLDER, or --synthetic to only exercise the code)", file=sys.stderr)
        return 2
    samples = scan_folder(folder)
    used = samples.limit(limit, seed=args.seed) if limit else samples
    note = f"{folder}: {len(used)} of {len(samples)} images" + (
        " (SYNTHETIC noise)" if args.synthetic else ""
    )
    if demo:
        note += " (a SMALL DEMO, not the benchmark)"
        print(f"** {note}. For the benchmark: python examples/cats_vs_dogs.py --data FOLDER --limit 0 **")
    recipe = get_recipe(ALIASES.get(args.recipe, args.recipe)).replace(
        batch_size=args.batch_size, refit=args.refit
    )
    device = None if args.device == "auto" else args.device
    progress = not args.no_progress
    started = time.perf_counter()
    run = train_ensemble(
        parse_members(args.members, recipe),  # NAME[=WEIGHTS],... or the recipe's own members
        used,  # cut into train / val / test in the notebook's 16,000/4,500/4,500 shares (64/18/18 %)
        recipe=recipe,
        epochs=args.epochs,  # given: taken as is; None: the recipe's (raised to min_steps on small data)
        out_dir=args.out,
        seed=args.seed,
        progress=progress,
        device=device,
        num_workers=args.workers,
        feature_store=args.feature_store,
    )
    ensemble = run.ensemble(progress=progress, device=device)  # the recipe's combination, fitted on val
    report = run.report(
        ensemble, n_resamples=args.resamples, seed=args.seed, progress=progress, device=device
    )
    print(report)
    ensemble.save(args.out / "ensemble.pt")
    meta = {"data": note, **run.meta(), "recipe_seconds": round(time.perf_counter() - started, 1)}
    if recipe.refit:  # the same combination over members refitted on train + validation
        refit = run.refit_ensemble()
        refit.save(args.out / "ensemble-refit.pt")
        meta["refit"] = refit.evaluate(run.splits["test"], progress=progress, device=device).to_dict()
        print(f"refitted on train + validation: test accuracy {meta['refit']['accuracy']:.4f}")
    if args.distill:  # one model trained on the ensemble's probabilities, scored on the same test split
        # The student gets the members' recipe: head and training settings (strong's do not memorize).
        settings = {"recipe": recipe, "progress": progress, "feature_store": args.feature_store}
        student = distill(ensemble, run.splits, student=args.distill, out=args.out / "student.pt", **settings)
        print(student.table())
        meta["distillation"] = student.to_dict()
    meta["seconds"] = round(time.perf_counter() - started, 1)
    report.save(args.out, title=f"Dogs vs Cats, recipe {recipe.name}", meta=meta)
    print(f"report: {args.out / 'report.md'}  ({meta['seconds']:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
