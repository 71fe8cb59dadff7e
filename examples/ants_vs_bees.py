"""Ants vs bees: the PyTorch transfer-learning tutorial's data set, with the reference report.

``../shared/data/hymenoptera/{train,val}/{ants,bees}`` (about 245 training and 153 validation
images; the tutorial reports roughly 94-95% validation accuracy with ResNet18). The tutorial's
``val`` folder is this report's **test** split, touched once; the validation split (best epoch,
fitted combination weights and temperatures) is carved from ``train`` deterministically
(``--val-fraction``, stratified, seeded). Unreadable files (the set ships an ``imageNotFound.gif``)
are skipped and counted.

::

    python examples/ants_vs_bees.py                  # seed recipe, ~2-4 min on 2 CPU cores
    python examples/ants_vs_bees.py --recipe best    # head_only + feature cache + calibrated weights

Writes ``report.md``, ``report.json`` and PNG figures to ``--out`` (default ``runs/ants_vs_bees-RECIPE``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _reference import RECIPES, run_from_args

from ensemblenet import scan_folder, split_samples

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "hymenoptera"
DEFAULT_MEMBERS = "torchvision:mobilenet_v2,timm:tf_efficientnet_lite0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with train/ and val/")
    parser.add_argument("--members", default=DEFAULT_MEMBERS, help="comma-separated NAME[=WEIGHTS]")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="seed")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of train/ used for validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = REPO / "runs" / f"ants_vs_bees-{args.recipe}"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
        print(
            f"no hymenoptera data at {args.data} (expected train/ and val/ inside); pass --data",
            file=sys.stderr,
        )
        return 2
    train_all, test = scan_folder(args.data / "train"), scan_folder(args.data / "val")
    fraction = args.val_fraction
    train, val = split_samples(train_all, (1 - fraction, fraction), seed=args.seed)
    note = f"{args.data}: train/ split {1 - fraction:.0%}/{fraction:.0%} into train/val, val/ as test"
    print(f"{note}\nsplit: train {len(train)} / val {len(val)} / test {len(test)}")
    run_from_args(args, title="Ants vs bees", data_note=note, train=train, val=val, test=test)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
