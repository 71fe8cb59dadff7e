"""``ImageDataset``: decode each image once, resize it for every view, never die mid-epoch.

Item ``i`` is one ``uint8`` tensor per distinct *view* (size + interpolation), so ensemble members
that preprocess alike share one tensor, and each member normalizes its own input. A file that
cannot be decoded gives a :class:`Skipped` instead of an exception; the loader drops it from its
batch and counts it. With a :class:`~ensemblenet.data.DecodedCache`, decoded pixels are read back
instead of decoding again.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..spec import InputSpec
from ._augment import Augmentation, AugmentLike, resolve_augment
from ._decode import UnreadableImageError, load_image
from ._decoded_cache import DecodedCache, file_stamp
from ._samples import Samples
from ._views import View

__all__ = ["ImageDataset", "Item", "Skipped", "ViewLike"]

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

    ``augment`` is a preset of :mod:`ensemblenet.data` (``"flip"``, ``"light"``, ``"strong"``;
    ``True`` means ``"flip"``), applied to the resized ``uint8`` views with the same random draws
    for every view (so every member sees the same picture), after the decoded-image cache. The
    draws come from torch's RNG: in DataLoader workers it is seeded from the loader's generator;
    with ``num_workers=0`` it is the global RNG, so seed it with ``torch.manual_seed`` for
    reproducible augmentation.
    """

    def __init__(
        self,
        samples: Samples,
        views: ViewLike | Sequence[ViewLike],
        *,
        augment: AugmentLike = False,
        cache: DecodedCache | str | os.PathLike[str] | None = None,
        fast_decode: bool = False,
    ) -> None:
        if not isinstance(samples, Samples):
            raise ConfigError(f"ImageDataset needs a Samples (see scan_folder), got {type(samples).__name__}")
        self.samples = samples
        self.views: tuple[View, ...] = _as_views(views)
        self.augmentation: Augmentation | None = resolve_augment(augment)
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
            return self._cached_item(index)
        try:
            image = load_image(path, size=self._draft_size())
        except UnreadableImageError as exc:
            logger.warning("skipping image %s: %s", path, exc.reason)
            return Skipped(index, exc.reason)
        tensors = tuple(view.apply(image) for view in self.views)
        if self.augmentation is not None:
            tensors = self.augmentation(tensors)
        return tensors, self.samples.labels[index], index

    def _draft_size(self) -> tuple[int, int] | None:
        """The size JPEG draft decoding may reduce to (the largest view), when ``fast_decode`` is on."""
        if not self.fast_decode:
            return None
        return max(v.size[0] for v in self.views), max(v.size[1] for v in self.views)

    def _cached_item(self, index: int) -> Item:
        """``self[index]`` read through the caches: decode only the views that miss.

        Augmentation is drawn and applied exactly as in the uncached path, to the same ``uint8``
        tensors (a cache hit returns the pixels that resizing returned when it was stored).
        """
        caches = self._view_caches or ()
        path = self.samples.paths[index]
        stamp = file_stamp(path)
        found = [cache.lookup(index, stamp) for cache in caches]
        reason = next((f for f in found if isinstance(f, str)), None)
        if reason is not None:
            logger.warning("skipping image %s: %s (remembered by the cache)", path, reason)
            return Skipped(index, reason)
        if any(f is None for f in found):
            try:
                image = load_image(path, size=self._draft_size())
            except UnreadableImageError as exc:
                logger.warning("skipping image %s: %s", path, exc.reason)
                for cache in caches:
                    cache.store_unreadable(index, stamp, exc.reason)
                return Skipped(index, exc.reason)
            for v, (view, cache) in enumerate(zip(self.views, caches, strict=True)):
                if found[v] is None:
                    pixels = view.apply(image)
                    cache.store(index, stamp, pixels)
                    found[v] = pixels
        tensors = tuple(t for t in found if isinstance(t, torch.Tensor))
        if self.augmentation is not None:
            tensors = self.augmentation(tensors)
        return tensors, self.samples.labels[index], index
