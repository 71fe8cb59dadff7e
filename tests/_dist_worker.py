"""Worker for tests/test_distributed.py: run by ``torchrun --nproc_per_node=2`` on CPU (Gloo).

Also imported by the test for the shared pieces (data, model, config), so the single-process reference
trains exactly the same thing. Usage: ``torchrun ... tests/_dist_worker.py OUT_DIR``.

The tiny model has BatchNorm, trained under ``BatchNormOnly(update_stats=False)``: BatchNorm's affine
weights train (the bn_only case), while its statistics stay fixed (eval mode), so a rank normalises with
the same numbers as a single process would; with batch statistics each rank would use its own half of the
global batch and the comparison could not be exact (SyncBatchNorm, the fix, has no CPU kernel).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ensemblenet.models import BatchNormOnly, FreezeUnfreeze, ModelConfig, TransferModel
from ensemblenet.spec import InputSpec
from ensemblenet.training import ModelCheckpoint, TrainConfig, Trainer

TRAIN_N, VAL_N, PER_RANK_BATCH, WORLD = 24, 13, 3, 2  # 13: the ranks get unequal, non-padded shares
CONFIG = TrainConfig(epochs=2, lr=1e-2, batch_size=PER_RANK_BATCH, seed=5, progress=False, device="cpu")
POLICY = BatchNormOnly(update_stats=False)


def tensors(n: int, seed: int) -> TensorDataset:
    """Random uint8 images whose label is 'is the red channel brighter than the blue one'."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = (images[:, 0].float().mean((1, 2)) > images[:, 2].float().mean((1, 2))).long()
    return TensorDataset(images, labels)


def build_model() -> TransferModel:
    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    config = ModelConfig(
        backbone="test:tiny",
        head={"name": "linear", "dropout": 0.0},
        classes=("a", "b"),
        spec=InputSpec(size=(16, 16)),
        num_features=8,
    )
    return TransferModel(backbone, nn.Linear(8, 2), config)


def loaders() -> tuple[DataLoader[tuple[torch.Tensor, ...]], DataLoader[tuple[torch.Tensor, ...]]]:
    train = DataLoader(tensors(TRAIN_N, 1), batch_size=PER_RANK_BATCH, shuffle=True)
    return train, DataLoader(tensors(VAL_N, 2), batch_size=4)


def main(out: Path) -> None:
    rank = int(os.environ["RANK"])
    train, val = loaders()

    # 1. Training with every kind of file the library writes, each rank pointed at its own folder:
    # anything in rank1/ afterwards is a write by a non-zero rank.
    mine = out / f"rank{rank}"
    mine.mkdir(parents=True)
    model = build_model()
    saver = ModelCheckpoint(mine / "best.pt", restore_best=False, last_path=mine / "last.pt")
    trainer = Trainer(CONFIG, freeze=POLICY, callbacks=[saver], state_path=mine / "state.pt")
    history = trainer.fit(model, train, val)
    final = trainer.evaluate(model, val)

    # 2. Resume under torchrun: one epoch into a shared state file, then a fresh run resumes from it.
    shared = out / "shared_state.pt"
    Trainer(dataclasses.replace(CONFIG, epochs=1), freeze=POLICY, state_path=shared).fit(
        build_model(), train, val
    )
    resumed = build_model()
    Trainer(CONFIG, freeze=POLICY).fit(resumed, train, val, resume=shared)

    # 3. freeze_unfreeze changes the trainable set between epochs (DDP is re-wrapped), with BatchNorm
    # in train mode in epoch 2: the ranks must still end with identical weights.
    unfrozen = build_model()
    Trainer(CONFIG, freeze=FreezeUnfreeze(freeze_epochs=1)).fit(unfrozen, train)

    torch.save(
        {
            "world": [trainer.dist.rank, trainer.dist.world_size],
            "state_dict": model.state_dict(),
            "history": history.to_dict(),
            "final": dataclasses.asdict(final),
            "resumed": resumed.state_dict(),
            "unfrozen": unfrozen.state_dict(),
        },
        out / f"result{rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
