"""Benchmark: does the fast recipe's cost grow linearly, in images and in ensemble members?

1. The fast recipe, one member (MobileNetV2, offline ImageNet weights, MLP head,
   ``Trainer(TrainConfig(epochs=10, lr=1e-3, batch_size=64, schedule="cosine"),
   freeze="head_only")`` + ``fit_with_feature_cache``, the default engine) on ``--sizes`` training
   images (stratified subsets of ``../shared/data/dogs-vs-cats-200px``; default 1,000, 5,000 and
   20,000).
2. The ensemble: 2, 3 and 4 members (MobileNetV2, EfficientNet-Lite0, -Lite1, -Lite2, in that
   order), each trained with the same recipe on ``--ensemble-train`` images, then
   ``Ensemble(members).predict_proba`` on ``--ensemble-test`` other images; every ensemble is
   trained from scratch, so nothing is shared between the three runs.

Each backbone's ONNX graph is exported before the timing starts (one-off, cached on disk; the
export seconds are printed). The script prints every time, a least-squares line per part
(slope and intercept, R^2) and each point's cost per unit, and draws both into one PNG
(``--figure``, default ``docs/_static/performance/scaling.png``). Members differ in cost (Lite2
at 260 px does about 2.3x MobileNetV2's FLOPs), so the ensemble part is also fitted against the
members' total GFLOP per image, where linear means a constant cost per GFLOP.

Run (about 15 minutes on the shared 2-core machine of docs/performance.rst)::

    PYTHONPATH=src python benchmarks/scaling.py    # --sizes 1000,5000,20000 --ensemble-train 500
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DATA,
    REPO,
    forward_gflop,
    gemm_peak_gflops,
    print_report,
    print_roofline,
    table,
    warm_files,
)

BACKBONES = (
    "torchvision:mobilenet_v2",
    "timm:tf_efficientnet_lite0",
    "timm:tf_efficientnet_lite1",
    "timm:tf_efficientnet_lite2",
)


def fit_line(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least squares ``y = slope * x + intercept`` and its R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1e-12
    return {"slope": slope, "intercept": intercept, "r2": 1 - ss_res / ss_tot}


def recipe(name: str, train: Any) -> Any:
    import torch

    import ensemblenet as en

    torch.manual_seed(0)
    model = en.create_model(name, train.classes, head="mlp", weights="DEFAULT")
    trainer = en.Trainer(
        en.TrainConfig(epochs=10, lr=1e-3, batch_size=64, schedule="cosine", progress=False),
        freeze="head_only",
    )
    en.fit_with_feature_cache(trainer, model, train)
    return model.eval()


def draw(path: Path, sizes: dict[str, Any], members: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    xs, ys, line = sizes["x"], sizes["seconds"], sizes["fit"]
    left.plot(xs, ys, "o", label="measured")
    left.plot(
        [0, max(xs)], [line["intercept"], line["intercept"] + line["slope"] * max(xs)], "-", label="fit"
    )
    left.set(
        xlabel="training images",
        ylabel="seconds",
        title=f"fast recipe, MobileNetV2: {1000 * line['slope']:.1f} s per 1,000 images",
    )
    left.legend()
    mx, my, mline = members["gflop"], members["seconds"], members["fit_gflop"]
    right.plot(mx, my, "o", label="measured")
    right.plot(
        [0, max(mx)], [mline["intercept"], mline["intercept"] + mline["slope"] * max(mx)], "-", label="fit"
    )
    for x, y, m in zip(mx, my, members["x"], strict=True):
        right.annotate(f"{m} members", (x, y), textcoords="offset points", xytext=(4, -12))
    right.set(
        xlabel="members' total GFLOP per image",
        ylabel="seconds",
        title=f"ensemble of 2-4 members: {mline['slope']:.1f} s per GFLOP/image",
    )
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--ensemble-train", type=int, default=500)
    parser.add_argument("--ensemble-test", type=int, default=250)
    parser.add_argument(
        "--figure", type=Path, default=REPO / "docs" / "_static" / "performance" / "scaling.png"
    )
    args = parser.parse_args()
    import ensemblenet as en
    from ensemblenet.engine import FrozenPrefix, prefix_runner, resolve_engine

    wall0 = time.perf_counter()
    everything = en.scan_folder(DATA)
    peak = gemm_peak_gflops()
    export_s, gflop = {}, {}
    for name in BACKBONES:  # one-off exports, before the timing (cached on disk)
        model = en.create_model(name, everything.classes, head="mlp", weights="DEFAULT")
        started = time.perf_counter()
        prefix_runner(model, None, resolve_engine("auto")).prepare()
        export_s[name] = time.perf_counter() - started
        gflop[name] = forward_gflop(FrozenPrefix(model, None), model.spec.size)
    print("exports (s):", {k: round(v, 1) for k, v in export_s.items()}, flush=True)

    sizes = [int(s) for s in args.sizes.split(",")]
    size_s = []
    for n in sizes:
        train = everything.limit(n, seed=0)
        warm_files([str(p) for p in train.paths])
        started = time.perf_counter()
        recipe(BACKBONES[0], train)
        size_s.append(time.perf_counter() - started)
        print(f"fast recipe on {n} images: {size_s[-1]:.1f} s", flush=True)
    size_fit = fit_line([float(n) for n in sizes], size_s)

    pool = everything.limit(args.ensemble_train + args.ensemble_test, seed=1)
    order = list(range(len(pool)))
    train, test = pool.subset(order[::2][: args.ensemble_train]), pool.subset(order[1::2])
    warm_files([str(p) for p in pool.paths])
    counts, member_s, member_gflop = [2, 3, 4], [], []
    for m in counts:
        started = time.perf_counter()
        models = [recipe(name, train) for name in BACKBONES[:m]]
        en.Ensemble(models).predict_proba(test, progress=False)
        member_s.append(time.perf_counter() - started)
        member_gflop.append(sum(gflop[name] for name in BACKBONES[:m]))
        print(f"ensemble of {m} members: {member_s[-1]:.1f} s", flush=True)
    member_fit = fit_line([float(m) for m in counts], member_s)
    gflop_fit = fit_line(member_gflop, member_s)

    rows = [
        [f"{n} images", f"{s:.1f}", f"{1000 * s / n:.2f} s / 1k images"]
        for n, s in zip(sizes, size_s, strict=True)
    ]
    rows += [
        [f"{m} members", f"{s:.1f}", f"{s / g:.1f} s / GFLOP-per-image"]
        for m, s, g in zip(counts, member_s, member_gflop, strict=True)
    ]
    print(table(rows, ["run", "seconds", "cost per unit"]))
    print(
        f"slope, images: {1000 * size_fit['slope']:.2f} s per 1,000 images "
        f"(intercept {size_fit['intercept']:.1f} s, R^2 {size_fit['r2']:.4f})"
    )
    print(
        f"slope, members: {member_fit['slope']:.1f} s per member (R^2 {member_fit['r2']:.4f}); "
        f"{gflop_fit['slope']:.1f} s per GFLOP/image of the members (R^2 {gflop_fit['r2']:.4f})"
    )
    largest = sizes[-1]
    roofline = print_roofline(
        {f"fast recipe, {largest} images": (gflop[BACKBONES[0]], largest / size_s[-1])}, peak
    )
    draw(
        args.figure,
        {"x": sizes, "seconds": size_s, "fit": size_fit},
        {"x": counts, "seconds": member_s, "gflop": member_gflop, "fit_gflop": gflop_fit},
    )
    print(f"figure: {args.figure}")
    results = {
        "export_s": export_s,
        "gflop_per_image": gflop,
        "sizes": dict(zip(sizes, size_s, strict=True)),
        "size_fit": size_fit,
        "members": dict(zip(counts, member_s, strict=True)),
        "member_fit": member_fit,
        "member_gflop_fit": gflop_fit,
        "roofline": roofline,
        "wall_s": time.perf_counter() - wall0,
    }
    print_report("scaling", args, results)


if __name__ == "__main__":
    main()
