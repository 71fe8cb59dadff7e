"""Benchmark 1: the fast recipe end to end, two members, today's path vs the new default.

The recipe (built from public pieces): ``split_samples`` of ``--data`` (16,000/4,500/4,500
proportions, seed 0); per member (MobileNetV2 and EfficientNet-Lite0 from their offline ImageNet
weights, MLP head) ``fit_with_feature_cache`` with ``Trainer(TrainConfig(epochs=10, lr=1e-3,
batch_size=64, schedule="cosine"), freeze="head_only")`` -- the frozen backbone runs once over the
training and validation images, then 10 epochs train the head; then ``Ensemble(members).evaluate``
on the test split (mean of probabilities). Two sides, identical but for the engine:

  torch   ``engine=TorchEngine(prefetch=False)``: eager PyTorch, decoding inline, as
          ensemblenet 0.2 did (channels-last for the feature cache).
  auto    the new default, ``engine="auto"``: ONNX Runtime on this CPU, decoding on a second
          thread, exported graphs cached on disk. The cache starts **empty** (a fresh folder),
          so the exports are part of its time.

The sides take turns stage by stage (member 1, member 2, test evaluation), so a load spike from
other programs on a shared machine hits both about equally; each side's time is the sum of its
stages. The table shows time, test accuracy of each member and the ensemble, and the roofline.

Run (the default ``--limit 1025``, a stratified twentieth of the 20,500 images, takes about 9
minutes on the shared 2-core machine, most of it the old path; ``--limit 0`` runs all of them, which
takes about 20 times as long)::

    PYTHONPATH=src python benchmarks/fast_recipe.py              # --limit 1025
    PYTHONPATH=src python benchmarks/fast_recipe.py --limit 0    # the full folder
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, forward_gflop, gemm_peak_gflops, print_report, print_roofline, table, warm_files

MEMBERS = ("torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0")
SIDES = ("torch", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=1025, help="stratified subset (0 = every image)")
    parser.add_argument("--members", default=",".join(MEMBERS))
    args = parser.parse_args()
    import torch

    import ensemblenet as en
    from ensemblenet.engine import FrozenPrefix

    engines = {"torch": en.TorchEngine(prefetch=False), "auto": "auto"}  # today's path, the new default

    wall0 = time.perf_counter()
    samples = en.scan_folder(args.data)
    if args.limit:
        samples = samples.limit(args.limit, seed=0)
    train, val, test = en.split_samples(samples, seed=0)
    print(f"{len(samples)} images: train {len(train)} / val {len(val)} / test {len(test)}", flush=True)
    warm_files([str(p) for p in samples.paths])
    peak = gemm_peak_gflops()
    names = args.members.split(",")
    seconds = {side: 0.0 for side in SIDES}
    stages: dict[str, dict[str, float]] = {side: {} for side in SIDES}
    models: dict[str, list[Any]] = {side: [] for side in SIDES}
    gflop: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as cache:
        os.environ["ENSEMBLENET_CACHE"] = cache  # an empty engine cache: the new side pays its exports

        def member_stage(side: str, name: str) -> None:
            torch.manual_seed(0)  # the same head initialization on both sides
            model = en.create_model(name, train.classes, head="mlp", weights="DEFAULT")
            trainer = en.Trainer(
                en.TrainConfig(epochs=10, lr=1e-3, batch_size=64, schedule="cosine", progress=False),
                freeze="head_only",
            )
            en.fit_with_feature_cache(trainer, model, train, val, engine=engines[side])
            models[side].append(model.eval())

        def test_stage(side: str) -> Any:
            return en.Ensemble(models[side], engine=engines[side]).evaluate(test, progress=False)

        evaluations = {}
        plan = [*[(f"member {n}", n) for n in names], ("test evaluation", None)]
        for i, (stage, name) in enumerate(plan):
            for side in SIDES if i % 2 == 0 else SIDES[::-1]:  # alternate who goes first
                started = time.perf_counter()
                if name is not None:
                    member_stage(side, name)
                else:
                    evaluations[side] = test_stage(side)
                took = time.perf_counter() - started
                seconds[side] += took
                stages[side][stage] = took
                print(f"{side}: {stage} {took:.1f} s", flush=True)
        for name, model in zip(names, models["torch"], strict=True):
            gflop[name] = forward_gflop(FrozenPrefix(model, None), model.spec.size)

    # Frozen forward passes per side: each member over train + val (feature cache) and test.
    images = len(train) + len(val) + len(test)
    total_gflop = sum(gflop.values()) * images
    rows = []
    for side in SIDES:
        ev = evaluations[side]
        accs = " / ".join(f"{m.accuracy:.4f}" for m in ev.members)
        rows.append(
            [
                side,
                f"{seconds[side]:.0f}",
                f"{seconds['torch'] / seconds[side]:.2f}x",
                accs,
                f"{ev.accuracy:.4f}",
            ]
        )
    print(table(rows, ["side", "seconds", "speed-up", "members' test acc", "ensemble test acc"]))
    per_image = sum(gflop.values())
    roofline = print_roofline({side: (per_image, images / seconds[side]) for side in SIDES}, peak)
    results = {
        "images": {"train": len(train), "val": len(val), "test": len(test)},
        "seconds": seconds,
        "stages": stages,
        "speedup": seconds["torch"] / seconds["auto"],
        "accuracy": {
            side: {
                "ensemble": evaluations[side].accuracy,
                "members": [m.accuracy for m in evaluations[side].members],
            }
            for side in SIDES
        },
        "frozen_gflop": total_gflop,
        "roofline": roofline,
        "wall_s": time.perf_counter() - wall0,
    }
    print(f"speed-up of the new default: {results['speedup']:.2f}x (target >= 3x)")
    print_report("fast_recipe", args, results)


if __name__ == "__main__":
    main()
