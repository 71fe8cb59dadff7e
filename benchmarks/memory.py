"""Benchmark 4: peak resident memory (RSS) of each side of the training and inference benchmarks.

Each side runs alone in a fresh interpreter (``train_throughput.py --only SIDE``: one epoch over
``--images`` images at batch 32; ``inference.py --only SIDE``: one pass over ``--images`` images
with the members and engines that one ``inference.py --prepare`` run trained and built first, so
the inference sides measure deployment, not training or int8 calibration), and reports
``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the whole process, libraries and models included.
Each side's images/s is shown with its roofline (achieved GFLOP/s against the fp32 GEMM peak).

Run (about 4 minutes on the shared 2-core machine of docs/performance.rst)::

    PYTHONPATH=src python benchmarks/memory.py            # --images 64
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import forward_gflop, gemm_peak_gflops, print_report, print_roofline, run_side, step_gflop, table

HERE = Path(__file__).resolve().parent
JOBS = [
    ("training", "train_throughput.py", ("plain", "ensemblenet", "ens_nocl")),
    ("inference", "inference.py", ("plain", "torch", "onnxruntime", "int8")),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    import torch
    import torchvision

    import ensemblenet as en

    peak = gemm_peak_gflops()
    results: dict[str, dict[str, object]] = {}
    rows, roofline = [], {}
    with tempfile.TemporaryDirectory() as members:
        prepare = ["--members-dir", members, "--images", str(args.images)]
        subprocess.run(
            [sys.executable, str(HERE / "inference.py"), *prepare, "--prepare"],
            env=dict(os.environ, PYTHONPATH=str(HERE.parent / "src")),
            check=True,
            capture_output=True,
        )
        for task, script, sides in JOBS:
            for side in sides:
                extra = ["--images", str(args.images)]
                extra += ["--epochs", "1"] if task == "training" else ["--members-dir", members]
                r = run_side(str(HERE / script), side, extra)
                results[f"{task}/{side}"] = r
                rate = r.get("images_per_s") or r["images"] / sum(r["epoch_seconds"])  # type: ignore[operator]
                roofline[f"{task}/{side}"] = rate
                rows.append([task, side, f"{r['peak_rss_mib']:.0f}", f"{r['process_seconds']:.0f}"])
    print(table(rows, ["task", "side", "peak RSS MiB", "process s"]))
    # FLOPs per image: a BatchNorm-only training step of MobileNetV2, a forward pass of both members.
    torch.manual_seed(0)
    train_model = torchvision.models.mobilenet_v2()
    for module in train_model.modules():
        for p in module.parameters(recurse=False):
            p.requires_grad = isinstance(module, torch.nn.BatchNorm2d)
    step = step_gflop(train_model, (224, 224), classes=1000)
    names = ("torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0")
    forward = sum(forward_gflop(en.create_model(n, ("a", "b")).eval(), (224, 224)) for n in names)
    sides = {k: (step if k.startswith("training") else forward, float(v)) for k, v in roofline.items()}  # type: ignore[arg-type]
    results["roofline"] = print_roofline(sides, peak)  # type: ignore[assignment]
    print_report("memory", args, results)


if __name__ == "__main__":
    main()
