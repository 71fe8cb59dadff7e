"""Find labelled images on disk and split them deterministically, stratified per class.

Users normally import these names from :mod:`ensemblenet.data`.
"""

from __future__ import annotations

import logging
import operator
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError, close_matches
from .images import check_image

__all__ = [
    "DEFAULT_SPLIT",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "Samples",
    "describe_skipped",
    "scan_folder",
    "split_samples",
]

logger = logging.getLogger("ensemblenet.data")

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
LAYOUTS = ("auto", "folders", "kaggle")
#: The reference notebook's train/validation/test proportions (16,000 / 4,500 / 4,500 of 25,000).
DEFAULT_SPLIT: tuple[float, float, float] = (16000 / 25000, 4500 / 25000, 4500 / 25000)
_LAYOUT_HELP = (
    "Supported layouts: 'folders' = one sub-folder per class (root/cats/x.jpg, root/dogs/y.jpg); "
    "'kaggle' = flat files named <class>.<id>.<ext> (root/cat.123.jpg, root/dog.45.jpg)."
)
_SHOWN = 5  # how many file names a message or log line lists before "and N more"


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
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
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
        return {name: int(n) for name, n in zip(self.classes, counts)}

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
        for c in np.flatnonzero((quota == 0) & (sizes > 0)):
            donor = int(np.argmax(quota))
            if quota[donor] <= 1:
                break
            quota[donor] -= 1
            quota[c] += 1
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


# --- scanning ---------------------------------------------------------------------------------


def _is_image(entry: os.DirEntry[str]) -> bool:
    return not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS


def _list(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible sub-folders and image files directly in ``folder``, each sorted by name."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"cannot list image folder {folder}: {exc}") from exc
    dirs = sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir())
    files = sorted(Path(e.path) for e in entries if _is_image(e) and e.is_file())
    return dirs, files


def _kaggle_class(path: Path) -> str | None:
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    name, dot, _ = stem.partition(".")
    return name if dot and name else None


def _nested_hint(root: Path, dirs: Sequence[Path]) -> str:
    nested = [d for d in dirs if any(_list(sub)[1] for sub in _list(d)[0])]
    if not nested:
        return ""
    return (
        f" Its sub-folder(s) {', '.join(d.name for d in nested)} hold class folders themselves: if they are "
        f"splits, scan one of them instead, e.g. scan_folder({str(nested[0])!r})."
    )


def _pick(found: Sequence[str], wanted: Sequence[str] | None, root: Path, what: str) -> list[str]:
    if wanted is None:
        return sorted(found)
    for name in wanted:
        if name not in found:
            near = close_matches(name, found)
            hint = f" Did you mean {' or '.join(repr(m) for m in near)}?" if near else ""
            raise DataError(
                f"class {name!r} given in classes= has no {what} in {root}.{hint} "
                f"Found: {', '.join(repr(f) for f in sorted(found)) or 'none'}."
            )
    return list(wanted)


def _detect(root: Path, dirs: list[Path], files: list[Path]) -> str:
    if any(_list(d)[1] for d in dirs):
        return "folders"
    unmatched = [f.name for f in files if _kaggle_class(f) is None]
    if files and not unmatched:
        return "kaggle"
    if not files:
        raise DataError(
            f"no images found in {root} nor directly in its sub-folders "
            f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))}).{_nested_hint(root, dirs)} {_LAYOUT_HELP}"
        )
    raise DataError(
        f"cannot tell the layout of {root}: it has no class sub-folders with images, and {len(unmatched)} of its "
        f"{len(files)} image files do not follow <class>.<id>.<ext> (e.g. {', '.join(unmatched[:3])}). "
        f"{_LAYOUT_HELP} Pass layout='kaggle' to skip the files that do not match."
    )


def _from_folders(root: Path, dirs: list[Path], wanted: Sequence[str] | None) -> tuple[list[str], list[Path]]:
    if not dirs:
        raise DataError(f"no class sub-folders in {root}. {_LAYOUT_HELP}")
    classes = _pick([d.name for d in dirs], wanted, root, "folder")
    files: list[Path] = []
    for name in classes:
        sub_dirs, images = _list(root / name)
        if not images:
            raise DataError(
                f"class folder {root / name} has no images (extensions {', '.join(sorted(IMAGE_EXTENSIONS))}). "
                f"Add images, remove the folder, or choose the class folders with classes=[...]."
                + _nested_hint(root, [root / name])
            )
        files.extend(images)
    return classes, files


def _from_flat(
    root: Path, dirs: list[Path], files: list[Path], wanted: Sequence[str] | None
) -> tuple[list[str], list[Path], list[tuple[Path, str]]]:
    if not files:
        hint = (
            f" It has sub-folders ({', '.join(d.name for d in dirs[:5])}): use layout='folders'?"
            if dirs
            else ""
        )
        raise DataError(f"no image files directly in {root}.{hint} {_LAYOUT_HELP}")
    rejected = [(f, "name does not follow <class>.<id>.<ext>") for f in files if _kaggle_class(f) is None]
    named = [f for f in files if _kaggle_class(f) is not None]
    classes = _pick(sorted({_kaggle_class(f) or "" for f in named}), wanted, root, "files")
    keep = set(classes)
    return classes, [f for f in named if _kaggle_class(f) in keep], rejected


def scan_folder(
    root: str | os.PathLike[str],
    *,
    layout: str = "auto",
    verify: bool = True,
    classes: Sequence[str] | None = None,
) -> Samples:
    """Find the labelled images under ``root``.

    Args:
        root: the folder holding class folders (``layout="folders"``) or ``<class>.<id>.<ext>``
            files (``layout="kaggle"``). Only direct children are scanned; hidden files and files
            with other extensions than :data:`IMAGE_EXTENSIONS` are ignored.
        layout: ``"folders"``, ``"kaggle"`` or ``"auto"`` (folders when a sub-folder holds images,
            else kaggle when every flat image name matches).
        verify: cheaply check every file (:func:`~ensemblenet.images.check_image`, no pixel
            decoding) and move bad ones to ``Samples.skipped`` with the reason (logged as a WARNING).
        classes: the class names, in label order (default: sorted); also selects a subset.

    Returns:
        Samples sorted by path relative to ``root``; labels index ``classes``.

    Raises:
        DataError: missing root, no images, a class without images, fewer than 2 classes, an
            unknown name in ``classes``.
        ConfigError: an unknown ``layout`` or repeated names in ``classes``.
    """
    base = Path(root).expanduser()
    if not base.exists():
        raise DataError(
            f"image folder {base} does not exist (current directory: {Path.cwd()}); check the path"
        )
    if not base.is_dir():
        raise DataError(
            f"{base} is a file, not a folder: pass the folder that holds the images. {_LAYOUT_HELP}"
        )
    if layout not in LAYOUTS:
        near = close_matches(str(layout), LAYOUTS)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"unknown layout {layout!r}.{hint} Valid layouts: {', '.join(LAYOUTS)}.")
    wanted = None if classes is None else [str(c) for c in classes]
    if wanted is not None and len(set(wanted)) != len(wanted):
        raise ConfigError(f"classes= names a class twice: {wanted!r}")
    dirs, flat = _list(base)
    chosen = _detect(base, dirs, flat) if layout == "auto" else layout
    rejected: list[tuple[Path, str]] = []
    if chosen == "folders":
        names, files = _from_folders(base, dirs, wanted)
        class_of = [f.parent.name for f in files]
    else:
        names, files, rejected = _from_flat(base, dirs, flat, wanted)
        class_of = [_kaggle_class(f) or "" for f in files]
    if len(names) < 2:
        raise DataError(
            f"found {len(names)} class(es) {names!r} in {base}; classification needs at least 2. {_LAYOUT_HELP}"
        )
    label_of = {name: i for i, name in enumerate(names)}
    total = len(files) + len(rejected)
    pairs = sorted(zip(files, class_of), key=lambda pair: pair[0].relative_to(base).as_posix())
    kept: list[tuple[Path, str]] = []
    for path, name in pairs:
        reason = check_image(path) if verify else None
        if reason is None:
            kept.append((path, name))
        else:
            rejected.append((path, reason))
    rejected.sort(key=lambda pair: pair[0].relative_to(base).as_posix())
    if rejected:
        shown = "; ".join(f"{p.relative_to(base).as_posix()} ({r})" for p, r in rejected[:_SHOWN])
        more = f"; and {len(rejected) - _SHOWN} more" if len(rejected) > _SHOWN else ""
        logger.warning("skipped %d of %d image files in %s: %s%s", len(rejected), total, base, shown, more)
    samples = Samples(
        tuple(p for p, _ in kept), tuple(label_of[c] for _, c in kept), tuple(names), tuple(rejected)
    )
    empty = [name for name, n in samples.class_counts().items() if n == 0]
    if empty:
        raise DataError(
            f"every image of class {empty[0]!r} in {base} is unreadable (see Samples.skipped / the warning above); "
            "replace the files or leave the class out with classes=[...]"
        )
    return samples


# --- splitting --------------------------------------------------------------------------------


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


def _allocate(n: int, fractions: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    """Largest-remainder rounding of ``n * fractions`` to ints that sum to ``n`` (ties: earlier first)."""
    quota = n * np.asarray(fractions, dtype=np.float64)
    counts = np.floor(quota + 1e-9).astype(np.int64)  # 1e-9: 12500 * 0.64 must be 8000, not 7999
    left = n - int(counts.sum())
    if left > 0:
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[:left]] += 1
    return counts


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:  # type: ignore[type-arg]
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
                f"which has {len(group)} image(s); with fractions {tuple(round(float(v), 4) for v in values)} "
                f"every class needs at least {need} images. Add images or use fewer/larger fractions."
            )
        order = _rng(seed, samples.classes[c]).permutation(len(group))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        for k in range(len(values)):
            parts[k].extend(group[j] for j in order[bounds[k] : bounds[k + 1]])
    rank = {i: r for r, i in enumerate(_canonical(samples))}
    return tuple(samples.subset(sorted(part, key=rank.__getitem__)) for part in parts)


def _minimum_per_class(values: np.ndarray) -> int:  # type: ignore[type-arg]
    n = len(values)
    while np.any(_allocate(n, values) == 0):
        n += 1
    return n
