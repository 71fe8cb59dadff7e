"""Where to cut each offline backbone: head only, the last stage(s) on a cached prefix, or BatchNorm.

For each backbone, :func:`ensemblenet.choose_freeze` fine-tunes one model per freeze policy on the
same split of a Dogs vs Cats subset and keeps the one with the lowest validation loss; the table
shows every candidate's validation numbers (what decides) and, for information only, its test
numbers. ``head_only`` and ``freeze_stages(-k)`` train on cached features (the frozen prefix runs
once per image); ``bn_only`` runs the whole backbone forwards and backwards every epoch, so it gets
the reference notebook's 2 epochs (``--bn-epochs``) instead of the recipe's.

    python benchmarks/partial_finetune.py --limit 2000 --recipe strong
    python benchmarks/partial_finetune.py --limit 2000 --backbones timm:tf_efficientnet_lite0 --cuts 1,2

``--split RUN/split.json`` uses a saved split as it is (e.g. the full-folder run's, so the
candidates compare with that run's members); ``--lr-scale 0.1`` trains the stages at a tenth of
the head's learning rate (``FreezeStages(-k, backbone_lr_scale=0.1)``); ``--no-head-only`` leaves
out the head-only candidate when that run already trained it on the same split.

Prints one Markdown table per backbone and one JSON document (with the hardware).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from _common import DATA, REPO, hardware

from ensemblenet import FreezeStages, choose_freeze, scan_folder
from ensemblenet.data import load_split


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--limit", type=int, default=2000, help="images used before the split (0: all)")
    parser.add_argument("--backbones", default="torchvision:mobilenet_v2,timm:tf_efficientnet_lite0")
    parser.add_argument("--cuts", default="1,2", help="k for FreezeStages(-k): train the last k stages")
    parser.add_argument(
        "--bn-epochs", type=int, default=2, help="epochs of the bn_only candidate (0: skip it)"
    )
    parser.add_argument("--split", type=Path, help="a saved split.json to use instead of cutting --data")
    parser.add_argument(
        "--lr-scale", type=float, default=1.0, help="backbone_lr_scale of the stage candidates"
    )
    parser.add_argument("--no-head-only", action="store_true", help="leave out the head_only candidate")
    parser.add_argument(
        "--patience", type=int, help="stop a candidate after this many epochs without improvement"
    )
    parser.add_argument("--recipe", default="strong")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "partial_finetune")
    args = parser.parse_args()

    if args.split:
        samples: Any = load_split(args.split)
    else:
        samples = scan_folder(args.data)
        if args.limit:
            samples = samples.limit(min(args.limit, len(samples)), seed=args.seed)
    stages = [FreezeStages(-int(k), backbone_lr_scale=args.lr_scale) for k in args.cuts.split(",") if k]
    candidates: list[Any] = [*([] if args.no_head_only else ["head_only"]), *stages]
    if args.bn_epochs:
        candidates.append(("bn_only", {"epochs": args.bn_epochs}))
    results: dict[str, Any] = {
        "hardware": hardware(), "limit": args.limit, "split": str(args.split or ""), "recipe": args.recipe,
        "runs": {},
    }  # fmt: skip
    for backbone in args.backbones.split(","):
        started = time.perf_counter()
        choice = choose_freeze(
            backbone,
            samples,
            candidates,
            recipe=args.recipe,
            seed=args.seed,
            out_dir=args.out,
            progress=False,
            **({"patience": args.patience} if args.patience else {}),
        )
        print(f"\n{backbone} ({time.perf_counter() - started:.0f} s)\n\n{choice.table()}\n", flush=True)
        results["runs"][backbone] = {"chosen": choice.label, "rows": choice.rows()}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
