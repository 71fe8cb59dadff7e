"""ensemblenet.datasets: consent before any download, checksums, safe unpacking, clear offline messages.

There is no network here, so the download path is exercised against local ``file://`` archives;
the real Oxford-IIIT Pet URL and md5 are torchvision's (checked by reading, not by downloading).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from ensemblenet import DataError, UnknownNameError, scan_folder
from ensemblenet.datasets import DATASETS, DatasetSource, dataset_folder, oxford_pets_binary, register_dataset

NAMES = ["images/Abyssinian_1.jpg", "images/Bengal_7.jpg", "images/beagle_3.jpg", "images/pug_12.jpg"]


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def tar_archive(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for i, name in enumerate(NAMES):
            data = jpeg((200, 40 * i, 10))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("images/Sneaky_1.jpg")  # a link is never followed or unpacked
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


@pytest.fixture
def local_source(tmp_path: Path) -> Iterator[DatasetSource]:
    archive = tar_archive(tmp_path / "remote" / "pets.tar.gz", {"images/notes.mat": b"not an image"})
    source = DatasetSource(
        name="test-pets",
        url=archive.as_uri(),
        md5=md5(archive),
        sha256=None,
        archive="pets.tar.gz",
        size_mb=0.01,
        arrange=oxford_pets_binary.arrange,
        description="test pets",
    )
    register_dataset(source)
    yield source
    del DATASETS["test-pets"]


def test_without_consent_nothing_is_downloaded_and_the_message_says_what_to_do(
    tmp_path: Path, local_source: DatasetSource
) -> None:
    root = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        dataset_folder("test-pets", root=root)
    message = str(info.value)
    assert local_source.url in message and str(root / "pets.tar.gz") in message
    assert "download=True" in message and "--download" in message
    assert not root.exists() or not any(root.iterdir())


def test_download_checks_unpacks_by_class_and_is_reused(tmp_path: Path, local_source: DatasetSource) -> None:
    root = tmp_path / "cache"
    folder = dataset_folder("test-pets", root=root, download=True, progress=False)
    samples = scan_folder(folder)
    assert samples.classes == ("cats", "dogs")
    assert sorted(p.name for p in samples.paths) == sorted(Path(n).name for n in NAMES)
    assert samples.class_counts() == {"cats": 2, "dogs": 2}  # capitalized breeds are cats
    assert not (folder / "cats" / "Sneaky_1.jpg").exists()  # the link was not unpacked
    Path(local_source.url.removeprefix("file://")).unlink()  # "offline" from now on
    assert dataset_folder("test-pets", root=root) == folder  # prepared: no download, no checksum


def test_a_hand_downloaded_archive_is_used_without_network(
    tmp_path: Path, local_source: DatasetSource
) -> None:
    root = tmp_path / "cache"
    root.mkdir()
    (root / "pets.tar.gz").write_bytes(Path(local_source.url.removeprefix("file://")).read_bytes())
    Path(local_source.url.removeprefix("file://")).unlink()
    folder = dataset_folder("test-pets", root=root, progress=False)
    assert len(scan_folder(folder)) == 4


def test_a_wrong_checksum_unpacks_nothing(tmp_path: Path, local_source: DatasetSource) -> None:
    register_dataset(DatasetSource(**{**local_source.__dict__, "md5": "0" * 32}), replace=True)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"not the expected file .* Delete it and download"):
        dataset_folder("test-pets", root=root, download=True, progress=False)
    assert not (root / "test-pets").exists()


def test_a_zip_archive_and_an_escaping_member(tmp_path: Path) -> None:
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("PetImages/Cat/0.jpg", jpeg((200, 10, 10)))
        zipped.writestr("PetImages/Dog/0.jpg", jpeg((10, 10, 200)))

    def arrange(member: str) -> str | None:
        kind = {"Cat": "cats", "Dog": "dogs"}.get(Path(member).parent.name)
        return f"{kind}/{Path(member).name}" if kind else None

    source = DatasetSource("zip-pets", archive.as_uri(), md5(archive), None, "pets.zip", 0.01, arrange)
    register_dataset(source)
    try:
        folder = dataset_folder("zip-pets", root=tmp_path / "cache", download=True, progress=False)
        assert scan_folder(folder).class_counts() == {"cats": 1, "dogs": 1}
        register_dataset(
            DatasetSource(**{**source.__dict__, "arrange": lambda m: "../../evil.jpg"}), replace=True
        )
        with pytest.raises(DataError, match="outside class/file"):
            dataset_folder("zip-pets", root=tmp_path / "other", download=True, progress=False)
    finally:
        del DATASETS["zip-pets"]


def test_unknown_names_and_missing_checksums() -> None:
    with pytest.raises(UnknownNameError, match="oxford-pets-binary"):
        dataset_folder("oxford-pets")
    with pytest.raises(DataError, match="needs an md5 or a sha256"):
        DatasetSource("x", "file:///x", None, None, "x.zip", 1, lambda m: None)


def test_the_built_in_set_is_torchvisions_file() -> None:
    """Same URL and md5 as torchvision's OxfordIIITPet (read from its source, not downloaded)."""
    from torchvision.datasets import OxfordIIITPet

    assert (oxford_pets_binary.url, oxford_pets_binary.md5) in OxfordIIITPet._RESOURCES
    assert oxford_pets_binary.arrange("images/Abyssinian_1.jpg") == "cats/Abyssinian_1.jpg"
    assert oxford_pets_binary.arrange("images/american_bulldog_1.jpg") == "dogs/american_bulldog_1.jpg"
    assert oxford_pets_binary.arrange("images/Abyssinian_1.mat") is None
