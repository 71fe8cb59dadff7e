"""The decoded-image cache (ensemblenet.data.DecodedCache) and JPEG draft decoding: correctness, not speed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ensemblenet.data import (
    DecodedCache,
    ImageDataset,
    Samples,
    Skipped,
    View,
    file_stamp,
    load_image,
    make_loader,
    scan_folder,
)
from ensemblenet.errors import ConfigError

from .conftest import SHARED_DATA, write_class_folder

VIEWS = (View((16, 16)), View((12, 20), "bicubic"))


def _samples(tmp_path: Path, per_class: int = 4) -> Samples:
    return scan_folder(write_class_folder(tmp_path / "images", per_class=per_class, size=(24, 30)))


def _replace_keeping_stamp(path: Path, data: bytes) -> None:
    """Overwrite ``path`` with same-length bytes and restore its mtime: the cache cannot tell."""
    st_before = path.stat()
    assert len(data) == st_before.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))


def test_cached_items_equal_uncached_and_later_reads_do_not_decode(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    plain = ImageDataset(samples, VIEWS)
    cached = ImageDataset(samples, VIEWS, cache=tmp_path / "cache")
    for i in range(len(samples)):  # first epoch: misses, decoded and written
        a, b = plain[i], cached[i]
        assert not isinstance(a, Skipped) and not isinstance(b, Skipped)
        for ta, tb in zip(a[0], b[0], strict=True):
            assert ta.dtype == tb.dtype == torch.uint8 and torch.equal(ta, tb)
        assert a[1:] == b[1:]
    # Corrupt a file without changing its (mtime, size) stamp: only a cache hit still gives the pixels.
    victim = samples.paths[0]
    _replace_keeping_stamp(victim, b"\0" * victim.stat().st_size)
    fresh = ImageDataset(samples, VIEWS, cache=tmp_path / "cache")  # a new process would see the same files
    hit = fresh[0]
    assert not isinstance(hit, Skipped)
    before = plain.views[0].apply(Image.open(samples.paths[1]).convert("RGB"))
    assert torch.equal(fresh[1][0][0], before)  # type: ignore[index]
    assert isinstance(plain[0], Skipped)  # the uncached path does decode, and fails


def test_changed_file_is_decoded_again(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    cache = DecodedCache(tmp_path / "cache")
    first = ImageDataset(samples, VIEWS, cache=cache)[0]
    path = samples.paths[0]
    Image.fromarray(np.full((24, 30, 3), 7, dtype=np.uint8)).save(path)  # new content and stamp
    again = ImageDataset(samples, VIEWS, cache=cache)[0]
    assert not isinstance(first, Skipped) and not isinstance(again, Skipped)
    assert not torch.equal(first[0][0], again[0][0])
    assert torch.equal(again[0][0], torch.full((3, 16, 16), 7, dtype=torch.uint8))


def test_changed_view_uses_its_own_rows(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    small = ImageDataset(samples, View((8, 8)), cache=tmp_path / "cache")
    large = ImageDataset(samples, View((20, 10)), cache=tmp_path / "cache")
    other_interp = ImageDataset(samples, View((8, 8), "nearest"), cache=tmp_path / "cache")
    plain_nearest = ImageDataset(samples, View((8, 8), "nearest"))
    for i in range(len(samples)):
        assert small[i][0][0].shape == (3, 8, 8)  # type: ignore[index]
        assert large[i][0][0].shape == (3, 20, 10)  # type: ignore[index]
        assert torch.equal(other_interp[i][0][0], plain_nearest[i][0][0])  # type: ignore[index]
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 3


def test_unreadable_file_stays_skipped_and_is_remembered(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    bad = samples.paths[2]
    bad.write_bytes(b"not an image at all, just bytes")
    dataset = ImageDataset(samples, VIEWS, cache=tmp_path / "cache")
    first = dataset[2]
    assert isinstance(first, Skipped)
    view_cache = dataset._view_caches[0]  # type: ignore[index]
    assert view_cache.lookup(2, file_stamp(bad)) == first.reason  # remembered with its reason
    second = ImageDataset(samples, VIEWS, cache=tmp_path / "cache")[2]
    assert second == first
    # Repairing the file changes its stamp, so it is decoded (and cached) again.
    Image.fromarray(np.zeros((24, 30, 3), dtype=np.uint8)).save(bad.with_suffix(".png"))
    os.replace(bad.with_suffix(".png"), bad)
    assert not isinstance(ImageDataset(samples, VIEWS, cache=tmp_path / "cache")[2], Skipped)


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    interpolation=st.sampled_from(["nearest", "bilinear", "bicubic", "lanczos"]),
    seed=st.integers(0, 2**16),
)
def test_uint8_flip_equals_pil_flip_before_resize(
    height: int, width: int, interpolation: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, size=(int(rng.integers(1, 50)), 31, 3), dtype=np.uint8))
    view = View((height, width), interpolation)
    flipped_after = view.apply(image).flip(-1)
    flipped_before = view.apply(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert torch.equal(flipped_after, flipped_before)  # exact: resampling is mirror-symmetric


def test_augmented_cached_loader_matches_uncached(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    loaders = [
        make_loader(samples, VIEWS, batch_size=3, shuffle=True, augment=True, seed=1, cache_dir=cache)
        for cache in (None, tmp_path / "cache")
    ]
    for _epoch in range(2):  # epoch 2 of the cached loader reads the cache
        outs = []
        for loader in loaders:
            torch.manual_seed(5)  # the flip coins come from the global RNG with num_workers=0
            outs.append(list(loader))
        for a, b in zip(*outs, strict=True):
            assert torch.equal(a.indices, b.indices)
            for ta, tb in zip(a.images, b.images, strict=True):
                assert torch.equal(ta, tb)


def test_cache_works_in_worker_processes(tmp_path: Path) -> None:
    samples = _samples(tmp_path, per_class=3)
    loader = make_loader(samples, VIEWS, batch_size=2, num_workers=1, cache_dir=tmp_path / "cache")
    first = list(loader)
    second = list(loader)  # rows written by the worker of the first epoch
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.images[0], b.images[0]) and torch.equal(a.images[1], b.images[1])


def test_bad_cache_dir_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "a_file"
    file.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        DecodedCache(file)


NATIVE = SHARED_DATA / "dogs-vs-cats-native-sample"


@pytest.mark.parametrize("size", [(224, 224), (112, 112)])
def test_draft_decode_matches_full_decode_within_tolerance(size: tuple[int, int]) -> None:
    """Stated tolerance, after the same resize: per image, mean absolute difference <= 4 grey levels
    (of 255) and 99th percentile <= 32. Measured on these 24 photos (about 500 px): worst mean 2.0
    and p99 9 at 224 px (1/2 scale), worst mean 3.1 and p99 26 at 112 px (1/4 scale)."""
    if not NATIVE.is_dir():
        pytest.skip(f"{NATIVE} not available")
    paths = sorted((NATIVE / "cats").glob("*.jpg"))[:12] + sorted((NATIVE / "dogs").glob("*.jpg"))[:12]
    view = View(size)
    reduced = 0
    for path in paths:
        full, fast = load_image(path), load_image(path, size=size)
        reduced += fast.size != full.size
        assert min(fast.size) >= min(max(size), min(full.size))  # never below the target
        diff = (view.apply(full).int() - view.apply(fast).int()).abs().float()
        assert diff.mean() <= 4.0, path
        assert float(np.percentile(diff.numpy(), 99)) <= 32.0, path
    assert reduced > 0  # the draft path was really taken for some images


def test_fast_decode_is_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(path)
    assert load_image(path).size == (400, 400)
    assert load_image(path, size=(100, 100)).size == (100, 100)  # 1/4 scale, still >= the target
    assert load_image(path, size=(150, 100)).size == (200, 200)
