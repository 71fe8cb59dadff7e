"""Benchmark 3: inference images/s of a 2-member ensemble (MobileNetV2 + EfficientNet-Lite0).

Both members start from their offline ImageNet weights, each with a new (untrained)
Linear(F, 512) -> Linear(512, 2) head; every side computes the same thing from the same JPEG files
(``--images``, decoded at batch 32, end to end: decoding, resizing, both networks, the mean):

  plain        eager PyTorch as the notebook writes it: a Dataset that decodes each image once and
               applies each member's torchvision transform (Resize, ToTensor, Normalize), then
               ``with torch.no_grad()`` each network in its default (NCHW) layout, softmax, mean.
  ensemblenet  ``Ensemble([...]).predict_proba(samples)``: members share one decoded batch, each
               normalizes its own input; default layout.
  ens_fast     the same after ``optimize_for_cpu(ensemble)`` (channels-last weights).
  onnxruntime  ``export_onnx(ensemble, uint8 input)`` run with ONNX Runtime (2 threads) on batches
               from ``make_loader`` (EfficientNet-Lite0's bicubic resize becomes the shared bilinear
               view inside the graph, so its probabilities differ slightly; see export.py).

Sides take turns for ``--rounds`` rounds (the first also warms up); the table shows each side's
best round.

Run (8 minutes on the shared 2-core machine of docs/performance.rst)::

    PYTHONPATH=src python benchmarks/inference.py            # --images 256 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, pick, print_report, table, warm_files

SIDES = ("plain", "ensemblenet", "ens_fast", "onnxruntime")


def build(items: list[tuple[str, int]], sides: tuple[str, ...], tmp: str) -> dict[str, Any]:
    """A callable per side that processes every image once and returns (N, 2) probabilities."""
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    import ensemblenet as en
    from ensemblenet.data import make_loader
    from ensemblenet.ensemble import optimize_for_cpu

    torch.manual_seed(0)
    names = ("torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0")
    members = [en.create_model(n, ("cats", "dogs"), head="mlp", weights="DEFAULT").eval() for n in names]
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
            for m in members
        ]
        nets = [nn.Sequential(copy.deepcopy(m.backbone), copy.deepcopy(m.head)).eval() for m in members]

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

    if "ensemblenet" in sides:
        default = en.Ensemble([copy.deepcopy(m) for m in members])
        runs["ensemblenet"] = lambda: default.predict_proba(samples, batch_size=32, progress=False)
    if "ens_fast" in sides:
        fast = optimize_for_cpu(en.Ensemble([copy.deepcopy(m) for m in members]))
        runs["ens_fast"] = lambda: fast.predict_proba(samples, batch_size=32, progress=False)
    if "onnxruntime" in sides:
        import onnxruntime as ort

        from ensemblenet.ensemble import export_onnx

        path = Path(tmp) / "ensemble.onnx"
        export_onnx(en.Ensemble([copy.deepcopy(m) for m in members]), path, input_dtype="uint8")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def onnx() -> Any:
            out = []
            for batch in make_loader(samples, members[0].spec, batch_size=32):
                (probs,) = session.run(["probs"], {"images": batch.images[0].numpy()})
                out.append(torch.from_numpy(probs))
            return torch.cat(out)

        runs["onnxruntime"] = onnx
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--only", choices=SIDES, help="run one side once and print its peak RSS (for memory.py)"
    )
    args = parser.parse_args()
    items = pick(args.images, offset=3000)
    warm_files([p for p, _ in items])
    sides = (args.only,) if args.only else SIDES
    with tempfile.TemporaryDirectory() as tmp:
        runs = build(items, sides, tmp)
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        outputs: dict[str, Any] = {}
        for _ in range(1 if args.only else args.rounds):
            for side in sides:
                started = time.perf_counter()
                outputs[side] = runs[side]()
                seconds[side].append(time.perf_counter() - started)
    if args.only:
        return emit({"side": args.only, "images_per_s": len(items) / seconds[args.only][0]})
    results = {}
    base = len(items) / min(seconds["plain"])
    rows = []
    for side in sides:
        best = len(items) / min(seconds[side])
        diff = float((outputs[side].double() - outputs["plain"].double()).abs().max())
        results[side] = {"seconds": seconds[side], "images_per_s": best, "max_abs_diff_vs_plain": diff}
        rows.append([side, f"{best:.1f}", f"{best / base:.2f}x", f"{diff:.1e}"])
    print(table(rows, ["side", "images/s (best round)", "vs plain", "max |p - p_plain|"]))
    print_report("inference", args, results)


if __name__ == "__main__":
    main()
