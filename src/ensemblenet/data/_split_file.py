"""A run's split, saved next to its models: which files were trained on, validated on, tested on.

``split.json`` lists every file of every part with its label and the sha256 of its bytes, plus the
classes, the seed and the fractions that made it. It lets a later command use exactly the
images a run held out (``ensemblenet evaluate --split test RUN_DIR``), and it lets ensemblenet
refuse to validate or test on images the model was trained on, even under another name: parts
are compared by content, not by path.

>>> from ensemblenet.data import Samples, check_disjoint
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("a.jpg", "b.jpg", "copy_of_a.jpg"):
...     _ = (folder / name).write_bytes(b"same" if "a" in name else b"other")
>>> train = Samples([folder / "a.jpg", folder / "b.jpg"], [0, 1], ("x", "y"))
>>> test = Samples([folder / "copy_of_a.jpg"], [0], ("x", "y"))
>>> check_disjoint({"train": train, "test": test})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ensemblenet.errors.DataError: 1 of the 1 test images are also training images (same bytes), e.g. ...
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import DataError
from ._samples import Samples

__all__ = [
    "SPLIT_FILE",
    "SPLIT_FORMAT",
    "SavedSplit",
    "check_disjoint",
    "file_hashes",
    "file_sha256",
    "find_split_file",
    "load_split",
    "save_split",
]

logger = logging.getLogger("ensemblenet.data")

SPLIT_FORMAT = "ensemblenet.split"
SPLIT_FORMAT_VERSION = 1
#: The file name :func:`~ensemblenet.train_ensemble` writes into its output folder; a single
#: model's split is ``<model stem>.split.json`` beside the model.
SPLIT_FILE = "split.json"
_HELD_OUT = ("val", "test")
_NAMES = {"train": "training", "val": "validation", "test": "test"}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(*parts: Samples, known: Mapping[Path, str] | None = None) -> dict[Path, str]:
    """The sha256 of every file of ``parts``, by path (``known`` ones are not read again)."""
    found = dict(known or {})
    for part in parts:
        for path in part.paths:
            if path not in found:
                try:
                    found[path] = file_sha256(path)
                except OSError as exc:
                    raise DataError(f"cannot read {path} to hash it: {exc}") from exc
    return found


def _hashes(samples: Samples, known: Mapping[Path, str] | None) -> list[str]:
    digests = file_hashes(samples, known=known)
    return [digests[p] for p in samples.paths]


def check_disjoint(
    parts: Mapping[str, Samples],
    *,
    repair: bool = False,
    hashes: Mapping[Path, str] | None = None,
) -> dict[str, Samples]:
    """Refuse validation or test images that are also training images (by content).

    Args:
        parts: ``{"train": ..., "val": ..., "test": ...}`` (val and test optional).
        repair: drop such images from the held-out part instead (with a warning): right when the
            parts were cut from one folder that holds byte-identical copies of some images (Kaggle's
            Dogs vs Cats has three such pairs), wrong when someone passed overlapping folders.
        hashes: file hashes by path, when already computed (:func:`file_hashes`).

    Returns:
        The parts, with the overlapping held-out images dropped when ``repair``.

    Raises:
        DataError: an overlap, without ``repair``; the message says how many and shows one.
    """
    hashed = {name: _hashes(part, hashes) for name, part in parts.items()}
    train = parts.get("train")
    if train is None:
        return dict(parts)
    seen = {h: p for h, p in zip(hashed["train"], train.paths, strict=True)}
    result = dict(parts)
    for name in _HELD_OUT:
        part = parts.get(name)
        if part is None:
            continue
        clash = [i for i, h in enumerate(hashed[name]) if h in seen]
        if not clash:
            continue
        first = clash[0]
        example = f"{part.paths[first]} = {seen[hashed[name][first]]}"
        what = f"{len(clash)} of the {len(part)} {_NAMES[name]} images are also training images (same bytes)"
        if not repair:
            raise DataError(
                f"{what}, e.g. {example}; a model must not be judged on images it was trained on. Pass "
                f"{_NAMES[name]} images that are not in the training set"
            )
        logger.warning("%s, e.g. %s: left out of the %s split", what, example, _NAMES[name])
        keep = [i for i in range(len(part)) if i not in set(clash)]
        result[name] = part.subset(keep)
    return result


@dataclass(frozen=True)
class SavedSplit:
    """A split read back by :func:`load_split`.

    Attributes:
        parts: ``Samples`` per part name (``"train"``, ``"val"``, ``"test"``).
        classes: the class names, in label order.
        seed: the seed that cut it (None when the parts were given as folders).
        fractions: the fractions it was cut with (None when given as folders).
        path: the file it was read from.
    """

    parts: dict[str, Samples]
    classes: tuple[str, ...]
    seed: int | None
    fractions: tuple[float, ...] | None
    path: Path
    hashes: dict[str, tuple[str, ...]]

    def part(self, name: str) -> Samples:
        """One part by name, with an error that lists the parts the file has."""
        if name not in self.parts:
            raise DataError(f"{self.path} has no {name!r} split; it has {sorted(self.parts)}")
        return self.parts[name]


def save_split(
    path: str | os.PathLike[str],
    parts: Mapping[str, Samples],
    *,
    seed: int | None = None,
    fractions: Sequence[float] | None = None,
    hashes: Mapping[Path, str] | None = None,
) -> Path:
    """Write ``parts`` as JSON to ``path`` atomically (every file with label and sha256)."""
    target = Path(path)
    document: dict[str, Any] = {
        "format": SPLIT_FORMAT,
        "format_version": SPLIT_FORMAT_VERSION,
        "ensemblenet_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": [],
        "seed": seed,
        "fractions": None if fractions is None else [float(f) for f in fractions],
        "parts": {},
    }
    for name, part in parts.items():
        document["classes"] = list(part.classes)
        digests = _hashes(part, hashes)
        document["parts"][name] = [
            {"path": str(Path(p).resolve()), "label": int(label), "sha256": digest}
            for p, label, digest in zip(part.paths, part.labels, digests, strict=True)
        ]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the split from other users
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def find_split_file(where: str | os.PathLike[str]) -> Path:
    """The split file ``where`` names: the file itself, or in a run folder ``split.json``, else its
    one ``*.split.json`` (several are fine when they list the same files)."""
    path = Path(where)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"no split file or run folder at {path}; pass a folder written by training or its "
                        f"{SPLIT_FILE}")  # fmt: skip
    if (path / SPLIT_FILE).is_file():
        return path / SPLIT_FILE
    found = sorted(path.glob("*.split.json"))
    if not found:
        raise DataError(
            f"{path} has no {SPLIT_FILE} or *.split.json: it is not a folder that 'ensemblenet train' or "
            "finetune() wrote models to"
        )
    first = _file_lists(found[0])
    differing = [f.name for f in found[1:] if _file_lists(f) != first]
    if differing:
        raise DataError(
            f"{path} holds models trained on different splits ({found[0].name} differs from "
            f"{', '.join(differing)}); pass one split file instead of the folder"
        )
    return found[0]


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != SPLIT_FORMAT:
        raise DataError(f"{path} is not an ensemblenet split file (no 'format': {SPLIT_FORMAT!r})")
    version = document.get("format_version")
    if not isinstance(version, int) or version > SPLIT_FORMAT_VERSION:
        raise DataError(
            f"{path} has format_version {version!r}; this ensemblenet reads up to {SPLIT_FORMAT_VERSION}"
        )
    return document


def _file_lists(path: Path) -> dict[str, list[str]]:
    parts = _read(path)["parts"]
    return {name: [row["sha256"] for row in rows] for name, rows in parts.items()}


def load_split(where: str | os.PathLike[str], *, verify: Sequence[str] = _HELD_OUT) -> SavedSplit:
    """Read a split file (or the one in a run folder, see :func:`find_split_file`).

    Args:
        where: the file, or the folder that holds it.
        verify: parts whose files are re-hashed now; a file that is missing or changed since the
            split was saved is an error, so an evaluation never silently runs on other images.
    """
    path = find_split_file(where)
    document = _read(path)
    classes = tuple(str(c) for c in document["classes"])
    parts, hashes = {}, {}
    for name, rows in document["parts"].items():
        paths = [Path(row["path"]) for row in rows]
        digests = tuple(str(row["sha256"]) for row in rows)
        if name in verify:
            for p, digest in zip(paths, digests, strict=True):
                if not p.is_file():
                    raise DataError(f"the {name} image {p} listed in {path} no longer exists")
                if file_sha256(p) != digest:
                    raise DataError(
                        f"the {name} image {p} changed since {path} was written (its sha256 differs); "
                        "the split no longer describes the images the run used"
                    )
        parts[name] = Samples(tuple(paths), tuple(int(row["label"]) for row in rows), classes)
        hashes[name] = digests
    fractions = document.get("fractions")
    return SavedSplit(
        parts=parts,
        classes=classes,
        seed=document.get("seed"),
        fractions=None if fractions is None else tuple(float(f) for f in fractions),
        path=path,
        hashes=hashes,
    )
