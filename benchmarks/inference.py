"""Benchmark 3: 2-member ensemble inference (MobileNetV2 + EfficientNet-Lite0): eager PyTorch vs
ONNX Runtime float32 vs ONNX Runtime int8, speed and accuracy on the same images.

Both members start from their offline ImageNet weights with an MLP head trained ``head_only`` on
``--train`` images of the training pool (frozen-feature cache, 10 epochs, cosine; set-up, not
timed). Every side then computes the two members' mean probability for the same ``--images``
JPEG files (disjoint from the training images), end to end at batch 32 (decoding, resizing, both
networks, the mean):

  plain        eager PyTorch as the notebook writes it: a Dataset that decodes each image once and
               applies each member's torchvision transform (Resize, ToTensor, Normalize), then
               ``with torch.no_grad()`` each network, softmax, mean.
  torch        ``Ensemble(members, engine="torch").predict_proba(samples)``: ensemblenet's eager
               path (members share one decoded batch, each normalizes its own input).
  onnxruntime  ``engine="onnxruntime"`` (what ``"auto"`` picks on this CPU): each member exported
               once and run by ONNX Runtime, the next batch decoded on a second thread.
  int8         ``engine=OnnxRuntimeEngine(int8=True, calibration=train)``: static int8 (QDQ,
               per-channel), calibrated on 256 of the training images and checked on the others.

Exports and the int8 calibration happen before the timed rounds (they are cached on disk and
paid once per model; ``benchmarks/engines.py`` times them). Sides take turns for ``--rounds``
rounds; the table shows each side's best round, its accuracy and its roofline.

Run (about 6 minutes on the shared 2-core machine of docs/performance.rst)::

    PYTHONPATH=src python benchmarks/inference.py            # --images 256 --train 512 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    emit,
    forward_gflop,
    gemm_peak_gflops,
    pick,
    print_report,
    print_roofline,
    table,
    warm_files,
)

SIDES = ("plain", "torch", "onnxruntime", "int8")
NAMES = ("torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0")


def members(train: Any, folder: Path | None = None) -> list[Any]:
    """The two members, their heads trained on ``train`` (feature cache), or loaded from ``folder``
    when an earlier ``--prepare`` saved them there."""
    import torch

    import ensemblenet as en

    out = []
    for name in NAMES:
        path = folder / (name.replace(":", "_") + ".pt") if folder else None
        if path is not None and path.is_file():
            out.append(en.load_model(path).eval())
            continue
        torch.manual_seed(0)
        model = en.create_model(name, train.classes, head="mlp", weights="DEFAULT")
        trainer = en.Trainer(
            en.TrainConfig(epochs=10, lr=1e-3, batch_size=64, schedule="cosine", progress=False),
            freeze="head_only",
        )
        en.fit_with_feature_cache(trainer, model, train, engine="onnxruntime")
        if path is not None:
            en.save_model(model, path)
        out.append(model.eval())
    return out


def build(
    models: list[Any], train: Any, items: list[tuple[str, int]], sides: tuple[str, ...]
) -> dict[str, Any]:
    """A callable per side that processes every image once and returns (N, 2) probabilities."""
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    import ensemblenet as en

    samples = en.Samples([p for p, _ in items], [label for _, label in items], ("cats", "dogs"))
    runs: dict[str, Any] = {}
    if "plain" in sides:
        resample = {
            "bilinear": transforms.InterpolationMode.BILINEAR,
            "bicubic": transforms.InterpolationMode.BICUBIC,
        }
        tfs = [
            transforms.Compose(
                [
                    transforms.Resize(m.spec.size, interpolation=resample[m.spec.interpolation]),
                    transforms.ToTensor(),
                    transforms.Normalize(m.spec.mean, m.spec.std),
                ]
            )
            for m in models
        ]
        nets = [nn.Sequential(copy.deepcopy(m.backbone), copy.deepcopy(m.head)).eval() for m in models]

        class TwoViews(Dataset):  # type: ignore[type-arg]
            def __len__(self):  # type: ignore[no-untyped-def]
                return len(items)

            def __getitem__(self, i):  # type: ignore[no-untyped-def]
                image = Image.open(items[i][0]).convert("RGB")
                return tuple(tf(image) for tf in tfs)

        def plain() -> Any:
            probs = []
            with torch.no_grad():
                for xs in DataLoader(TwoViews(), batch_size=32):
                    probs.append(
                        torch.stack([net(x).softmax(1) for net, x in zip(nets, xs, strict=True)]).mean(0)
                    )
            return torch.cat(probs)

        runs["plain"] = plain
    engines: dict[str, Any] = {
        "torch": "torch",
        "onnxruntime": "onnxruntime",
        "int8": en.OnnxRuntimeEngine(int8=True, calibration=train),
    }
    for side, engine in engines.items():
        if side in sides:
            ensemble = en.Ensemble([copy.deepcopy(m) for m in models], engine=engine)
            ensemble.member_probas(samples.subset([0]), progress=False)  # export or quantize now, untimed
            runs[side] = lambda e=ensemble: e.predict_proba(samples, batch_size=32, progress=False)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--only", choices=SIDES, help="run one side once and print its peak RSS (for memory.py)"
    )
    parser.add_argument(
        "--members-dir",
        type=Path,
        help="keep the trained members and their engines in this folder (reused when present)",
    )
    parser.add_argument(
        "--prepare", action="store_true", help="only train/build into --members-dir, then stop (memory.py)"
    )
    args = parser.parse_args()
    import torch

    import ensemblenet as en

    wall0 = time.perf_counter()
    items = pick(args.images, offset=3000)
    train_items = pick(args.train, offset=0)
    warm_files([p for p, _ in items + train_items])
    train = en.Samples([p for p, _ in train_items], [label for _, label in train_items], ("cats", "dogs"))
    labels = torch.tensor([label for _, label in items])
    sides = (args.only,) if args.only else SIDES
    with tempfile.TemporaryDirectory() as tmp:
        # A prepared folder holds the members and their engines (memory.py measures deployment,
        # not training or calibration); otherwise everything is built here, before the timing.
        folder = args.members_dir
        os.environ["ENSEMBLENET_CACHE"] = str(folder / "cache") if folder else tmp
        models = members(train, folder)
        runs = build(models, train, items, sides)
        if args.prepare:
            print(f"prepared {folder}")
            return
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        outputs: dict[str, Any] = {}
        for _ in range(1 if args.only else args.rounds):
            for side in sides:
                started = time.perf_counter()
                outputs[side] = runs[side]()
                seconds[side].append(time.perf_counter() - started)
    if args.only:
        return emit({"side": args.only, "images_per_s": len(items) / seconds[args.only][0]})
    peak = gemm_peak_gflops()
    gflop = sum(forward_gflop(m, m.spec.size) for m in models)
    results: dict[str, Any] = {}
    base = len(items) / min(seconds["plain"])
    rows = []
    for side in sides:
        best = len(items) / min(seconds[side])
        probs = outputs[side].double()
        accuracy = float((probs.argmax(1) == labels).double().mean())
        diff = float((probs - outputs["plain"].double()).abs().max())
        results[side] = {
            "seconds": seconds[side],
            "images_per_s": best,
            "accuracy": accuracy,
            "max_abs_diff_vs_plain": diff,
        }
        rows.append([side, f"{best:.1f}", f"{best / base:.2f}x", f"{accuracy:.4f}", f"{diff:.1e}"])
    print(table(rows, ["side", "images/s (best round)", "vs plain", "accuracy", "max |p - p_plain|"]))
    results["roofline"] = print_roofline({s: (gflop, results[s]["images_per_s"]) for s in sides}, peak)
    results["wall_s"] = time.perf_counter() - wall0
    print_report("inference", args, results)


if __name__ == "__main__":
    main()
