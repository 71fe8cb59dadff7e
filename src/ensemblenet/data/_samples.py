"""``Samples`` (labelled image paths) and deterministic, stratified splits of them."""

from __future__ import annotations

import operator
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["DEFAULT_SPLIT", "Samples", "describe_skipped", "split_samples"]

#: The reference notebook's train/validation/test proportions (16,000 / 4,500 / 4,500 of 25,000).
DEFAULT_SPLIT: tuple[float, float, float] = (16000 / 25000, 4500 / 25000, 4500 / 25000)
_SHOWN = 5  # how many file names a message lists before "and N more"
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
IntArray = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True, repr=False)
class Samples:
    """Image paths with integer labels into ``classes``; what :func:`scan_folder` finds.

    ``skipped`` lists files rejected at scan time with the reason. It describes the scan and is not
    carried by :meth:`subset`, :meth:`limit` or :func:`split_samples`.
    """

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    skipped: tuple[tuple[Path, str], ...] = ()

    def __post_init__(self) -> None:
        # Accept lists and strings from callers building Samples by hand; store canonical tuples.
        object.__setattr__(self, "paths", tuple(p if isinstance(p, Path) else Path(p) for p in self.paths))
        object.__setattr__(self, "labels", tuple(operator.index(label) for label in self.labels))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "skipped", tuple((Path(p), str(r)) for p, r in self.skipped))
        if len(self.paths) != len(self.labels):
            raise DataError(
                f"Samples needs one label per path: got {len(self.paths)} paths, {len(self.labels)} labels"
            )
        if len(set(self.classes)) != len(self.classes) or not all(self.classes):
            raise DataError(f"Samples.classes must be distinct non-empty names, got {self.classes!r}")
        if self.labels and (min(self.labels) < 0 or max(self.labels) >= len(self.classes)):
            bad = next(x for x in self.labels if not 0 <= x < len(self.classes))
            raise DataError(f"label {bad} is out of range for {len(self.classes)} classes {self.classes!r}")

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:  # the default would print every path
        counts = ", ".join(f"{name}={n}" for name, n in self.class_counts().items())
        extra = f", skipped={len(self.skipped)}" if self.skipped else ""
        return f"Samples({len(self)} images: {counts}{extra})"

    def subset(self, indices: Sequence[int]) -> Samples:
        """The samples at ``indices`` (in that order), with the same classes."""
        picked = [operator.index(i) for i in indices]
        return Samples(
            tuple(self.paths[i] for i in picked), tuple(self.labels[i] for i in picked), self.classes
        )

    def class_counts(self) -> dict[str, int]:
        """Images per class, in class order (classes without images count 0)."""
        counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts, strict=True)}

    def limit(self, n: int, *, seed: int = 0) -> Samples:
        """A stratified, deterministic subsample of ``n`` images (for demos and quick tests).

        Classes keep their proportions (largest remainder), every class with images keeps at least
        one when ``n`` allows, and the kept images stay in their original order.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"limit(n) needs an int >= 0, got {n!r}")
        if n >= len(self):
            return self.subset(range(len(self)))
        groups = _by_class(self)
        sizes = np.array([len(g) for g in groups])
        quota = _allocate(n, sizes / sizes.sum())
        # Make sure no class with images vanishes: move one from the largest quota to it.
        for missing in np.flatnonzero((quota == 0) & (sizes > 0)):
            donor = int(np.argmax(quota))
            if quota[donor] <= 1:
                break
            quota[donor] -= 1
            quota[missing] += 1
        chosen: list[int] = []
        for c, group in enumerate(groups):
            order = _rng(seed, self.classes[c]).permutation(len(group))
            chosen.extend(group[j] for j in order[: quota[c]])
        return self.subset(sorted(chosen))


def describe_skipped(samples: Samples, indices: Sequence[int]) -> str:
    """One log line naming the files behind skipped dataset ``indices`` (the first few)."""
    unique = sorted({operator.index(i) for i in indices})
    if not unique:
        return "no images skipped"
    names = ", ".join(str(samples.paths[i]) for i in unique[:_SHOWN])
    more = f" and {len(unique) - _SHOWN} more" if len(unique) > _SHOWN else ""
    return f"{len(unique)} unreadable image(s) skipped: {names}{more}"


def _rng(seed: int, name: str) -> np.random.Generator:
    # One stream per (seed, class name): a class's split does not change when other classes are
    # added or removed. crc32, unlike hash(), is the same in every process.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _canonical(samples: Samples) -> list[int]:
    """All indices sorted by (path, label): an order that does not depend on the input order."""
    return sorted(range(len(samples)), key=lambda i: (str(samples.paths[i]), samples.labels[i]))


def _by_class(samples: Samples) -> list[list[int]]:
    """Indices of each class, in canonical order."""
    groups: list[list[int]] = [[] for _ in samples.classes]
    for i in _canonical(samples):
        groups[samples.labels[i]].append(i)
    return groups


def _allocate(n: int, fractions: FloatArray) -> IntArray:
    """Largest-remainder rounding of ``n * fractions`` to ints that sum to ``n`` (ties: earlier first)."""
    quota = n * np.asarray(fractions, dtype=np.float64)
    counts = np.floor(quota + 1e-9).astype(np.int64)  # 1e-9: 12500 * 0.64 must be 8000, not 7999
    left = n - int(counts.sum())
    if left > 0:
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[:left]] += 1
    return counts


def _check_fractions(fractions: Sequence[float]) -> FloatArray:
    try:
        values = np.array([float(f) for f in fractions], dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"split fractions must be numbers, got {fractions!r}") from None
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError(f"split fractions must be positive numbers, got {tuple(fractions)!r}")
    if abs(values.sum() - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must sum to 1, got {tuple(fractions)!r} (sum {values.sum():.6g}); "
            f"e.g. {tuple(round(float(v / values.sum()), 4) for v in values)!r}"
        )
    return values


def split_samples(
    samples: Samples, fractions: Sequence[float] = DEFAULT_SPLIT, *, seed: int = 0
) -> tuple[Samples, ...]:
    """Split ``samples`` into ``len(fractions)`` disjoint parts, stratified per class.

    Each class is shuffled with a generator seeded by ``(seed, class name)`` and cut by
    largest-remainder rounding, so no image is lost or duplicated and the result depends only on
    ``seed`` and the set of samples (not their order). Each part is sorted by path and keeps all
    ``classes``. With :data:`DEFAULT_SPLIT`, 25,000 images (12,500 per class) give exactly
    16,000 / 4,500 / 4,500.

    Raises:
        ConfigError: fractions not positive or not summing to 1 (tolerance 1e-6), a negative seed.
        DataError: a part would get no image of some class.
    """
    values = _check_fractions(fractions)
    parts: list[list[int]] = [[] for _ in values]
    for c, group in enumerate(_by_class(samples)):
        counts = _allocate(len(group), values)
        if np.any(counts == 0):
            k = int(np.argmin(counts))
            need = _minimum_per_class(values)
            raise DataError(
                f"split {k} (fraction {values[k]:.4g}) would get no image of class {samples.classes[c]!r}, "
                f"which has {len(group)} image(s); with fractions {tuple(round(float(v), 4) for v in values)}"
                f" every class needs at least {need} images. Add images or use fewer/larger fractions."
            )
        order = _rng(seed, samples.classes[c]).permutation(len(group))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for k in range(len(values)):
            parts[k].extend(group[j] for j in order[bounds[k] : bounds[k + 1]])
    rank = {i: r for r, i in enumerate(_canonical(samples))}
    return tuple(samples.subset(sorted(part, key=rank.__getitem__)) for part in parts)


def _minimum_per_class(values: FloatArray) -> int:
    n = len(values)
    while np.any(_allocate(n, values) == 0):
        n += 1
    return n
