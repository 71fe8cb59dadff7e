"""One split for every training path: what ``data`` means to ``finetune``, ``train_ensemble`` and the CLI.

:func:`resolve_splits` turns any accepted ``data`` into :class:`Splits`: train, validation and
(optionally) test :class:`~ensemblenet.Samples`, checked to share classes and, by the content of
every file, to hold no training image in validation or test. The split is saved next to the
models (``split.json``) so later commands can use exactly the held-out images.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import (
    DEFAULT_SPLIT,
    Samples,
    SavedSplit,
    check_disjoint,
    file_hashes,
    save_split,
    scan_folder,
    split_samples,
)
from ..errors import ClassMismatchError, ConfigError

__all__ = ["VAL_FROM_TRAIN", "Splits", "resolve_splits"]

#: How a training folder is cut into train and validation when a test set is given separately:
#: the reference notebook's train:validation proportions (16,000 : 4,500).
VAL_FROM_TRAIN: tuple[float, float] = (
    DEFAULT_SPLIT[0] / (DEFAULT_SPLIT[0] + DEFAULT_SPLIT[1]),
    DEFAULT_SPLIT[1] / (DEFAULT_SPLIT[0] + DEFAULT_SPLIT[1]),
)
_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class Splits:
    """The parts of one run's data, checked disjoint by content (see :func:`resolve_splits`).

    Attributes:
        parts: ``"train"``, ``"val"`` and optionally ``"test"`` :class:`~ensemblenet.Samples`.
        seed: the seed that cut what was cut.
        fractions: the fractions used to cut parts out of one folder (None when all were given).
    """

    parts: dict[str, Samples]
    seed: int = 0
    fractions: tuple[float, ...] | None = None
    hashes: dict[Path, str] = field(default_factory=dict, repr=False, compare=False)
    #: files the folder scans rejected (unreadable, not images), with the reason
    skipped: tuple[tuple[Path, str], ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.parts["train"].classes

    def __getitem__(self, name: str) -> Samples:
        return self.parts[name]

    def __contains__(self, name: object) -> bool:
        return name in self.parts

    def get(self, name: str) -> Samples | None:
        return self.parts.get(name)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``split.json`` (every file with its label and sha256) to ``path``."""
        return save_split(path, self.parts, seed=self.seed, fractions=self.fractions, hashes=self.hashes)

    def describe(self) -> str:
        """``"train 196 / val 49 / test 153"``."""
        return " / ".join(f"{name} {len(part)}" for name, part in self.parts.items())


def _scan_one(value: Any) -> Samples:
    if isinstance(value, (str, os.PathLike)):
        return scan_folder(value)
    if isinstance(value, Samples):
        return value
    raise ConfigError(f"a data split must be a folder or a Samples, got {type(value).__name__}")


def resolve_splits(
    data: Any, *, split: Sequence[float] = (), seed: int = 0, limit: int | None = None
) -> Splits:
    """Turn ``data`` into checked :class:`Splits`.

    ``data`` may be:

    * one folder or :class:`~ensemblenet.Samples`: cut, stratified and seeded, into train/val/test
      with ``split`` (default :data:`~ensemblenet.DEFAULT_SPLIT`, the notebook's 64/18/18 %) or into
      train/val with two fractions;
    * ``(train, val)`` or ``(train, val, test)`` folders or Samples;
    * a mapping with ``"train"`` and any of ``"val"``, ``"test"``; without ``"val"``, validation is
      cut from ``train`` (``split`` as two fractions, default :data:`VAL_FROM_TRAIN`);
    * :class:`Splits` (returned as they are) or a split read by :func:`~ensemblenet.data.load_split`.

    ``limit`` keeps a stratified, seeded subsample of that many training images (after the split,
    so validation and test stay as they are), e.g. to see how a recipe does with little data.

    Images that the parts share with ``train`` are refused (:class:`~ensemblenet.DataError` naming
    how many and one of them) when the parts were given, and left out of the held-out part (with a
    warning) when ensemblenet cut them from one folder that holds byte-identical copies.

    Raises:
        ConfigError: an unsupported ``data``; ClassMismatchError: parts with different classes;
        DataError: overlapping parts, or a folder too small to cut.
    """
    if isinstance(data, Splits):
        return _limited(data, limit, seed)
    if isinstance(data, SavedSplit):
        data = data.parts
    fractions: tuple[float, ...] | None = tuple(float(f) for f in split) or None
    cut: set[str] = set()
    scanned: list[Samples] = []

    def _scan(value: Any) -> Samples:
        samples = _scan_one(value)
        scanned.append(samples)
        return samples

    if isinstance(data, (str, os.PathLike, Samples)):
        fractions = fractions or DEFAULT_SPLIT
        if len(fractions) not in (2, 3):
            raise ConfigError(
                f"split must give 2 (train, val) or 3 (train, val, test) fractions, got {fractions}"
            )
        pieces = split_samples(_scan(data), fractions, seed=seed)
        parts = dict(zip(_PARTS, pieces, strict=False))
        cut = set(parts) - {"train"}
    elif isinstance(data, Mapping):
        unknown = sorted(set(data) - set(_PARTS))
        if "train" not in data or unknown:
            raise ConfigError(
                f"data as a mapping needs a 'train' entry and at most 'val', 'test'; got {sorted(data)}"
            )
        parts = {name: _scan(data[name]) for name in _PARTS if data.get(name) is not None}
        if "val" not in parts:
            fractions = fractions or VAL_FROM_TRAIN
            if len(fractions) != 2:
                raise ConfigError(
                    f"to cut validation out of 'train', split needs 2 fractions, got {fractions}"
                )
            parts["train"], parts["val"] = split_samples(parts["train"], fractions, seed=seed)
            cut = {"val"}
        else:
            fractions = None
        parts = {name: parts[name] for name in _PARTS if name in parts}
    elif isinstance(data, Sequence) and 2 <= len(data) <= 3:
        parts = {name: _scan(value) for name, value in zip(_PARTS, data, strict=False)}
        fractions = None
    else:
        raise ConfigError(
            "data must be a folder path, a Samples, a (train, val[, test]) tuple of folders or Samples, "
            f"or a mapping with 'train' (and 'val', 'test'); got {type(data).__name__}"
        )
    classes = parts["train"].classes
    for name, part in parts.items():
        if part.classes != classes:
            only_train = sorted(set(classes) - set(part.classes))
            only_here = sorted(set(part.classes) - set(classes))
            raise ClassMismatchError(
                f"split {name!r} has classes {list(part.classes)} but 'train' has {list(classes)} (only in "
                f"train: {only_train}, only in {name}: {only_here}); give every split the same class folders"
            )
    skipped = tuple(item for part in scanned for item in part.skipped)
    hashes = file_hashes(*parts.values())
    given = {name: part for name, part in parts.items() if name not in cut}
    check_disjoint(given, hashes=hashes)  # parts the caller chose: an overlap is a mistake
    if cut:
        parts = check_disjoint(parts, repair=True, hashes=hashes)  # parts we cut: drop exact copies
    return _limited(Splits(parts, seed, fractions, hashes, skipped), limit, seed)


def _limited(splits: Splits, limit: int | None, seed: int) -> Splits:
    if limit is None or limit >= len(splits["train"]):
        return splits
    parts = dict(splits.parts)
    parts["train"] = parts["train"].limit(limit, seed=seed)
    return dataclasses.replace(splits, parts=parts)
