"""Benchmark: which int8 weight format suits this CPU (u8s8, u8s8 with 7-bit weights, u8u8)?

ONNX Runtime's quantization notes warn that on CPUs without VNNI the u8s8 kernels (VPMADDUBSW)
can saturate their 16-bit sums, and advise ``reduce_range=True`` (7-bit weights) or uint8 weights
(u8u8) there. This measures the three on the frozen backbone of MobileNetV2 and
EfficientNet-Lite0 (offline ImageNet weights), each quantized like ``engine="onnxruntime-int8"``
(ONNX Runtime's pre-processing, QDQ, per-channel weights, uint8 activations, MinMax calibration
on the same ``--calibration`` training images), and reports for ``--images`` validation images of
the Dogs vs Cats split:

* the mean relative error of the features against float32 (``|f_int8 - f_fp32| / |f_fp32|``);
* the accuracy of a nearest-class-mean probe (centroids from the calibration images' features of
  the same graph) -- the library's held-out check;
* images/s of the graph alone on decoded batches of 32 (ONNX Runtime, default threads).

Run (about 8 minutes on the shared 2-core machine of docs/performance.rst)::

    PYTHONPATH=src python benchmarks/int8_variants.py     # --calibration 256 --images 400
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
from _common import DATA, print_report, table, warm_files

BACKBONES = ("torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    import numpy as np
    import onnxruntime as ort
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import ensemblenet as en
    from ensemblenet.data import View, make_loader
    from ensemblenet.engine import cpu_has_vnni, cpu_name, physical_cores, prefix_runner, resolve_engine

    wall0 = time.perf_counter()
    train_all, val_all, _ = en.split_samples(en.scan_folder(DATA), seed=0)
    cal, val = train_all.limit(args.calibration, seed=0), val_all.limit(args.images, seed=0)
    warm_files([str(p) for p in cal.paths + val.paths])
    variants = {
        "u8s8": {"weight_type": q.QuantType.QInt8, "reduce_range": False},
        "u8s8, 7-bit weights (reduce_range)": {"weight_type": q.QuantType.QInt8, "reduce_range": True},
        "u8u8": {"weight_type": q.QuantType.QUInt8, "reduce_range": False},
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    results: dict[str, Any] = {"cpu": cpu_name(), "vnni": cpu_has_vnni()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ENSEMBLENET_CACHE"] = tmp
        for name in BACKBONES:
            model = en.create_model(name, cal.classes, weights="DEFAULT")
            runner = prefix_runner(model, None, resolve_engine("onnxruntime")).prepare()
            fp32_path = next(iter(runner.files.values()))  # type: ignore[attr-defined]
            view = View.of(model.spec)

            def batches(samples: Any, view: View = view) -> tuple[list[np.ndarray], np.ndarray]:
                xs, ys = [], []
                for b in make_loader(samples, view, batch_size=32):
                    xs.append(b.images[0].float().div(255).numpy())
                    ys.append(b.labels.numpy())
                return xs, np.concatenate(ys)

            cal_x, cal_y = batches(cal)
            cal_small = [x[i : i + 4] for x in cal_x for i in range(0, len(x), 4)]  # as the library
            val_x, val_y = batches(val)
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(fp32_path), str(pre))

            def run(path: Path, xs: list[np.ndarray]) -> tuple[np.ndarray, float]:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                session.run(None, {"images": xs[0]})
                started = time.perf_counter()
                out = np.concatenate([session.run(None, {"images": x})[0] for x in xs])
                return out.astype(np.float64), sum(len(x) for x in xs) / (time.perf_counter() - started)

            def probe(
                cal_f: np.ndarray, val_f: np.ndarray, cal_y: np.ndarray = cal_y, val_y: np.ndarray = val_y
            ) -> float:
                def unit(a: np.ndarray) -> np.ndarray:
                    return a / np.linalg.norm(a, axis=1, keepdims=True)

                centroids = np.stack([unit(cal_f)[cal_y == c].mean(0) for c in (0, 1)])
                return float(((unit(val_f) @ centroids.T).argmax(1) == val_y).mean())

            ref_val, fp32_rate = run(fp32_path, val_x)
            ref_cal, _ = run(fp32_path, cal_x)
            results[name] = {
                "float32": {"probe_accuracy": probe(ref_cal, ref_val), "images_per_s": fp32_rate}
            }
            rows.append(
                [name.split(":")[1], "float32", "0", f"{probe(ref_cal, ref_val):.4f}", f"{fp32_rate:.1f}"]
            )
            for label, settings in variants.items():

                class Reader(q.CalibrationDataReader):  # type: ignore[misc]
                    def __init__(self, xs: list[np.ndarray] = cal_small) -> None:
                        self.it = iter(xs)

                    def get_next(self) -> dict[str, np.ndarray] | None:
                        x = next(self.it, None)
                        return None if x is None else {"images": x}

                out = Path(tmp) / "int8.onnx"
                started = time.perf_counter()
                q.quantize_static(
                    str(pre),
                    str(out),
                    Reader(),
                    quant_format=q.QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=q.QuantType.QUInt8,
                    calibrate_method=q.CalibrationMethod.MinMax,
                    **settings,
                )
                build_s = time.perf_counter() - started
                val_f, rate = run(out, val_x)
                cal_f, _ = run(out, cal_x)
                rel = float(
                    (np.linalg.norm(val_f - ref_val, axis=1) / np.linalg.norm(ref_val, axis=1)).mean()
                )
                accuracy = probe(cal_f, val_f)
                results[name][label] = {
                    "relative_error": rel,
                    "probe_accuracy": accuracy,
                    "images_per_s": rate,
                    "build_s": build_s,
                }
                rows.append([name.split(":")[1], label, f"{rel:.3f}", f"{accuracy:.4f}", f"{rate:.1f}"])
                print(rows[-1], flush=True)
    print(f"CPU: {cpu_name()}, VNNI: {cpu_has_vnni()}; {len(val)} validation images, {len(cal)} calibration")
    print(table(rows, ["backbone", "int8 variant", "mean relative error", "probe accuracy", "images/s"]))
    results["wall_s"] = time.perf_counter() - wall0
    print_report("int8_variants", args, results)


if __name__ == "__main__":
    main()
