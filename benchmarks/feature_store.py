"""What a feature store saves: the frozen prefix's pass over N images without a store, with an
empty store (computed and written), and with the filled store (read), in one process, one after
the other, each round in that order (so a load spike hits all three).

    python benchmarks/feature_store.py --images 1000 --backbone timm:tf_efficientnet_lite0 --rounds 2

Prints seconds and images/s per side (median over rounds), the store's size on disk, and one JSON
document with the hardware. Every side returns the same features (checked).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import DATA, hardware, pick, table, warm_files

from ensemblenet import create_model
from ensemblenet.data import Samples
from ensemblenet.training import FeatureStore, compute_features


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--flips", action="store_true", help="cache the mirrored view too")
    args = parser.parse_args()

    items = pick(args.images)
    warm_files([path for path, _ in items])  # the page cache holds the files for every side
    samples = Samples(tuple(Path(p) for p, _ in items), tuple(label for _, label in items), ("cats", "dogs"))
    model = create_model(args.backbone, samples.classes)
    seconds: dict[str, list[float]] = {"no store": [], "empty store (write)": [], "filled store (read)": []}
    size = 0
    for _ in range(args.rounds):
        folder = Path(tempfile.mkdtemp(prefix="feature-store-"))
        try:
            caches = []
            for side, store in (("no store", None), ("empty store (write)", FeatureStore(folder)),
                                ("filled store (read)", FeatureStore(folder))):  # fmt: skip
                started = time.perf_counter()
                caches.append(compute_features(model, samples, None, flips=args.flips, store=store))
                seconds[side].append(time.perf_counter() - started)
            assert all(torch.equal(c.features, caches[1].features) for c in caches[1:])  # read = written
            torch.testing.assert_close(caches[0].features, caches[1].features, rtol=0, atol=2e-3)
            size = sum(f.stat().st_size for f in folder.rglob("*.safetensors"))
        finally:
            shutil.rmtree(folder)
    median = {side: statistics.median(values) for side, values in seconds.items()}
    rows = [
        [side, f"{s:.2f}", f"{args.images / s:.0f}", f"{median['no store'] / s:.1f}x"]
        for side, s in median.items()
    ]
    print(table(rows, ["side", "seconds (median)", "images/s", "vs no store"]))
    print(
        f"store on disk: {size / 1e6:.1f} MB, {args.images} images ({size / args.images / 1e3:.1f} KB each)"
    )
    result: dict[str, Any] = {
        "hardware": hardware(), "data": str(DATA), "images": args.images, "backbone": args.backbone,
        "flips": args.flips, "seconds": seconds, "store_bytes": size,
    }  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
