"""Public image sets fetched with consent: download, checksum, unpack into one folder per class."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..errors import DataError, UnknownNameError, unknown_name_message

__all__ = [
    "DATASETS",
    "DatasetSource",
    "dataset_folder",
    "default_root",
    "oxford_pets_binary",
    "register_dataset",
    "synthetic_folder",
]

logger = logging.getLogger("ensemblenet.datasets")

_COMPLETE = ".complete"  # written last: a folder without it is an interrupted unpack
_CHUNK = 1 << 20


@dataclass(frozen=True)
class DatasetSource:
    """Where an archive is, how to check it, and how its files become ``class/file`` paths.

    Attributes:
        name: the name :func:`dataset_folder` takes.
        url: where the archive is downloaded from (``https://``, ``http://`` or ``file://``).
        md5: the archive's published md5 (the checksum torchvision and the publisher give), or None.
        sha256: its sha256, or None. At least one checksum is required.
        archive: the archive's file name in the cache folder (also where a hand-downloaded copy goes).
        size_mb: its size, for the messages.
        arrange: maps a path inside the archive to ``"class/file"`` in the prepared folder, or None to
            leave that file out.
        description: one line for the messages and the docs.
    """

    name: str
    url: str
    md5: str | None
    sha256: str | None
    archive: str
    size_mb: float
    arrange: Callable[[str], str | None]
    description: str = ""

    def __post_init__(self) -> None:
        if not (self.md5 or self.sha256):
            raise DataError(f"dataset {self.name!r} needs an md5 or a sha256 to check its download against")


def _oxford_pets_class(member: str) -> str | None:
    # images.tar.gz holds images/<Breed>_<n>.jpg; the 12 cat breeds are capitalized, the 25 dog
    # breeds are not (the data set's own convention, also in its annotations/list.txt).
    path = PurePosixPath(member)
    if path.suffix.lower() != ".jpg" or len(path.parts) != 2 or path.parts[0] != "images":
        return None
    kind = "cats" if path.name[:1].isupper() else "dogs"
    return f"{kind}/{path.name}"


#: The Oxford-IIIT Pet images (Parkhi et al., 2012), two classes: 12 cat breeds, 25 dog breeds;
#: torchvision's ``OxfordIIITPet(target_types="binary-category")``, with the same file and md5.
oxford_pets_binary = DatasetSource(
    name="oxford-pets-binary",
    url="https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
    md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
    sha256=None,
    archive="oxford-iiit-pet-images.tar.gz",
    size_mb=755,
    arrange=_oxford_pets_class,
    description="Oxford-IIIT Pet, cats vs dogs (about 2,400 cat and 5,000 dog photos; CC BY-SA 4.0)",
)

DATASETS: dict[str, DatasetSource] = {}


def register_dataset(source: DatasetSource, *, replace: bool = False) -> DatasetSource:
    """Make ``dataset_folder(source.name)`` know ``source`` (``replace=True`` to redefine a name)."""
    if source.name in DATASETS and not replace:
        raise DataError(f"dataset {source.name!r} is already registered; pass replace=True to redefine it")
    DATASETS[source.name] = source
    return source


register_dataset(oxford_pets_binary)


def default_root() -> Path:
    """``$ENSEMBLENET_DATA`` when set, else ``~/.cache/ensemblenet/datasets``."""
    return Path(os.environ.get("ENSEMBLENET_DATA") or Path.home() / ".cache" / "ensemblenet" / "datasets")


def dataset_folder(
    name: str = "oxford-pets-binary",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = True,
) -> Path:
    """The prepared folder (one sub-folder per class) of a public data set, fetched only if asked.

    Looks in ``root/name`` first. Otherwise unpacks ``root/<archive>`` when it is there (put a copy
    you downloaded yourself there), or downloads it when ``download=True``; either way the archive's
    checksum is verified before anything is unpacked.

    Raises:
        UnknownNameError: an unknown data set.
        DataError: not there and ``download=False`` (the message says what to download, from where,
            and where to put it), a failed download, or a checksum that does not match.
    """
    if name not in DATASETS:
        raise UnknownNameError(
            unknown_name_message("dataset", name, sorted(DATASETS), "Register one with register_dataset().")
        )
    source = DATASETS[name]
    base = Path(root) if root is not None else default_root()
    folder = base / source.name
    if (folder / _COMPLETE).is_file():
        return folder
    archive = base / source.archive
    if not archive.is_file():
        if not download:
            raise DataError(
                f"the {source.description or source.name} is not in {folder}. To fetch it, pass "
                f"download=True (command line: --download), which downloads {source.size_mb:.0f} MB from "
                f"{source.url} and checks it; or download that file yourself and put it at {archive}; "
                "or use your own folder of images (one sub-folder per class)"
            )
        _download(source, archive, progress)
    _verify(source, archive)
    _unpack(source, archive, folder, progress)
    return folder


def _download(source: DatasetSource, archive: Path, progress: bool) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".part")
    logger.info("downloading %s to %s", source.url, archive)
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {source.name}", disable=not progress
            ) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as exc:  # URLError, timeouts, disk full
        partial.unlink(missing_ok=True)
        raise DataError(
            f"could not download {source.url} ({exc}); without network, download it elsewhere and put it "
            f"at {archive}"
        ) from exc
    os.replace(partial, archive)


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _verify(source: DatasetSource, archive: Path) -> None:
    md5, sha = _digests(archive)
    bad = (source.md5 and md5 != source.md5) or (source.sha256 and sha != source.sha256)
    if bad:
        expected = f"md5 {source.md5}" if source.md5 else f"sha256 {source.sha256}"
        raise DataError(
            f"{archive} is not the expected file (expected {expected}, got md5 {md5}): an interrupted or "
            f"changed download. Delete it and download {source.url} again"
        )


def _members(archive: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(path inside the archive, opener) for each regular file of a .tar(.gz) or .zip archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: zipped.open(info)  # type: ignore[misc]
        return
    with tarfile.open(archive) as tarred:
        for member in tarred:
            if member.isfile():  # links, devices and folders are never unpacked
                yield member.name, lambda member=member: tarred.extractfile(member)  # type: ignore[misc,return-value]


def _unpack(source: DatasetSource, archive: Path, folder: Path, progress: bool) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{source.name}.", dir=folder.parent))
    count = 0
    try:
        for member, opener in tqdm(_members(archive), desc=f"unpack {source.name}", disable=not progress):
            target = source.arrange(member)
            if target is None:
                continue
            relative = PurePosixPath(target)
            if relative.is_absolute() or ".." in relative.parts or len(relative.parts) != 2:
                raise DataError(f"{archive}: {member!r} would be unpacked to {target!r}, outside class/file")
            path = staging.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with opener() as data, open(path, "wb") as out:
                shutil.copyfileobj(data, out)
            count += 1
        if count == 0:
            raise DataError(f"{archive} holds no file of the {source.name} data set")
        (staging / _COMPLETE).write_text(f"{count} files from {source.url}\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)  # an earlier, interrupted unpack (no .complete marker)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("unpacked %d images of %s into %s", count, source.name, folder)


def synthetic_folder(root: str | os.PathLike[str], per_class: int = 60, *, seed: int = 0) -> Path:
    """Write stand-in images when no real data exists: ``cats`` warm noise, ``dogs`` cool noise.

    They only exercise the code (any model separates them by colour); nothing learnt from them means
    anything. Returns ``root``, laid out one sub-folder per class.
    """
    folder = Path(root)
    rng = np.random.default_rng(seed)
    for cls, channel in (("cats", 0), ("dogs", 2)):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, size=(200, 200, 3), dtype=np.uint8)
            pixels[..., channel] = rng.integers(130, 256, size=(200, 200), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / cls / f"{cls[:-1]}.{i}.jpg")
    return folder
