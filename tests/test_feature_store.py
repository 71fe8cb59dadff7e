"""FeatureStore: frozen-prefix features on disk, read back by a later run with the same prefix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from ensemblenet.data import Samples, scan_folder
from ensemblenet.models import TransferModel
from ensemblenet.training import (
    FeatureCache,
    FeatureStore,
    TrainConfig,
    Trainer,
    compute_features,
    fit_with_feature_cache,
)

from .conftest import make_tiny_model, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def _count_images(model: TransferModel) -> list[int]:
    """A list that counts the images the backbone's first layer sees (the prefix really ran)."""
    seen = [0]
    model.backbone[0].register_forward_hook(
        lambda _m, args, _out: seen.__setitem__(0, seen[0] + len(args[0]))
    )
    return seen


def _samples(tmp_path: Path, per_class: int = 6) -> Samples:
    return scan_folder(write_class_folder(tmp_path / "images", per_class=per_class, size=(20, 20)))


def _features(
    model: TransferModel, samples: Samples, store: FeatureStore | None, **kwargs: Any
) -> FeatureCache:
    return compute_features(model, samples, None, engine="torch", store=store, **kwargs)


def _same(a: FeatureCache, b: FeatureCache) -> None:
    assert torch.equal(a.labels, b.labels) and torch.equal(a.indices, b.indices) and a.skipped == b.skipped
    torch.testing.assert_close(a.features, b.features, rtol=0, atol=2e-3)  # float16 rows, other batches


def test_a_second_run_reads_every_image_and_gets_the_same_cache(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    model = make_tiny_model(classes=samples.classes, spec=None)
    seen = _count_images(model)
    store = FeatureStore(tmp_path / "store")
    n = 2 * len(samples)  # images through the prefix per pass: plain and mirrored
    plain = _features(model, samples, None, flips=True)
    assert seen[0] == n
    first = _features(model, samples, store, flips=True)
    assert seen[0] == 2 * n
    second = _features(model, samples, store, flips=True)
    assert seen[0] == 2 * n  # nothing ran
    _same(first, plain)
    _same(second, plain)
    assert torch.equal(second.features, first.features)  # the stored rows, bit for bit
    plain_only = _features(model, samples, store)  # the plain view is read on its own too
    assert seen[0] == 2 * n and torch.equal(plain_only.features[0], first.features[0])


def test_only_the_images_the_store_lacks_are_computed(tmp_path: Path) -> None:
    samples = _samples(tmp_path, per_class=8)
    model = make_tiny_model(classes=samples.classes, spec=None)
    seen = _count_images(model)
    store = FeatureStore(tmp_path / "store")
    _features(model, samples.subset(range(0, 16, 2)), store)  # the even images
    seen[0] = 0
    everything = _features(model, samples, store)
    assert seen[0] == 8  # the odd ones
    _same(everything, _features(make_tiny_model(classes=samples.classes, spec=None), samples, None))


def test_changed_weights_or_a_changed_file_are_computed_again(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    model = make_tiny_model(classes=samples.classes, spec=None)
    seen = _count_images(model)
    store = FeatureStore(tmp_path / "store")
    _features(model, samples, store)
    with torch.no_grad():
        model.backbone[0].weight[0, 0, 0, 0] += 1e-3  # one weight of the prefix
    seen[0] = 0
    _features(model, samples, store)
    assert seen[0] == len(samples)
    touched = samples.paths[3]
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as an edit would
    seen[0] = 0
    _features(model, samples, store)
    assert seen[0] == 1
    seen[0] = 0
    _features(model, samples, store, dtype=torch.float32)  # another stored dtype: another prefix
    assert seen[0] == len(samples)


def test_unreadable_images_are_skipped_and_counted_every_time_and_a_torn_shard_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    samples = _samples(tmp_path)
    broken = samples.paths[0].parent / "broken.png"
    broken.write_bytes(b"not an image at all")
    samples = Samples((*samples.paths, broken), (*samples.labels, 0), samples.classes)
    model = make_tiny_model(classes=samples.classes, spec=None)
    seen = _count_images(model)
    store = FeatureStore(tmp_path / "store")
    first = _features(model, samples, store)
    second = _features(model, samples, store)
    assert first.skipped == second.skipped == [len(samples) - 1]
    assert seen[0] == len(samples) - 1  # the readable ones once
    shard = next((tmp_path / "store").rglob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])  # torn, as a crash outside atomic_write would leave it
    seen[0] = 0
    third = _features(model, samples, store)
    assert seen[0] == len(samples) - 1 and "unreadable shard" in caplog.text
    _same(third, first)


def test_training_with_a_store_is_the_same_training(tmp_path: Path) -> None:
    samples = _samples(tmp_path)
    histories = []
    for store in (None, str(tmp_path / "store"), str(tmp_path / "store")):
        model = make_tiny_model(classes=samples.classes, seed=1)
        config = TrainConfig(
            epochs=2, lr=1e-2, batch_size=4, progress=False, augment="flip", feature_store=store
        )
        trainer = Trainer(config, freeze="head_only")
        history = fit_with_feature_cache(
            trainer, model, samples, samples, dtype=torch.float32, engine="torch"
        )
        histories.append([x for r in history.records for x in (r.train_loss, r.val_loss)])
    assert histories[0] == pytest.approx(histories[1], rel=1e-5) and histories[1] == histories[2]
    assert list((tmp_path / "store").iterdir())  # the store was written


def test_a_refit_and_a_rerun_read_what_the_first_run_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ensemblenet import finetune, load_model

    from .conftest import registered_tiny_source

    folder = write_class_folder(tmp_path / "images", per_class=20)
    store = tmp_path / "store"
    with registered_tiny_source("store-tiny"), caplog.at_level("INFO", logger="ensemblenet.training"):
        first = finetune(
            "store-tiny:4",
            folder,
            epochs=2,
            refit=True,
            out=tmp_path / "a.pt",
            progress=False,
            feature_store=store,
        )
        n_train, n_val = len(first.splits["train"]), len(first.splits["val"])
        reads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature store")]
        assert reads == [
            f"feature store: 0 of {n_train} images read, {n_train} computed",
            f"feature store: 0 of {n_val} images read, {n_val} computed",
            # the refit trains on train + validation: every image is already there
            f"feature store: {n_train + n_val} of {n_train + n_val} images read, 0 computed",
        ]
        caplog.clear()
        again = finetune(
            "store-tiny:4", folder, epochs=2, out=tmp_path / "b.pt", progress=False, feature_store=store
        )
        reads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feature store")]
        assert reads == [
            f"feature store: {n_train} of {n_train} images read, 0 computed",
            f"feature store: {n_val} of {n_val} images read, 0 computed",
        ]
        a, b = load_model(first.path).state_dict(), load_model(again.path).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same training
