"""Batches of decoded images: :class:`Batch`, :func:`collate` and :func:`make_loader`.

>>> loader = make_loader(train, [spec_a, spec_b], batch_size=32, shuffle=True)  # doctest: +SKIP

Each batch holds one ``uint8`` tensor per distinct view of the dataset; files that cannot be
decoded are dropped from their batch and listed in :attr:`Batch.skipped`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import ConfigError
from ._augment import AugmentLike
from ._dataset import ImageDataset, Item, Skipped, ViewLike
from ._samples import Samples
from ._views import View

__all__ = ["Batch", "collate", "make_loader"]


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        images: one ``uint8`` ``(N, 3, H, W)`` tensor per view of the dataset, in its order.
        labels: ``int64`` ``(N,)``.
        indices: ``int64`` ``(N,)`` dataset indices of the rows.
        skipped: dataset indices dropped from this batch because they could not be decoded.
    """

    images: tuple[torch.Tensor, ...]
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: list[int]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """The same batch with its tensors on ``device``."""
        return Batch(
            images=tuple(t.to(device, non_blocking=non_blocking) for t in self.images),
            labels=self.labels.to(device, non_blocking=non_blocking),
            indices=self.indices.to(device, non_blocking=non_blocking),
            skipped=list(self.skipped),
        )

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` for custom batch types."""
        return Batch(
            images=tuple(t.pin_memory() for t in self.images),
            labels=self.labels.pin_memory(),
            indices=self.indices.pin_memory(),
            skipped=list(self.skipped),
        )


def collate(items: Sequence[Item], views: Sequence[View] | None = None) -> Batch:
    """Stack dataset items into a :class:`Batch`, dropping and recording :class:`Skipped` ones.

    Args:
        items: what :class:`ImageDataset` returned for each index of the batch.
        views: the dataset's views; only used to give the right ``(0, 3, H, W)`` shapes when every
            item was skipped (without it such a batch has ``images == ()``).
    """
    good = [item for item in items if not isinstance(item, Skipped)]
    skipped = [item.index for item in items if isinstance(item, Skipped)]
    if good:
        images = tuple(_stack([item[0][v] for item in good]) for v in range(len(good[0][0])))
    else:
        images = tuple(torch.empty((0, 3, *view.size), dtype=torch.uint8) for view in views or ())
    return Batch(
        images=images,
        labels=torch.tensor([item[1] for item in good], dtype=torch.int64),
        indices=torch.tensor([item[2] for item in good], dtype=torch.int64),
        skipped=skipped,
    )


def _stack(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack`` of uint8 CPU images, done by numpy: torch's copy runs on its intra-op thread
    pool, which on a busy machine made stacking a batch cost as much as decoding it."""
    if all(t.device.type == "cpu" and not t.requires_grad for t in images):
        return torch.from_numpy(np.stack([t.numpy() for t in images]))
    return torch.stack(list(images))


def make_loader(
    samples: Samples,
    views: ViewLike | Sequence[ViewLike],
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    augment: AugmentLike = False,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    fast_decode: bool = False,
) -> DataLoader[Any]:
    """A DataLoader over ``samples`` that yields :class:`Batch` objects.

    The order is drawn from a ``torch.Generator`` seeded with ``seed``: each new iteration
    (epoch) gets a new order, and the sequence of orders is the same for the same seed. Worker
    processes are seeded from the same generator.

    ``cache_dir`` keeps decoded, resized ``uint8`` images on disk (see
    :class:`~ensemblenet.data.DecodedCache`) so later epochs skip decoding; ``fast_decode`` lets
    JPEGs decode at a reduced scale that is still at least the view size (PIL draft mode; see
    :func:`~ensemblenet.data.load_image`).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(
            f"num_workers must be an int >= 0 (0 = load in the main process), got {num_workers!r}"
        )
    dataset = ImageDataset(samples, views, augment=augment, cache=cache_dir, fast_decode=fast_decode)
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, views=dataset.views),
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )
