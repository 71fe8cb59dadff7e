"""Dogs vs Cats: fine-tune two pretrained backbones, combine them, and write a report with figures.

The reference notebook, as ensemblenet code. With no arguments this is a SMALL DEMO (600 images
of ``../shared/data/dogs-vs-cats-200px``, a few minutes on 2 CPU cores); point it at the full
Kaggle training folder (flat ``cat.123.jpg`` / ``dog.45.jpg`` files, or one folder per class) for
the real benchmark::

    python examples/cats_vs_dogs.py                                                # demo, seed recipe
    python examples/cats_vs_dogs.py --data ~/kaggle/train --limit 0 --recipe best  # full benchmark

Recipes: ``seed`` is the notebook's (bn_only, Linear(512) -> Linear(2) head, Adam 1e-3, 2 epochs,
batch 32, 224 px squash resize, mean of probabilities); ``best`` is ensemblenet's recommendation
on a CPU (head_only with the frozen-feature cache, 10 epochs, cosine schedule, batch 64). See
``examples/_reference.py`` and the benchmarks page of the docs for what each changes and why.

Members default to the offline ImageNet weights (MobileNetV2 + EfficientNet-Lite0); EfficientNet-Lite1
(240 px) and Lite2 (260 px) are in the offline catalog too, and each member sees images at its own size::

    python examples/cats_vs_dogs.py \
        --members torchvision:mobilenet_v2,timm:tf_efficientnet_lite0,timm:tf_efficientnet_lite2

The notebook's ResNet18 + ResNet34 pair needs weight files you supply::

    python examples/cats_vs_dogs.py --members torchvision:resnet18=r18.pth,torchvision:resnet34=r34.pth

Writes ``report.md``, ``report.json``, PNG figures and the member checkpoints to ``--out``
(default ``runs/cats_vs_dogs-RECIPE``). ``benchmarks/gpu_reference.sh`` runs everything on a GPU.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
from _reference import RECIPES, run_from_args
from PIL import Image

from ensemblenet import Samples, scan_folder, split_samples

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dogs-vs-cats-200px"
DEFAULT_MEMBERS = "torchvision:mobilenet_v2,timm:tf_efficientnet_lite0"
DEMO_LIMIT = 600


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, help=f"image folder (default: the demo subset of {DEFAULT_DATA})"
    )
    parser.add_argument(
        "--limit",
        type=int,
        help=f"stratified subset size (0 = all; default {DEMO_LIMIT} without --data, 0 with it)",
    )
    parser.add_argument(
        "--members",
        default=DEFAULT_MEMBERS,
        help="comma-separated backbones, each optionally NAME=WEIGHTS (a weights name or a local file)",
    )
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="seed",
        help="seed: the reference notebook's recipe; best: ensemblenet's recommended recipe (see above)",
    )
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1...")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for training")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples for the CIs")
    parser.add_argument("--out", type=Path, help="report folder (default runs/cats_vs_dogs-RECIPE)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = REPO / "runs" / f"cats_vs_dogs-{args.recipe}"
    return args


def synthetic_folder(root: Path, per_class: int = 60) -> Path:
    """Stand-in images when no real data exists: 'cats' warm, 'dogs' cool. Only exercises the code."""
    rng = np.random.default_rng(0)
    for cls, channel in (("cats", 0), ("dogs", 2)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, size=(200, 200, 3), dtype=np.uint8)
            pixels[..., channel] = rng.integers(130, 256, size=(200, 200), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{cls[:-1]}.{i}.jpg")
    return root


def choose_data(args: argparse.Namespace) -> tuple[Samples, str]:
    if args.data is not None:
        samples = scan_folder(args.data)
        limit = args.limit or 0
        kind = f"{args.data}"
    elif DEFAULT_DATA.is_dir():
        samples = scan_folder(DEFAULT_DATA)
        limit = DEMO_LIMIT if args.limit is None else args.limit
        kind = f"{DEFAULT_DATA} (demo default)"
    else:
        folder = synthetic_folder(args.out / "synthetic-images")
        samples = scan_folder(folder)
        limit = 0
        kind = "SYNTHETIC images (no real data found)"
    full = len(samples)
    if limit and limit < full:
        samples = samples.limit(limit, seed=args.seed)
    banner = f"data: {kind}: using {len(samples)} of {full} images"
    if len(samples) < 20_000:
        banner += (
            "\n  ** This is a SMALL DEMO, not the benchmark. For the reference numbers run:"
            "\n     python examples/cats_vs_dogs.py --data PATH/TO/KAGGLE/train --limit 0 **"
        )
    return samples, banner


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    samples, banner = choose_data(args)
    print(banner)
    train, val, test = split_samples(samples, seed=args.seed)
    print(
        f"split: train {len(train)} / val {len(val)} / test {len(test)} "
        "(the notebook's 16,000/4,500/4,500 proportions)"
    )
    note = banner.splitlines()[0].removeprefix("data: ")
    note += " (a SMALL DEMO, not the benchmark)" if len(samples) < 20_000 else ""
    run_from_args(args, title="Dogs vs Cats", data_note=note, train=train, val=val, test=test)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
