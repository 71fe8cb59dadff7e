"""Tests of scanning, splitting, safe decoding, the dataset and the loader (ensemblenet.data)."""

from __future__ import annotations

import io
import logging
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from ensemblenet.data import (
    DEFAULT_SPLIT,
    IMAGE_EXTENSIONS,
    Batch,
    ImageDataset,
    Samples,
    Skipped,
    UnreadableImageError,
    View,
    check_image,
    collate,
    describe_skipped,
    load_image,
    make_loader,
    scan_folder,
    split_samples,
)
from ensemblenet.errors import ConfigError, DataError
from ensemblenet.spec import InputSpec

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# --- helpers ----------------------------------------------------------------------------------


def write_image(path: Path, color: tuple[int, int, int] = RED, size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def two_tone(
    path: Path,
    size: tuple[int, int] = (40, 20),
    left: tuple[int, int, int] = RED,
    right: tuple[int, int, int] = BLUE,
    **save: Any,
) -> Path:
    """An image whose left half is ``left`` and right half ``right`` (so flips and rotations show)."""
    w, h = size
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, w // 2, h))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def jpeg_bytes(size: tuple[int, int] = (96, 96), seed: int = 0) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def truncated_jpeg(path: Path) -> Path:
    data = jpeg_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: len(data) // 2])  # cut inside the compressed data, after the header
    return path


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def synthetic(counts: dict[str, int], root: str = "/data") -> Samples:
    """Samples without files, for split tests."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, (name, n) in enumerate(counts.items()):
        paths += [Path(f"{root}/{name}/{name}.{i}.jpg") for i in range(n)]
        labels += [label] * n
    return Samples(tuple(paths), tuple(labels), tuple(counts))


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for name in ("b.jpg", "a.png", "c.JPEG"):
        write_image(root / "dogs" / name, GREEN)
    for name in ("x.jpg", "y.bmp"):
        write_image(root / "cats" / name, RED)
    (root / "cats" / ".hidden.jpg").write_bytes(b"not an image")  # hidden: ignored
    (root / "cats" / "notes.txt").write_text("not counted")  # other extension: ignored
    (root / ".cache").mkdir()  # hidden folder: not a class
    write_image(root / "stray.jpg")  # loose file next to class folders: ignored
    return root


# --- scan_folder ------------------------------------------------------------------------------


def test_extensions_are_lowercase_and_complete() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == IMAGE_EXTENSIONS


def test_scan_folders_layout(folders: Path) -> None:
    samples = scan_folder(folders)
    assert samples.classes == ("cats", "dogs")
    rel = [p.relative_to(folders).as_posix() for p in samples.paths]
    assert rel == ["cats/x.jpg", "cats/y.bmp", "dogs/a.png", "dogs/b.jpg", "dogs/c.JPEG"]
    assert samples.labels == (0, 0, 1, 1, 1)
    assert samples.skipped == ()
    assert samples.class_counts() == {"cats": 2, "dogs": 3}
    assert scan_folder(folders, layout="folders") == samples


def test_scan_classes_fix_order_and_subset(folders: Path) -> None:
    write_image(folders / "birds" / "z.jpg")
    samples = scan_folder(folders, classes=["dogs", "cats"])
    assert samples.classes == ("dogs", "cats")
    assert [(p.parent.name, label) for p, label in zip(samples.paths, samples.labels, strict=True)] == [
        ("cats", 1),
        ("cats", 1),
        ("dogs", 0),
        ("dogs", 0),
        ("dogs", 0),
    ]


def test_scan_kaggle_layout(tmp_path: Path) -> None:
    for name in ("dog.45.jpg", "cat.123.jpg", "cat.7.png", "dog.x.y.jpg"):
        write_image(tmp_path / name)
    (tmp_path / "README.md").write_text("ignored")
    for layout in ("auto", "kaggle"):
        samples = scan_folder(tmp_path, layout=layout)
        assert samples.classes == ("cat", "dog")
        assert [p.name for p in samples.paths] == ["cat.123.jpg", "cat.7.png", "dog.45.jpg", "dog.x.y.jpg"]
        assert samples.labels == (0, 0, 1, 1)
    assert scan_folder(tmp_path, layout="kaggle", classes=["dog", "cat"]).classes == ("dog", "cat")


def test_kaggle_names_that_do_not_match(tmp_path: Path) -> None:
    for name in ("cat.1.jpg", "dog.2.jpg", "1.jpg"):
        write_image(tmp_path / name)
    with pytest.raises(DataError, match=r"1\.jpg.*'folders'.*'kaggle'.*layout='kaggle'"):
        scan_folder(tmp_path)
    samples = scan_folder(tmp_path, layout="kaggle")
    assert [p.name for p in samples.paths] == ["cat.1.jpg", "dog.2.jpg"]
    assert [(p.name, "<class>" in reason) for p, reason in samples.skipped] == [("1.jpg", True)]


def test_auto_prefers_folders_over_flat_files(folders: Path) -> None:
    write_image(folders / "cat.1.jpg")
    assert scan_folder(folders).classes == ("cats", "dogs")


@pytest.mark.parametrize(
    ("setup", "kwargs", "pattern"),
    [
        (lambda r: None, {"sub": "nope"}, r"nope does not exist"),
        (lambda r: write_image(r / "x.jpg").rename(r / "file"), {"sub": "file"}, r"is a file, not a folder"),
        (lambda r: (r / "empty").mkdir(), {"sub": "empty"}, r"no images found"),
        (lambda r: (write_image(r / "cats/a.jpg"), (r / "dogs").mkdir()), {}, r"folder .*dogs has no images"),
        (lambda r: write_image(r / "cats/a.jpg"), {}, r"found 1 class.*at least 2"),
        (lambda r: write_image(r / "cat.1.jpg"), {}, r"found 1 class.*at least 2"),
        (
            lambda r: (write_image(r / "cats/a.jpg"), write_image(r / "dogs/b.jpg")),
            {"classes": ["cat", "dogs"]},
            r"'cat'.*Did you mean 'cats'",
        ),
        (lambda r: write_image(r / "cat.1.jpg"), {"layout": "folders"}, r"no class sub-folders"),
        (lambda r: write_image(r / "a/b/c.jpg"), {"layout": "kaggle"}, r"no image files directly.*'folders'"),
        (
            lambda r: (write_image(r / "train/ants/a.jpg"), write_image(r / "train/bees/b.jpg")),
            {},
            r"train hold class folders.*scan_folder\(.*train'\)",
        ),
    ],
    ids=[
        "missing",
        "file",
        "empty",
        "empty-class",
        "one-class",
        "one-kaggle-class",
        "unknown-class",
        "no-folders",
        "no-flat",
        "splits-root",
    ],
)
def test_scan_errors(
    tmp_path: Path, setup: Callable[[Path], object], kwargs: dict[str, object], pattern: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    setup(root)
    sub = kwargs.pop("sub", None)
    with pytest.raises(DataError, match=pattern):
        scan_folder(root / str(sub) if sub else root, **kwargs)  # type: ignore[arg-type]


def test_scan_config_errors(folders: Path) -> None:
    with pytest.raises(ConfigError, match=r"'kagle'.*Did you mean 'kaggle'"):
        scan_folder(folders, layout="kagle")
    with pytest.raises(ConfigError, match="twice"):
        scan_folder(folders, classes=["cats", "cats"])
    with pytest.raises(ConfigError, match="list of class names"):
        scan_folder(folders, classes="cats")


def test_verify_skips_bad_files(folders: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folders / "cats" / "empty.jpg").write_bytes(b"")
    (folders / "cats" / "text.jpg").write_text("hello, I am not a JPEG")
    truncated_jpeg(folders / "dogs" / "cut.jpg")
    with caplog.at_level(logging.WARNING, logger="ensemblenet"):
        samples = scan_folder(folders)
    assert len(samples) == 5  # the good ones
    reasons = {p.name: r for p, r in samples.skipped}
    assert set(reasons) == {"empty.jpg", "text.jpg", "cut.jpg"}
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["text.jpg"]
    assert "truncated" in reasons["cut.jpg"]
    assert "skipped 3 of 8" in caplog.text and "cut.jpg" in caplog.text
    assert len(scan_folder(folders, verify=False)) == 8


def test_class_with_only_bad_files_is_an_error(tmp_path: Path) -> None:
    write_image(tmp_path / "cats" / "a.jpg")
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"'dogs'.*unreadable"):
        scan_folder(tmp_path)


# --- Samples ----------------------------------------------------------------------------------


def test_samples_validation_and_helpers() -> None:
    with pytest.raises(DataError, match="one label per path"):
        Samples((Path("a"),), (0, 1), ("x", "y"))
    with pytest.raises(DataError, match="out of range"):
        Samples((Path("a"),), (2,), ("x", "y"))
    samples = Samples(["b", "a"], [1, 0], ["x", "y"], skipped=[("c", "bad")])  # type: ignore[arg-type]
    assert samples.paths == (Path("b"), Path("a")) and samples.labels == (1, 0)
    sub = samples.subset([1])
    assert sub.paths == (Path("a"),) and sub.classes == ("x", "y") and sub.skipped == ()
    assert sub.class_counts() == {"x": 1, "y": 0}
    assert "1 images" in repr(sub)
    assert describe_skipped(samples, [1, 1, 0]).startswith("2 unreadable")
    many = synthetic({"a": 10, "b": 10})
    text = describe_skipped(many, range(8))
    assert "a.0.jpg" in text and "and 3 more" in text and "a.7.jpg" not in text


def test_limit_is_stratified_and_deterministic() -> None:
    samples = synthetic({"a": 300, "b": 100, "c": 2})
    small = samples.limit(40, seed=3)
    assert len(small) == 40
    counts = small.class_counts()
    assert counts["c"] >= 1 and abs(counts["a"] - 3 * counts["b"]) <= 3
    assert small == samples.limit(40, seed=3)
    assert small != samples.limit(40, seed=4)
    assert list(small.paths) == [p for p in samples.paths if p in set(small.paths)]  # original order
    assert samples.limit(10_000) == samples.subset(range(len(samples)))
    with pytest.raises(ConfigError):
        samples.limit(-1)


# --- split_samples ----------------------------------------------------------------------------


def test_default_split_sizes_are_exact() -> None:
    parts = split_samples(synthetic({"cat": 12_500, "dog": 12_500}))
    assert [len(p) for p in parts] == [16_000, 4_500, 4_500]
    assert [p.class_counts() for p in parts] == [
        {"cat": 8000, "dog": 8000},
        {"cat": 2250, "dog": 2250},
        {"cat": 2250, "dog": 2250},
    ]
    parts = split_samples(synthetic({"cat": 10_250, "dog": 10_250}))
    assert [len(p) for p in parts] == [13_120, 3_690, 3_690]


def test_split_is_deterministic_and_independent_of_order() -> None:
    samples = synthetic({"a": 57, "b": 31, "c": 12})
    first = split_samples(samples, (0.5, 0.3, 0.2), seed=7)
    assert first == split_samples(samples, (0.5, 0.3, 0.2), seed=7)
    order = list(range(len(samples)))
    random.Random(1).shuffle(order)
    assert split_samples(samples.subset(order), (0.5, 0.3, 0.2), seed=7) == first
    assert split_samples(samples, (0.5, 0.3, 0.2), seed=8) != first
    assert all(part.classes == samples.classes for part in first)


def test_split_rejects_bad_fractions() -> None:
    samples = synthetic({"a": 10, "b": 10})
    for fractions in [(0.5, 0.4), (0.7, 0.4, -0.1), (1.0, 0.0), (), ("a", "b"), (float("nan"), 1.0)]:
        with pytest.raises(ConfigError, match="fractions"):
            split_samples(samples, fractions)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        split_samples(samples, (0.5, 0.5), seed=-1)


def test_split_too_small_class_says_how_many_are_needed() -> None:
    samples = synthetic({"a": 100, "b": 3})
    with pytest.raises(DataError, match=r"class 'b', which has 3 image.*at least (\d+) images"):
        split_samples(samples, DEFAULT_SPLIT)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 60), min_size=2, max_size=4),
    weights=st.lists(st.floats(0.05, 1.0), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_split_property(counts: list[int], weights: list[float], seed: int) -> None:
    samples = synthetic({f"c{i}": n for i, n in enumerate(counts)})
    fractions = [w / sum(weights) for w in weights]
    try:
        parts = split_samples(samples, fractions, seed=seed)
    except DataError as exc:  # allowed only when some class really cannot cover every split
        assert min(counts) < len(fractions) or any(n * min(fractions) < 1 for n in counts), exc
        return
    all_paths = [p for part in parts for p in part.paths]
    assert sorted(all_paths) == sorted(samples.paths)  # complete, and no duplicates
    for part in parts:
        assert part.classes == samples.classes
    for c, n in enumerate(counts):
        sizes = [part.class_counts()[f"c{c}"] for part in parts]
        assert sum(sizes) == n and min(sizes) >= 1
        assert all(abs(size - n * f) < 1 for size, f in zip(sizes, fractions, strict=True))


# --- load_image -------------------------------------------------------------------------------


def test_import_has_no_pil_side_effects() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored image must be turned 90 degrees clockwise to be shown
    path = two_tone(tmp_path / "rotated.jpg", (40, 20), RED, GREEN, exif=exif.tobytes(), quality=95)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (20, 40)  # width and height swapped
    assert close(pixel(image, (10, 5)), RED) and close(
        pixel(image, (10, 35)), GREEN
    )  # left half is now on top


def _save(image: Image.Image, path: Path, **kwargs: Any) -> Path:
    image.save(path, **kwargs)
    return path


def test_mode_conversions(tmp_path: Path) -> None:
    gray = _save(Image.new("L", (4, 4), 100), tmp_path / "gray.png")
    assert pixel(load_image(gray), (0, 0)) == (100, 100, 100)

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert pixel(load_image(_save(palette, tmp_path / "p.png")), (0, 0)) == (10, 20, 30)
    palette.putpixel((1, 1), 0)
    transparent = _save(palette, tmp_path / "ptrans.png", transparency=0)
    assert pixel(load_image(transparent), (1, 1)) == (255, 255, 255)  # transparent index over white
    assert pixel(load_image(transparent), (0, 0)) == (10, 20, 30)

    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    loaded = load_image(_save(rgba, tmp_path / "rgba.png"))
    assert [pixel(loaded, (x, 0)) for x in range(2)] == [(255, 255, 255), BLUE]
    assert close(pixel(loaded, (2, 0)), (127, 127, 127), tol=1)

    la = _save(Image.new("LA", (2, 2), (0, 0)), tmp_path / "la.png")
    assert pixel(load_image(la), (0, 0)) == (255, 255, 255)

    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 0, 0, 0), (255, 0, 0, 0)])
    loaded = load_image(_save(cmyk, tmp_path / "cmyk.tif"))
    assert [pixel(loaded, (x, 0)) for x in range(2)] == [(255, 255, 255), (0, 255, 255)]


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 32768, 65535, 257]], dtype=np.uint16)
    source = Image.fromarray(values)
    assert source.mode == "I;16"
    loaded = load_image(_save(source, tmp_path / "deep.png"))
    got = [pixel(loaded, (x, 0))[0] for x in range(4)]
    assert got[0] == 0 and abs(got[1] - 128) <= 1 and got[2] == 255 and got[3] == 1
    assert all(len(set(pixel(loaded, (x, 0)))) == 1 for x in range(4))  # gray stays gray

    int32 = Image.fromarray(values.astype(np.int32))
    assert int32.mode == "I"
    assert pixel(load_image(_save(int32, tmp_path / "int32.tif")), (2, 0)) == (255, 255, 255)
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [pixel(load_image(_save(floats, tmp_path / "f.tif")), (x, 0))[0] for x in range(3)] == [
        0,
        128,
        255,
    ]


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), color) for color in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert getattr(check, "n_frames", 1) == 3
    image = load_image(path)
    assert image.mode == "RGB" and close(pixel(image, (3, 3)), RED, tol=3)


def test_decompression_bomb_is_an_unreadable_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    warn_size = write_image(tmp_path / "warn.png", size=(15, 10))  # 150 px: over the limit, under twice
    error_size = write_image(tmp_path / "error.png", size=(30, 30))  # 900 px: over twice the limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for path, pixels in ((warn_size, 150), (error_size, 900)):
        with pytest.raises(UnreadableImageError, match=rf"{pixels} pixels.*MAX_IMAGE_PIXELS") as info:
            load_image(path)
        assert info.value.path == path
        assert "decompression bomb" in str(check_image(path))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    assert load_image(error_size).size == (30, 30)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "missing", "folder"])
def test_broken_files_raise_unreadable(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("definitely not pixels")
    elif kind == "truncated":
        truncated_jpeg(path)
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(UnreadableImageError) as info:
        load_image(path)
    assert str(path) in str(info.value) and info.value.reason
    assert check_image(path) is not None


def test_unreadable_error_pickles() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(UnreadableImageError("/x.jpg", "empty file")))
    assert isinstance(error, UnreadableImageError) and isinstance(error, DataError)
    assert error.path == Path("/x.jpg") and error.reason == "empty file"


def _valid_files() -> list[bytes]:
    out = [jpeg_bytes((32, 24), seed=1)]
    for fmt, mode in (("PNG", "RGBA"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB"), ("TIFF", "RGB")):
        buffer = io.BytesIO()
        Image.new(mode, (16, 12)).save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


VALID_FILES = _valid_files()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=2048),
        st.tuples(
            st.sampled_from(VALID_FILES),
            st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
            st.one_of(st.just(0), st.integers(1, 10_000)),  # 0: not truncated
        ).map(lambda t: _mutate(*t)),
    )
)
def test_fuzz_load_image_only_raises_unreadable(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # keeps mutated headers from allocating GBs
        path = Path(tmp) / "fuzz.jpg"
        path.write_bytes(data)
        try:
            image = load_image(path)
        except UnreadableImageError:
            pass
        else:
            assert image.mode == "RGB"
            image.getpixel((0, 0))
        reason = check_image(path)
        assert reason is None or isinstance(reason, str)


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    buffer = bytearray(data)
    for position, value in flips:
        buffer[position % len(buffer)] = value
    return bytes(buffer[: max(1, len(buffer) - cut % len(buffer))])


# --- View, ImageDataset, collate, make_loader -------------------------------------------------


def test_view_validation() -> None:
    assert View.of(InputSpec(size=(20, 30), interpolation="bicubic")) == View((20, 30), "bicubic")
    assert View(12).size == (12, 12)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Did you mean 'bilinear'"):
        View((4, 4), "bilinar")
    with pytest.raises(ConfigError, match="positive"):
        View((0, 4))
    with pytest.raises(ConfigError, match="InputSpec or a View"):
        View.of("224")  # type: ignore[arg-type]


@pytest.fixture
def two_tone_samples(tmp_path: Path) -> Samples:
    paths = [two_tone(tmp_path / f"img{i}.png", (40, 20)) for i in range(3)]
    return Samples(tuple(paths), (0, 1, 0), ("a", "b"))


def test_dataset_two_views(two_tone_samples: Samples) -> None:
    spec = InputSpec(size=(32, 48))
    same_view_other_stats = InputSpec(size=(32, 48), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    small = View((16, 16), "nearest")
    dataset = ImageDataset(two_tone_samples, [spec, small, same_view_other_stats])
    assert dataset.views == (View((32, 48), "bilinear"), small)
    assert dataset.view_index(same_view_other_stats) == 0 and dataset.view_index(small) == 1
    with pytest.raises(ConfigError, match="not one of this dataset's views"):
        dataset.view_index(View((8, 8)))
    item = dataset[1]
    assert not isinstance(item, Skipped)
    (big, little), label, index = item
    assert (label, index) == (1, 1)
    assert big.shape == (3, 32, 48) and little.shape == (3, 16, 16)
    assert big.dtype == little.dtype == torch.uint8 and big.is_contiguous()
    expected = np.array(load_image(two_tone_samples.paths[1]).resize((48, 32), Image.Resampling.BILINEAR))
    assert torch.equal(big, torch.from_numpy(expected).permute(2, 0, 1))  # direct resize, no crop
    assert little[:, :, 0].tolist() == [[255] * 16, [0] * 16, [0] * 16]  # left edge red
    assert little[:, :, -1].tolist() == [[0] * 16, [0] * 16, [255] * 16]  # right edge blue
    assert len(dataset) == 3 and dataset[-1][2] == 2  # type: ignore[index]
    for bad in (3, -4):
        with pytest.raises(IndexError):
            dataset[bad]
    with pytest.raises(ConfigError):
        ImageDataset(two_tone_samples, [])


def test_augment_flips_all_views_alike(two_tone_samples: Samples) -> None:
    dataset = ImageDataset(two_tone_samples, [View((10, 20)), View((8, 8), "nearest")], augment=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(24):
        item = dataset[0]
        assert not isinstance(item, Skipped)
        big, small = item[0]
        flipped_big = big[2, 5, 0].item() == 255  # blue on the left
        flipped_small = small[2, 4, 0].item() == 255
        assert flipped_big == flipped_small
        seen.add(flipped_big)
    assert seen == {True, False}
    plain = ImageDataset(two_tone_samples, View((8, 8), "nearest"))
    assert all(plain[0][0][0][0, 4, 0].item() == 255 for _ in range(10))  # type: ignore[index]


def test_truncated_file_mid_batch(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = [write_image(tmp_path / f"{i}.png", RED if i % 2 else GREEN) for i in range(5)]
    paths[2] = truncated_jpeg(tmp_path / "2.jpg")
    samples = Samples(tuple(paths), (0, 1, 0, 1, 0), ("g", "r"))
    with caplog.at_level(logging.WARNING, logger="ensemblenet"):
        batches = list(make_loader(samples, View((4, 4)), batch_size=5))
    assert len(batches) == 1
    batch = batches[0]
    assert isinstance(batch, Batch) and len(batch) == 4
    assert batch.skipped == [2]
    assert batch.indices.tolist() == [0, 1, 3, 4] and batch.labels.tolist() == [0, 1, 1, 0]
    assert batch.labels.dtype == batch.indices.dtype == torch.int64
    assert batch.images[0].shape == (4, 3, 4, 4) and batch.images[0].dtype == torch.uint8
    assert batch.images[0][1, 0, 0, 0].item() == 255 and batch.images[0][0, 1, 0, 0].item() == 255
    assert "2.jpg" in caplog.text
    assert "2.jpg" in describe_skipped(samples, batch.skipped)


def test_all_skipped_batch_keeps_shapes(tmp_path: Path) -> None:
    bad = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for path in bad:
        path.write_bytes(b"")
    samples = Samples(tuple(bad), (0, 1), ("x", "y"))
    (batch,) = list(make_loader(samples, [View((5, 7)), View((3, 3))], batch_size=4))
    assert [tuple(t.shape) for t in batch.images] == [(0, 3, 5, 7), (0, 3, 3, 3)]
    assert batch.labels.shape == (0,) and batch.labels.dtype == torch.int64 and batch.skipped == [0, 1]
    assert collate([Skipped(0, "x")]).images == ()
    assert len(collate([])) == 0


def _epoch_orders(samples: Samples, seed: int, epochs: int = 2, **kwargs: object) -> list[list[int]]:
    loader = make_loader(samples, View((2, 2)), batch_size=4, shuffle=True, seed=seed, **kwargs)  # type: ignore[arg-type]
    return [[i for batch in loader for i in batch.indices.tolist()] for _ in range(epochs)]


@pytest.fixture
def tiny(tmp_path: Path) -> Samples:
    paths = [write_image(tmp_path / f"{i:02d}.png", size=(2, 2)) for i in range(16)]
    return Samples(tuple(paths), tuple(i % 2 for i in range(16)), ("a", "b"))


def test_loader_shuffle_is_reproducible(tiny: Samples) -> None:
    first = _epoch_orders(tiny, seed=5)
    assert first == _epoch_orders(tiny, seed=5)
    assert first[0] != first[1]  # a new order each epoch
    assert sorted(first[0]) == list(range(16))
    assert _epoch_orders(tiny, seed=6) != first
    plain = make_loader(tiny, View((2, 2)), batch_size=5)
    assert [i for b in plain for i in b.indices.tolist()] == list(range(16))
    assert [len(b) for b in make_loader(tiny, View((2, 2)), batch_size=5, drop_last=True)] == [5, 5, 5]


def test_loader_with_workers(tiny: Samples) -> None:
    first = _epoch_orders(tiny, seed=1, epochs=1, num_workers=2)
    assert first == _epoch_orders(tiny, seed=1, epochs=1, num_workers=2)
    assert first == _epoch_orders(tiny, seed=1, epochs=1)  # the order does not depend on workers


def test_augmented_loader_with_workers_is_reproducible(two_tone_samples: Samples) -> None:
    def flips() -> list[bool]:
        loader = make_loader(
            two_tone_samples, View((4, 4), "nearest"), batch_size=1, shuffle=True, augment=True, num_workers=2
        )
        return [bool(b.images[0][0, 2, 0, 0] == 255) for _ in range(4) for b in loader]  # blue on the left

    first = flips()
    assert first == flips() and len(first) == 12


def test_loader_validation(tiny: Samples) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(tiny, View((2, 2)), batch_size=0)
    with pytest.raises(ConfigError, match="num_workers"):
        make_loader(tiny, View((2, 2)), num_workers=-1)
    with pytest.raises(ConfigError, match="Samples"):
        ImageDataset([1, 2], View((2, 2)))  # type: ignore[arg-type]


# --- real data (skipped when ../shared/data is absent) ------------------------------------------


@pytest.mark.realdata
def test_hymenoptera_train() -> None:
    root = DATA / "hymenoptera" / "train"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    samples = scan_folder(root)
    assert samples.classes == ("ants", "bees") and samples.skipped == ()
    assert samples.class_counts() == {"ants": 124, "bees": 121}
    # imageNotFound.gif is a valid 300x300 GIF (a "we're sorry" placeholder), so it stays, as an ant.
    gif = root / "ants" / "imageNotFound.gif"
    assert gif in samples.paths and not (DATA / "hymenoptera" / "val" / "ants" / "imageNotFound.gif").exists()
    assert load_image(gif).size == (300, 300)
    train, val = split_samples(samples, (0.8, 0.2))
    assert len(train) + len(val) == 245


@pytest.mark.realdata
def test_dogs_vs_cats_scan_and_split() -> None:
    root = DATA / "dogs-vs-cats-200px"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    start = time.perf_counter()
    samples = scan_folder(root, verify=True)
    elapsed = time.perf_counter() - start
    logging.getLogger("ensemblenet.tests").info("verified scan of %d files: %.1f s", len(samples), elapsed)
    assert samples.classes == ("cats", "dogs") and samples.skipped == ()
    assert samples.class_counts() == {"cats": 10_250, "dogs": 10_250}
    for path, label in zip(samples.paths, samples.labels, strict=True):
        assert path.name.startswith(("cat.", "dog.")[label])
    parts = split_samples(samples)
    assert [len(p) for p in parts] == [13_120, 3_690, 3_690]


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1)])
def test_a_view_never_hands_torch_pils_read_only_buffer(size: tuple[int, int]) -> None:
    """A 1-pixel-wide or -high view's CHW transpose is already contiguous, so a no-copy conversion
    would give torch PIL's read-only buffer (a UserWarning that torch shows once per process, hence
    a fresh interpreter with warnings as errors)."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from PIL import Image; from ensemblenet.data import View; "
        "image = Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)); "
        f"View({size!r}, 'nearest').apply(image)[0, 0, 0] = 1"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
