"""Data-parallel training on PyTorch's own engine: ``torch.distributed``, launched by ``torchrun``.

The :class:`~ensemblenet.Trainer` runs unchanged under ``torchrun --nproc_per_node=N script.py``:
it reads the launcher's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` variables through
:meth:`DistContext.from_env` and then

* initialises the default process group (NCCL on CUDA, Gloo on CPU) with torchrun's ``env://``
  rendezvous, and puts each process on ``cuda:LOCAL_RANK`` when training on GPUs;
* trains through :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged across
  ranks), re-wrapping only when a freeze policy changes the set of trainable parameters (DDP
  registers its gradient hooks on the parameters that require grad when it is built, so
  ``freeze_unfreeze``'s second phase needs a new wrapper; re-wrapping costs one broadcast and
  avoids ``find_unused_parameters=True``, which would search the graph on every step);
* shards the training data with a :class:`~torch.utils.data.DistributedSampler` seeded with
  ``TrainConfig.seed`` and told the epoch (``set_epoch``), so epoch *k*'s order depends on
  ``(seed, k)`` only, as in single-process training, and a resumed run sees the same batches;
* evaluates on contiguous, non-overlapping shards (no padding duplicates, unlike
  ``DistributedSampler``) and all-reduces loss sums, correct counts and image counts, so the
  reported loss and accuracy equal a single-process evaluation of the same data;
* writes files (state, checkpoints) on rank 0 only, shows progress bars on rank 0 only, and
  waits at a barrier at the end of ``fit`` so no rank returns before rank 0's files are complete.

Outside ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) everything here is a no-op.

>>> ctx = DistContext.from_env()   # a plain python process: one rank
>>> ctx.enabled, ctx.is_main, ctx.world_size
(False, True, 1)
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

from ..errors import ConfigError

__all__ = ["DistContext", "ShardSampler", "barrier", "is_main_process"]

log = logging.getLogger("ensemblenet.training")


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """True outside distributed training and on rank 0 inside it: the process that writes files."""
    return not _initialized() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op outside distributed training)."""
    if not _initialized():
        return
    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s contiguous slice of ``indices``: every index exactly once across the ranks.

    ``DistributedSampler`` pads the index list so every rank gets the same count, which double-counts
    a few images in an evaluation; evaluation needs no equal counts (there is no gradient all-reduce),
    so this sampler gives ranks slices whose sizes differ by at most one.
    """

    def __init__(self, indices: Sequence[int], rank: int, world_size: int) -> None:
        n = len(indices)
        self.indices = list(indices[rank * n // world_size : (rank + 1) * n // world_size])

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a ``torch.distributed`` job (one rank of one when there is none).

    Attributes:
        rank: global rank (0 writes files).
        world_size: number of processes; 1 means not distributed.
        local_rank: rank on this node (selects ``cuda:local_rank``).
        backend: ``"nccl"``, ``"gloo"``, or None when not distributed.
        find_unused_parameters: passed to DDP; needed only for models whose forward skips some
            trainable parameters (the freeze policies do not need it, see the module docs). Set it with
            ``trainer.dist = dataclasses.replace(trainer.dist, find_unused_parameters=True)``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    find_unused_parameters: bool = False

    @property
    def enabled(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device | str | None = None) -> DistContext:
        """Join the job ``torchrun`` started (initialising the process group once), or return one rank.

        Args:
            device: the training device: ``cuda`` selects the NCCL backend, anything else Gloo.

        Raises:
            ConfigError: ``WORLD_SIZE`` > 1 without ``RANK`` (not started by torchrun or a compatible
                launcher), or NCCL requested where it is not available.
        """
        if _initialized():
            return cls(
                rank=dist.get_rank(),
                world_size=dist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                backend=str(dist.get_backend()),
            )
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None
        if world_size <= 1:
            return cls()
        missing = [v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise ConfigError(
                f"WORLD_SIZE={world_size} but {missing} are not set; start distributed training with "
                "torchrun (e.g. `torchrun --nproc_per_node=2 train.py`), which sets them"
            )
        if not dist.is_available():
            raise ConfigError("this PyTorch build has no torch.distributed; install a build that has it")
        local_rank = int(os.environ["LOCAL_RANK"])
        cuda = torch.device(device if device is not None else "cpu").type == "cuda"
        backend = "nccl" if cuda else "gloo"
        if cuda:
            if not dist.is_nccl_available():
                raise ConfigError("training on CUDA under torchrun needs NCCL, which this build lacks")
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)  # env:// rendezvous: torchrun set MASTER_ADDR/PORT, RANK...
        atexit.register(_shutdown)
        ctx = cls(
            rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, backend=backend
        )
        log.info("joined a %s job: rank %d of %d (local rank %d)", backend, ctx.rank, world_size, local_rank)
        return ctx

    def device_for(self, device: torch.device) -> torch.device:
        """``cuda`` (no index) becomes ``cuda:LOCAL_RANK`` under torchrun: one GPU per process."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    # ------------------------------------------------------------------ data
    def train_loader(self, loader: DataLoader[Any], seed: int) -> DataLoader[Any]:
        """``loader`` with a ``DistributedSampler`` (shuffled when ``loader`` shuffles) for this rank.

        A loader that already has a ``DistributedSampler`` is returned as is.
        """
        if not self.enabled or _has_distributed_sampler(loader):
            return loader
        _check_shardable(loader)
        sampler: DistributedSampler[Any] = DistributedSampler(
            loader.dataset,
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=isinstance(loader.sampler, RandomSampler),
            seed=seed,
        )
        return _with_sampler(loader, sampler)

    def eval_loader(self, loader: DataLoader[Any]) -> DataLoader[Any]:
        """``loader`` limited to this rank's contiguous share of its indices (see :class:`ShardSampler`)."""
        if not self.enabled or _has_distributed_sampler(loader):
            return loader
        _check_shardable(loader)
        # Sorted: a shuffling sampler draws its own order on each rank, but the set of indices is the
        # same, and an evaluation's sums do not depend on the order.
        indices = sorted(iter(loader.sampler))
        return _with_sampler(loader, ShardSampler(indices, self.rank, self.world_size))

    @staticmethod
    def set_epoch(loader: DataLoader[Any], epoch: int) -> None:
        """Tell the loader's sampler (or batch sampler) the epoch, when it wants to know (``set_epoch``)."""
        for sampler in (loader.sampler, loader.batch_sampler, getattr(loader.batch_sampler, "sampler", None)):
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
                return

    # ------------------------------------------------------------------ model
    def wrap(self, model: nn.Module, previous: nn.Module | None = None) -> nn.Module:
        """The module to call for training: ``model`` itself, or a DDP wrapper of it.

        ``previous`` (the last wrapper) is reused while the set of trainable parameters is unchanged.
        """
        if not self.enabled:
            return model
        trainable = tuple(p for p in model.parameters() if p.requires_grad)
        if not trainable:
            return model  # DDP refuses a module with nothing to train; there is nothing to average
        if (
            isinstance(previous, nn.parallel.DistributedDataParallel)
            and previous.module is model
            and getattr(previous, "_ensemblenet_trainable", None) == tuple(map(id, trainable))
        ):
            return previous
        device = next(iter(trainable)).device
        ddp = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters,
        )
        ddp._ensemblenet_trainable = tuple(map(id, trainable))  # type: ignore[assignment]
        return ddp

    def broadcast_model(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (e.g. after restoring a best checkpoint)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in model.state_dict().values():
                dist.broadcast(tensor, src=0)

    def sum(self, *values: float) -> tuple[float, ...]:
        """Element-wise sums over the ranks (float64, so counts below 2**53 stay exact)."""
        if not self.enabled:
            return tuple(float(v) for v in values)
        device = torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else None
        totals = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        return tuple(float(v) for v in totals.tolist())

    def barrier(self) -> None:
        """Wait for every rank (no-op with one)."""
        if self.enabled:
            barrier()

    def replace(self, **changes: Any) -> DistContext:
        """A copy with ``changes`` (e.g. ``find_unused_parameters=True``)."""
        return dataclasses.replace(self, **changes)


def _shutdown() -> None:
    if _initialized():
        dist.destroy_process_group()


def _has_distributed_sampler(loader: DataLoader[Any]) -> bool:
    return isinstance(loader.sampler, DistributedSampler) or isinstance(
        getattr(loader.batch_sampler, "sampler", None), DistributedSampler
    )


def _check_shardable(loader: DataLoader[Any]) -> None:
    if isinstance(loader.dataset, IterableDataset):
        raise ConfigError(
            "cannot shard an IterableDataset across torchrun ranks; split the stream per rank yourself "
            "(torch.distributed.get_rank()) or pass a map-style dataset"
        )
    if loader.batch_size is None:
        raise ConfigError(
            "cannot shard a DataLoader built with a custom batch_sampler across torchrun ranks; give it a "
            "torch.utils.data.DistributedSampler (or pass Samples and let the Trainer build the loader)"
        )


def _with_sampler(loader: DataLoader[Any], sampler: Sampler[int]) -> DataLoader[Any]:
    workers: dict[str, Any] = {}
    if loader.num_workers > 0:
        workers = {
            "prefetch_factor": loader.prefetch_factor,
            "persistent_workers": loader.persistent_workers,
            "multiprocessing_context": loader.multiprocessing_context,
        }
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        **workers,
    )
