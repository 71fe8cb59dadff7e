"""Does a head trained on cached features memorize them? Validation log-loss per epoch, per head.

The backbone's features of a Dogs vs Cats subset are computed once (frozen backbone in eval mode,
the frozen-feature cache); then heads with different regularization are trained on the same cached
features for the same epochs, and each epoch's validation log-loss and accuracy are printed. A
head that memorizes shows a validation loss that is lowest early and rises while the training loss
keeps falling. Only the training and validation splits are used (settings are chosen on
validation, never on a test split).

    python benchmarks/head_regularization.py --limit 4000 --backbone timm:tf_efficientnet_lite0

Prints one table (per head: validation loss at epochs 1, 2 and the last, the best epoch, the
rise from the best to the last epoch, the final accuracy) and one JSON document.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

import torch
from _common import DATA, hardware

from ensemblenet import TrainConfig, Trainer, create_model, fit_with_feature_cache, scan_folder, split_samples
from ensemblenet.models import TransferModel, resolve_head
from ensemblenet.training import compute_features

# name -> (head settings, optimizer, weight decay, label smoothing)
RELU = {"name": "mlp", "activation": "relu"}
HEADS: dict[str, tuple[dict[str, Any], str, float, float]] = {
    "mlp (0.1 default)": ({"name": "mlp"}, "adam", 0.0, 0.0),
    "mlp relu, dropout 0.2, adamw 0.01": ({**RELU, "dropout": 0.2}, "adamw", 0.01, 0.0),
    "mlp relu, dropout 0.5, adamw 0.05": ({**RELU, "dropout": 0.5}, "adamw", 0.05, 0.0),
    "linear, dropout 0.2, adamw 0.01": ({"name": "linear", "dropout": 0.2}, "adamw", 0.01, 0.0),
    "linear, dropout 0.5, adamw 0.05, ls 0.1": ({"name": "linear", "dropout": 0.5}, "adamw", 0.05, 0.1),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--limit", type=int, default=4000, help="images used before the split (0: all)")
    parser.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    samples = scan_folder(args.data)
    if args.limit:
        samples = samples.limit(min(args.limit, len(samples)), seed=args.seed)
    train, val, _test = split_samples(samples, seed=args.seed)  # the test split is never touched
    model = create_model(args.backbone, samples.classes, weights="DEFAULT")
    started = time.perf_counter()
    train_cache = compute_features(model, train, None)
    val_cache = compute_features(model, val, None)
    feature_seconds = time.perf_counter() - started

    rows = []
    for name, (head, optimizer, weight_decay, smoothing) in HEADS.items():
        torch.manual_seed(args.seed)
        config = dataclasses.replace(model.config, head=head)
        built = resolve_head(head).build(model.config.num_features, len(samples.classes))
        member = TransferModel(model.backbone, built, config)
        trainer = Trainer(
            TrainConfig(
                epochs=args.epochs,
                lr=args.lr,
                batch_size=args.batch_size,
                optimizer=optimizer,
                weight_decay=weight_decay,
                label_smoothing=smoothing,
                schedule="cosine",
                seed=args.seed,
                progress=False,
            ),
            freeze="head_only",
        )
        history = fit_with_feature_cache(trainer, member, train_cache, val_cache)
        losses = [r.val_loss for r in history.records]
        best = min(range(len(losses)), key=losses.__getitem__)
        rows.append(
            {
                "head": name,
                "val_loss": losses,
                "train_loss": [r.train_loss for r in history.records],
                "val_accuracy": [r.val_accuracy for r in history.records],
                "best_epoch": best + 1,
                "rise_after_best": losses[-1] - losses[best],
            }
        )

    print(
        f"{args.backbone}: {len(train)} train / {len(val)} val images of {args.data}; features "
        f"{feature_seconds:.0f} s; {args.epochs} epochs, cosine, lr {args.lr}, batch {args.batch_size}"
    )
    print(f"{'head':42} {'val@1':>7} {'val@2':>7} {'val@last':>8} {'best ep':>7} {'rise':>7} {'acc@last':>8}")
    for r in rows:
        v = r["val_loss"]
        print(
            f"{r['head']:42} {v[0]:7.4f} {v[1]:7.4f} {v[-1]:8.4f} {r['best_epoch']:7d} "
            f"{r['rise_after_best']:7.4f} {r['val_accuracy'][-1]:8.4f}"
        )
    print(json.dumps({"hardware": hardware(), "args": vars(args), "rows": rows}, default=str))


if __name__ == "__main__":
    main()
