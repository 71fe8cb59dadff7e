"""Benchmark: the engines behind the frozen backbone, measured on this machine.

Part 1, the settings (MobileNetV2 backbone, ``--images`` training images, 224 px):

* decode alone (``make_loader``: JPEG decode + resize, one thread);
* each engine alone on already decoded batches: PyTorch eager (channels-last, its default
  threads) and ONNX Runtime with 1 and with ``physical_cores()`` intra-op threads, spinning
  off and on;
* decode + engine, one after the other vs with the next batch decoded on a second thread
  (``ensemblenet.data.prefetch``); the **overlap** is the share of the decode time that the
  second thread hid: ``(one after the other - decode ahead) / decode alone`` (1 = all of it,
  0 = none, negative = the second thread slowed the engine down more than it hid);
* ONNX Runtime's throughput at batch 16, 32, 64 and 128.

Part 2, per offline backbone (MobileNetV2, EfficientNet-Lite0/1/2): the Dogs vs Cats split of
``--data`` (``split_samples``, seed 0); ``--train`` training and ``--val`` validation images (a
stratified subset of each part). Features of the validation images through PyTorch, ONNX Runtime
float32 and ONNX Runtime int8 (images/s, end to end from files); a ``head_only`` MLP head trained
on each engine's own training features (10 epochs, cosine, Adam 1e-3, batch 64); its accuracy on
the validation images; the int8 engine's held-out check (calibrated on 256 of the training images,
checked on the others).

Run (about 15 minutes on the shared 2-core machine of docs/performance.rst)::

    PYTHONPATH=src python benchmarks/engines.py       # --images 256 --train 400 --val 600
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
from _common import (
    DATA,
    forward_gflop,
    gemm_peak_gflops,
    pick,
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


def settings_part(images: int) -> dict[str, Any]:
    import torch

    import ensemblenet as en
    from ensemblenet.data import make_loader, prefetch
    from ensemblenet.engine import OnnxRuntimeEngine, TorchEngine, physical_cores, prefix_runner

    items = pick(images, offset=1000)
    warm_files([p for p, _ in items])
    samples = en.Samples([p for p, _ in items], [label for _, label in items], ("cats", "dogs"))
    model = en.create_model("torchvision:mobilenet_v2", samples.classes, head="mlp", weights="DEFAULT").eval()
    n = len(samples)

    def decode(batch_size: int = 32) -> float:
        started = time.perf_counter()
        for _ in make_loader(samples, model.spec, batch_size=batch_size):
            pass
        return time.perf_counter() - started

    decoded = [b.images[0] for b in make_loader(samples, model.spec, batch_size=32)]
    cores = physical_cores()
    engines: dict[str, Any] = {"torch eager (channels-last)": TorchEngine()}
    for threads in sorted({1, cores}):
        for spinning in (False, True):
            engines[f"onnxruntime {threads} thread(s), spinning {'on' if spinning else 'off'}"] = (
                OnnxRuntimeEngine(threads=threads, spinning=spinning)
            )
    runners = {}
    for name, engine in engines.items():
        if isinstance(engine, TorchEngine):
            model.to(memory_format=torch.channels_last)
        runners[name] = prefix_runner(model, None, engine).prepare()

    def run_engine(runner: Any, batches: Any) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                runner(x.contiguous(memory_format=torch.channels_last) if runner.engine == "torch" else x)
        return time.perf_counter() - started

    def pipelined(runner: Any, ahead: bool) -> float:
        started = time.perf_counter()
        loader = make_loader(samples, model.spec, batch_size=32)
        with torch.inference_mode():
            for batch in prefetch(loader) if ahead else loader:
                x = batch.images[0]
                runner(x.contiguous(memory_format=torch.channels_last) if runner.engine == "torch" else x)
        return time.perf_counter() - started

    for runner in runners.values():  # warm-up: first calls allocate
        run_engine(runner, decoded[:1])
    decode_s = min(decode() for _ in range(3))
    rows, results = [], {"decode_alone_images_per_s": n / decode_s, "engines": {}}
    for name, runner in runners.items():
        # Best of 2 for each, interleaved, so a load spike on the shared machine hits all three.
        engine_s, inline_s, ahead_s = float("inf"), float("inf"), float("inf")
        for _ in range(2):
            engine_s = min(engine_s, run_engine(runner, decoded))
            inline_s = min(inline_s, pipelined(runner, False))
            ahead_s = min(ahead_s, pipelined(runner, True))
        overlap = (inline_s - ahead_s) / decode_s
        results["engines"][name] = {
            "engine_alone": n / engine_s,
            "decode_then_engine": n / inline_s,
            "decode_ahead": n / ahead_s,
            "overlap": overlap,
        }
        rows.append(
            [name, f"{n / engine_s:.1f}", f"{n / inline_s:.1f}", f"{n / ahead_s:.1f}", f"{overlap:.2f}"]
        )
    print(
        f"decode alone: {n / decode_s:.1f} images/s, {1000 * decode_s / n:.1f} ms per image "
        f"({n} images, 224 px)"
    )
    print(table(rows, ["engine", "engine alone", "decode, then engine", "decode ahead", "overlap"]))
    batch_rows = []
    default = prefix_runner(model, None, OnnxRuntimeEngine()).prepare()
    for batch_size in (16, 32, 64, 128):
        x = torch.randint(0, 256, (batch_size, 3, 224, 224), dtype=torch.uint8)
        default(x)
        repeats = max(2, 256 // batch_size)
        started = time.perf_counter()
        for _ in range(repeats):
            default(x)
        rate = repeats * batch_size / (time.perf_counter() - started)
        results.setdefault("onnxruntime_batch", {})[batch_size] = rate
        batch_rows.append([batch_size, f"{rate:.1f}"])
    print(table(batch_rows, ["batch (ONNX Runtime, default threads)", "images/s"]))
    results["physical_cores"] = cores
    return results


def backbone_part(name: str, train: Any, val: Any, peak: float) -> dict[str, Any]:
    import torch

    import ensemblenet as en
    from ensemblenet.engine import OnnxRuntimeEngine, TorchEngine, prefix_runner
    from ensemblenet.training import compute_features, fit_with_feature_cache

    torch.manual_seed(0)
    base = en.create_model(name, train.classes, head="mlp", weights="DEFAULT")
    gflop = forward_gflop(prefix_runner(base, None, TorchEngine()).module, base.spec.size)  # type: ignore[attr-defined]
    engines = {
        "torch": TorchEngine(),
        "onnxruntime": OnnxRuntimeEngine(),
        "onnxruntime-int8": OnnxRuntimeEngine(int8=True, calibration=train),
    }
    out: dict[str, Any] = {"gflop_per_image": gflop}
    for label, engine in engines.items():
        torch.manual_seed(0)
        model = en.create_model(name, train.classes, head="mlp", weights="DEFAULT")
        started = time.perf_counter()
        runner = prefix_runner(model, None, engine).prepare()  # export / quantize + check
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        val_cache = compute_features(model, val, None, engine=engine)
        val_s = time.perf_counter() - started
        row: dict[str, Any] = {"build_s": build_s, "val_images_per_s": len(val) / val_s}
        if label != "torch":  # the head is trained on the engine's own features (torch: same as fp32)
            train_cache = compute_features(model, train, None, engine=engine)
            trainer = en.Trainer(
                en.TrainConfig(epochs=10, lr=1e-3, batch_size=64, schedule="cosine", progress=False),
                freeze="head_only",
            )
            history = fit_with_feature_cache(trainer, model, train_cache, val_cache)
            row["val_accuracy"] = history.records[-1].val_accuracy
            row["int8_check"] = getattr(runner, "int8_check", None)
        out[label] = row
        print(f"  {name} {label}: {row}", flush=True)
    print_roofline({k: (gflop, out[k]["val_images_per_s"]) for k in engines}, peak)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=600)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--skip-settings", action="store_true")
    args = parser.parse_args()
    import ensemblenet as en

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ENSEMBLENET_CACHE"] = cache  # cold engine cache: exports are part of the cost
        peak = gemm_peak_gflops()
        print(f"fp32 GEMM peak: {peak:.1f} GFLOP/s")
        results: dict[str, Any] = {"gemm_peak_gflops": peak}
        if not args.skip_settings:
            results["settings"] = settings_part(args.images)
        train_all, val_all, _ = en.split_samples(en.scan_folder(DATA), seed=0)
        train, val = train_all.limit(args.train, seed=0), val_all.limit(args.val, seed=0)
        warm_files([str(p) for p in train.paths + val.paths])
        rows = []
        for name in filter(None, args.backbones.split(",")):
            r = backbone_part(name, train, val, peak)
            results[name] = r
            torch_rate = r["torch"]["val_images_per_s"]
            fp32, int8 = r["onnxruntime"], r["onnxruntime-int8"]
            fp32_rate, int8_rate = fp32["val_images_per_s"], int8["val_images_per_s"]
            change = 100 * (int8["val_accuracy"] - fp32["val_accuracy"])
            check = int8["int8_check"] or {}
            nan = float("nan")
            rows.append(
                [
                    name.split(":")[1],
                    f"{torch_rate:.1f}",
                    f"{fp32_rate:.1f} ({fp32_rate / torch_rate:.2f}x)",
                    f"{int8_rate:.1f} ({int8_rate / fp32_rate:.2f}x fp32)",
                    f"{fp32['val_accuracy']:.4f}",
                    f"{int8['val_accuracy']:.4f} ({change:+.2f} pt)",
                    f"{check.get('int8_accuracy', nan):.3f} vs {check.get('float32_accuracy', nan):.3f}",
                ]
            )
    print(
        table(
            rows,
            [
                "backbone",
                "torch img/s",
                "ORT fp32 img/s",
                "ORT int8 img/s",
                f"val acc fp32 ({len(val)})",
                "val acc int8",
                "int8 check (probe)",
            ],
        )
    )
    results["wall_s"] = time.perf_counter() - started
    print_report("engines", args, results)


if __name__ == "__main__":
    main()
