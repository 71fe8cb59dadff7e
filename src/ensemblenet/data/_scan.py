"""Find labelled images on disk: one sub-folder per class, or Kaggle's flat ``<class>.<id>.<ext>``."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError, DataError, close_matches
from ._decode import check_image
from ._samples import Samples

__all__ = ["IMAGE_EXTENSIONS", "LAYOUTS", "list_image_files", "scan_folder"]

logger = logging.getLogger("ensemblenet.data")

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
LAYOUTS = ("auto", "folders", "kaggle")
_LAYOUT_HELP = (
    "Supported layouts: 'folders' = one sub-folder per class (root/cats/x.jpg, root/dogs/y.jpg); "
    "'kaggle' = flat files named <class>.<id>.<ext> (root/cat.123.jpg, root/dog.45.jpg)."
)
_SHOWN = 5  # how many file names a message or log line lists before "and N more"


def list_image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every image file under ``folder``, recursively, sorted; hidden files left out. No labels:
    for prediction on a folder that is not laid out by class.

    A name with an image extension that is not a folder is listed even when it cannot be opened (a
    dangling symbolic link, a link loop), so that it gets its "unreadable" row like any bad image
    instead of silently vanishing. Symbolic links to folders are not followed.
    """
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and not p.is_dir()
    )


_EXTS = ", ".join(sorted(IMAGE_EXTENSIONS))


def _is_image(entry: os.DirEntry[str]) -> bool:
    return not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symbolic link loop ("Too many levels of symbolic links"), a vanished entry
        return False


def _list(folder: Path) -> tuple[list[Path], list[Path]]:
    """Visible sub-folders and image files directly in ``folder``, each sorted by name.

    An image name that is not a folder counts as an image file even when it cannot be opened (a
    dangling symbolic link, a link loop): the scan's check then skips and counts it like any
    unreadable image, so one bad entry never ends a scan and none disappears without a count.
    """
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        raise DataError(f"cannot list image folder {folder}: {exc}") from exc
    dirs = sorted(Path(e.path) for e in entries if not e.name.startswith(".") and _is_dir(e))
    files = sorted(Path(e.path) for e in entries if _is_image(e) and not _is_dir(e))
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
        f" Sub-folder(s) {', '.join(d.name for d in nested)} hold class folders themselves: if they are "
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
            f"(extensions {_EXTS}).{_nested_hint(root, dirs)} {_LAYOUT_HELP}"
        )
    raise DataError(
        f"cannot tell the layout of {root}: it has no class sub-folders with images, and {len(unmatched)} of "
        f"its {len(files)} image files do not follow <class>.<id>.<ext> (e.g. {', '.join(unmatched[:3])}). "
        f"{_LAYOUT_HELP} Pass layout='kaggle' to skip the files that do not match."
    )


def _from_folders(root: Path, dirs: list[Path], wanted: Sequence[str] | None) -> tuple[list[str], list[Path]]:
    if not dirs:
        raise DataError(f"no class sub-folders in {root}. {_LAYOUT_HELP}")
    classes = _pick([d.name for d in dirs], wanted, root, "folder")
    files: list[Path] = []
    for name in classes:
        _, images = _list(root / name)
        if not images:
            raise DataError(
                f"class folder {root / name} has no images (extensions {_EXTS}). "
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
        verify: cheaply check every file (:func:`~ensemblenet.data.check_image`, no pixel
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
    if isinstance(classes, str):
        raise ConfigError(
            f"classes= takes a list of class names, got the string {classes!r}; write [{classes!r}, ...]"
        )
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
            f"found {len(names)} class(es) {names!r} in {base}; classification needs at least 2. "
            + _LAYOUT_HELP
        )
    label_of = {name: i for i, name in enumerate(names)}
    total = len(files) + len(rejected)
    pairs = sorted(zip(files, class_of, strict=True), key=lambda pair: pair[0].relative_to(base).as_posix())
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
            f"every image of class {empty[0]!r} in {base} is unreadable (see Samples.skipped and the "
            "warning above); replace the files or leave the class out with classes=[...]"
        )
    return samples
