"""Fine-tune one model with data parallelism: the same script runs alone or under ``torchrun``.

Nothing in it is distributed-specific: the :class:`~ensemblenet.Trainer` notices torchrun's
environment and trains with DistributedDataParallel (see docs/howto/distributed.rst)::

    # one process
    python examples/distributed_train.py ../shared/data/dogs-vs-cats-200px --limit 200
    # two processes on this machine (CPU: Gloo, GPUs: NCCL, one GPU per process)
    torchrun --standalone --nproc_per_node=2 examples/distributed_train.py \\
        ../shared/data/dogs-vs-cats-200px --limit 200 --batch-size 8

``--batch-size`` is per process: 2 processes x 8 take the same global batch of 16 as 1 x 16.
Rank 0 prints the training throughput of each epoch (the first one also decodes the images).
"""

from __future__ import annotations

import argparse
import logging
import os

import torch

from ensemblenet import ModelCheckpoint, TrainConfig, Trainer, create_model, scan_folder


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="image folder (class sub-folders or Kaggle's flat layout)")
    parser.add_argument("--backbone", default="torchvision:mobilenet_v2")
    parser.add_argument("--freeze", default="bn_only")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--limit", type=int, default=0, help="train on N images (0: all)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/distributed.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    samples = scan_folder(args.data)
    if args.limit:
        samples = samples.limit(min(args.limit, len(samples)), seed=0)
    torch.manual_seed(0)  # the head's initial weights: the same on every rank (DDP also broadcasts rank 0's)
    model = create_model(args.backbone, samples.classes, weights="DEFAULT")
    if args.size != model.spec.size[0]:
        import dataclasses

        from ensemblenet import TransferModel

        spec = dataclasses.replace(model.spec, size=(args.size, args.size))
        model = TransferModel(model.backbone, model.head, dataclasses.replace(model.config, spec=spec))
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=args.device, progress=False)
    trainer = Trainer(config, freeze=args.freeze, callbacks=[ModelCheckpoint(args.out, monitor="train_loss")])
    history = trainer.fit(model, samples)
    if trainer.dist.is_main:
        world, threads = trainer.dist.world_size, torch.get_num_threads()
        print(
            f"{world} process(es) x {threads} thread(s), batch {args.batch_size} per process, "
            f"{os.cpu_count()} cores"
        )
        for record in history.records:
            rate = record.train_images / record.seconds
            print(
                f"epoch {record.epoch}: {record.train_images} images in {record.seconds:.1f}s = "
                f"{rate:.1f} images/s, train loss {record.train_loss:.4f}"
            )


if __name__ == "__main__":
    main()
