"""Dogs vs Cats: fine-tune two pretrained backbones and combine them into an ensemble.

The reference notebook, as ensemblenet code. With no arguments this is a SMALL DEMO (a few
hundred images of ``../shared/data/dogs-vs-cats-200px``, a few minutes on 2 CPU cores); point it
at the full Kaggle training folder (flat ``cat.123.jpg`` / ``dog.45.jpg`` files, or one folder per
class) for the real benchmark::

    python examples/cats_vs_dogs.py                                   # demo
    python examples/cats_vs_dogs.py --data ~/kaggle/train --limit 0   # full benchmark

Members default to the offline ImageNet weights (MobileNetV2 + EfficientNet-Lite0). The
notebook's ResNet18 + ResNet34 pair needs weight files you supply::

    python examples/cats_vs_dogs.py --members torchvision:resnet18=r18.pth,torchvision:resnet34=r34.pth

Writes ``report.json`` and ``report.md`` (plus the member checkpoints) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import ensemblenet
from ensemblenet import Ensemble, Samples, finetune, scan_folder, split_samples

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
        "--recipe", choices=["seed"], default="seed", help="seed: the reference notebook's recipe"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "cats_vs_dogs")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


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


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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

    members, member_rows = [], []
    for spec in args.members.split(","):
        name, _, weights = spec.partition("=")
        started = time.perf_counter()
        result = finetune(
            name,
            (train, val, test),
            weights=weights or "DEFAULT",
            head="mlp",
            freeze="bn_only",
            epochs=args.epochs,
            lr=1e-3,
            batch_size=args.batch_size,
            seed=args.seed,
            out=args.out / (name.replace(":", "_") + ".pt"),
            progress=not args.no_progress,
        )
        seconds = time.perf_counter() - started
        print(f"{name}: test accuracy {result.test.accuracy:.4f}  ({seconds:.0f}s)" if result.test else name)
        members.append(result.model)
        member_rows.append(
            {
                "backbone": name,
                "weights": weights or "DEFAULT",
                "seconds": round(seconds, 1),
                "history": result.history.to_dict()["records"],
                "checkpoint": str(result.path),
            }
        )

    ensemble = Ensemble(members, strategy="mean")
    evaluation = ensemble.evaluate(test, progress=not args.no_progress)
    print(evaluation)

    report = {
        "data": banner.splitlines()[0],
        "split": {"train": len(train), "val": len(val), "test": len(test)},
        "recipe": {
            "name": args.recipe,
            "freeze": "bn_only",
            "head": "mlp(512)",
            "optimizer": "adam",
            "lr": 1e-3,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "resize": "squash to the backbone size",
        },
        "members": member_rows,
        "test": evaluation.to_dict(),
        "seed": args.seed,
        "hardware": hardware(),
        "versions": {"ensemblenet": ensemblenet.__version__, "torch": torch.__version__},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    (args.out / "report.md").write_text(
        f"# Dogs vs Cats\n\n{banner}\n\n```\n{evaluation}\n```\n\nCommand: `{report['command']}`\n"
    )
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
