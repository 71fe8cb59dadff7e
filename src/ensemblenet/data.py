"""Image folders, deterministic stratified splits, and a dataset/loader that never dies mid-epoch.

Two layouts are understood::

    folders:  root/cats/cat.1.jpg, root/dogs/dog.7.png ...   (one sub-folder per class)
    kaggle:   root/cat.1.jpg, root/dog.7.jpg ...             (flat, class = text before the first dot)

>>> samples = scan_folder("../shared/data/dogs-vs-cats-200px")  # doctest: +SKIP
>>> train, val, test = split_samples(samples, seed=0)  # doctest: +SKIP
>>> loader = make_loader(train, [spec_a, spec_b], batch_size=32, shuffle=True)  # doctest: +SKIP

Each batch holds one ``uint8`` tensor per distinct *view* (size + interpolation), so ensemble
members that preprocess alike share one tensor, and each member normalizes its own input. Files
that cannot be decoded are dropped from their batch and listed in :attr:`Batch.skipped`.
Scanning lives in :mod:`ensemblenet.scan`, splitting in :mod:`ensemblenet.samples` and decoding in
:mod:`ensemblenet.images`;
their public names are re-exported here, so ``from ensemblenet.data import ...`` is all you need.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .cache import DecodedCache, cached_item
from .errors import ConfigError
from .images import UnreadableImageError, View, check_image, load_image
from .samples import DEFAULT_SPLIT, Samples, describe_skipped, split_samples
from .scan import IMAGE_EXTENSIONS, LAYOUTS, list_image_files, scan_folder
from .spec import InputSpec

__all__ = [
    "DEFAULT_SPLIT",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "Batch",
    "ImageDataset",
    "Samples",
    "Skipped",
    "UnreadableImageError",
    "View",
    "check_image",
    "collate",
    "describe_skipped",
    "list_image_files",
    "load_image",
    "make_loader",
    "scan_folder",
    "split_samples",
]

logger = logging.getLogger("ensemblenet.data")

ViewLike: TypeAlias = InputSpec | View


@dataclass(frozen=True)
class Skipped:
    """What the dataset returns instead of raising for a file that cannot be decoded."""

    index: int
    reason: str


#: What ``ImageDataset[i]`` returns: (one tensor per view, label, i), or Skipped.
Item: TypeAlias = tuple[tuple[torch.Tensor, ...], int, int] | Skipped


def _as_views(views: ViewLike | Sequence[ViewLike]) -> tuple[View, ...]:
    items: Sequence[ViewLike] = [views] if isinstance(views, (InputSpec, View)) else views
    distinct: dict[View, None] = {}  # dict keeps first-seen order
    for item in items:
        distinct.setdefault(View.of(item), None)
    if not distinct:
        raise ConfigError("ImageDataset needs at least one InputSpec or View, got an empty sequence")
    return tuple(distinct)


class ImageDataset(Dataset[Item]):
    """Decode each image once and resize it for every distinct view.

    Item ``i`` is ``(tensors, label, i)`` with one ``uint8`` ``(3, H, W)`` tensor per entry of
    :attr:`views`, or :class:`Skipped` when the file cannot be decoded (logged as a WARNING):
    one bad file must not end an epoch.

    With ``augment=True`` the decoded image is flipped left-right with probability 0.5, once for
    all views (so every member sees the same picture). The coin comes from torch's RNG: in
    DataLoader workers it is seeded from the loader's generator; with ``num_workers=0`` it is the
    global RNG, so seed it with ``torch.manual_seed`` for reproducible flips.
    """

    def __init__(
        self,
        samples: Samples,
        views: ViewLike | Sequence[ViewLike],
        *,
        augment: bool = False,
        cache: DecodedCache | str | os.PathLike[str] | None = None,
        fast_decode: bool = False,
    ) -> None:
        if not isinstance(samples, Samples):
            raise ConfigError(f"ImageDataset needs a Samples (see scan_folder), got {type(samples).__name__}")
        self.samples = samples
        self.views: tuple[View, ...] = _as_views(views)
        self.augment = bool(augment)
        self.fast_decode = bool(fast_decode)
        if cache is not None and not isinstance(cache, DecodedCache):
            cache = DecodedCache(cache)
        self.cache: DecodedCache | None = cache
        self._view_caches = (
            None
            if cache is None
            else tuple(cache.view_cache(samples.paths, v.size, v.interpolation) for v in self.views)
        )

    def __len__(self) -> int:
        return len(self.samples)

    def view_index(self, spec_or_view: ViewLike) -> int:
        """Position in each item's (and batch's) tensors of the view that ``spec_or_view`` needs."""
        view = View.of(spec_or_view)
        try:
            return self.views.index(view)
        except ValueError:
            raise ConfigError(
                f"{view} is not one of this dataset's views {list(self.views)}; "
                "build the dataset/loader with every member's input spec"
            ) from None

    def __getitem__(self, i: int) -> Item:
        index = operator.index(i)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):  # IndexError, as the Dataset protocol expects
            raise IndexError(f"index {i} is out of range for a dataset of {len(self)} images")
        path = self.samples.paths[index]
        if self._view_caches is not None:
            return cached_item(self, index)
        try:
            image = load_image(path, size=self._draft_size())
        except UnreadableImageError as exc:
            logger.warning("skipping image %s: %s", path, exc.reason)
            return Skipped(index, exc.reason)
        if self.augment and bool(torch.rand(()) < 0.5):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        tensors = tuple(view.apply(image) for view in self.views)
        return tensors, self.samples.labels[index], index

    def _draft_size(self) -> tuple[int, int] | None:
        """The size JPEG draft decoding may reduce to (the largest view), when ``fast_decode`` is on."""
        if not self.fast_decode:
            return None
        return max(v.size[0] for v in self.views), max(v.size[1] for v in self.views)


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
        images = tuple(torch.stack([item[0][v] for item in good]) for v in range(len(good[0][0])))
    else:
        images = tuple(torch.empty((0, 3, *view.size), dtype=torch.uint8) for view in views or ())
    return Batch(
        images=images,
        labels=torch.tensor([item[1] for item in good], dtype=torch.int64),
        indices=torch.tensor([item[2] for item in good], dtype=torch.int64),
        skipped=skipped,
    )


def make_loader(
    samples: Samples,
    views: ViewLike | Sequence[ViewLike],
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    augment: bool = False,
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

    ``cache_dir`` keeps decoded, resized ``uint8`` images on disk (see :mod:`ensemblenet.cache`)
    so later epochs skip decoding; ``fast_decode`` lets JPEGs decode at a reduced scale that is
    still at least the view size (PIL draft mode; see :func:`~ensemblenet.data.load_image`).
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
