"""One split for every training path: cut, checked by content, saved, read back, and refused when
held-out images are training images."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from ensemblenet import DataError, Samples, finetune, scan_folder
from ensemblenet.api import VAL_FROM_TRAIN, resolve_splits
from ensemblenet.data import check_disjoint, file_sha256, find_split_file, load_split

from .conftest import registered_tiny_source, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_folder_is_cut_in_the_notebooks_shares_and_saved_with_every_hash(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=25)
    splits = resolve_splits(folder, seed=3)
    assert {k: len(v) for k, v in splits.parts.items()} == {"train": 32, "val": 10, "test": 8}
    saved = load_split(splits.save(tmp_path / "split.json"))
    assert saved.seed == 3 and saved.fractions == pytest.approx((0.64, 0.18, 0.18))
    for name, part in splits.parts.items():
        assert saved.part(name).paths == tuple(p.resolve() for p in part.paths)
        assert saved.part(name).labels == part.labels
        assert list(saved.hashes[name]) == [file_sha256(p) for p in part.paths]
    with pytest.raises(DataError, match=r"no 'holdout' split; it has \['test', 'train', 'val'\]"):
        saved.part("holdout")


def test_a_separate_test_folder_cuts_validation_from_train(tmp_path: Path) -> None:
    train = write_class_folder(tmp_path / "train", per_class=20, seed=1)
    test = write_class_folder(tmp_path / "test", per_class=5, seed=2)
    splits = resolve_splits({"train": train, "test": test})
    assert {k: len(v) for k, v in splits.parts.items()} == {"train": 32, "val": 8, "test": 10}
    assert splits.fractions == pytest.approx(VAL_FROM_TRAIN)
    limited = resolve_splits({"train": train, "test": test}, limit=12)
    assert len(limited["train"]) == 12 and len(limited["val"]) == 8  # only the training part shrinks
    assert limited["train"].class_counts() == {"cats": 6, "dogs": 6}


def test_given_folders_that_share_images_are_refused_with_a_count_and_an_example(tmp_path: Path) -> None:
    train = write_class_folder(tmp_path / "train", per_class=8, seed=1)
    val = write_class_folder(tmp_path / "val", per_class=4, seed=2)
    shutil.copy(train / "cats" / "cat.3.png", val / "cats" / "renamed.png")  # same bytes, another name
    with pytest.raises(
        DataError, match=r"^1 of the 9 validation images are also training images \(same bytes\)"
    ):
        resolve_splits((train, val))
    with pytest.raises(DataError, match=r"renamed\.png = .*cat\.3\.png"):
        resolve_splits({"train": train, "val": val})


def test_copies_inside_one_folder_are_left_out_of_the_held_out_parts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder with byte-identical copies (Dogs vs Cats has three pairs) is not the user's mistake:
    the copies that land in validation or test are dropped there, with a warning, never trained on."""
    folder = write_class_folder(tmp_path / "images", per_class=20)
    for i in range(6):
        shutil.copy(folder / "cats" / f"cat.{i}.png", folder / "cats" / f"copy.{i}.png")
    with caplog.at_level(logging.WARNING, logger="ensemblenet.data"):
        splits = resolve_splits(folder)
    train_hashes = {file_sha256(p) for p in splits["train"].paths}
    for name in ("val", "test"):
        assert not train_hashes & {file_sha256(p) for p in splits[name].paths}
    assert "left out of the" in caplog.text
    assert sum(len(p) for p in splits.parts.values()) < 46  # something was dropped, nothing added


def test_load_split_refuses_changed_or_missing_held_out_files(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=10)
    splits = resolve_splits(folder)
    path = splits.save(tmp_path / "run" / "m.split.json")
    changed = splits["test"].paths[0]
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(DataError, match="changed since"):
        load_split(tmp_path / "run")
    assert len(load_split(path, verify=()).part("test")) == len(splits["test"])  # not checked: read
    changed.unlink()
    with pytest.raises(DataError, match="no longer exists"):
        load_split(path)


def test_find_split_file_in_a_run_folder(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=10)
    run = tmp_path / "run"
    with pytest.raises(DataError, match="not a folder"):
        run.mkdir()
        find_split_file(run)
    resolve_splits(folder, seed=0).save(run / "a.split.json")
    resolve_splits(folder, seed=0).save(run / "b.split.json")
    assert find_split_file(run).name == "a.split.json"  # two records of the same split
    resolve_splits(folder, seed=1).save(run / "c.split.json")
    with pytest.raises(DataError, match="different splits"):
        find_split_file(run)
    resolve_splits(folder, seed=1).save(run / "split.json")
    assert find_split_file(run).name == "split.json"  # train_ensemble's own file wins
    (run / "split.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="not an ensemblenet split file"):
        load_split(run)


def test_check_disjoint_repairs_only_when_asked() -> None:
    classes = ("a", "b")
    train = Samples([Path(__file__)], [0], classes)
    test = Samples([Path(__file__), Path(__file__).parent / "conftest.py"], [0, 1], classes)
    with pytest.raises(DataError, match="1 of the 2 test images"):
        check_disjoint({"train": train, "test": test})
    repaired = check_disjoint({"train": train, "test": test}, repair=True)
    assert repaired["test"].paths == (Path(__file__).parent / "conftest.py",)


def test_finetune_refuses_a_validation_folder_of_training_images(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "train", per_class=6)
    with registered_tiny_source("split-tiny"), pytest.raises(DataError, match="12 of the 12 validation"):
        finetune("split-tiny:4", (folder, folder), out=tmp_path / "m.pt", progress=False)
    assert not (tmp_path / "m.pt").exists()


def test_finetune_and_train_ensemble_save_the_split_beside_the_models(tmp_path: Path) -> None:
    from ensemblenet import train_ensemble

    folder = write_class_folder(tmp_path / "images", per_class=12)
    with registered_tiny_source("split-tiny"):
        result = finetune("split-tiny:4", folder, out=tmp_path / "one" / "m.pt", epochs=1, progress=False)
        run = train_ensemble(
            [{"backbone": "split-tiny:4", "seed": 1}, {"backbone": "split-tiny:6", "seed": 2}],
            folder,
            out_dir=tmp_path / "ens",
            epochs=1,
            seed=5,
            progress=False,
        )
    assert load_split(result.files["split"]).part("test").paths == tuple(
        p.resolve() for p in result.splits["test"].paths
    )
    shared = load_split(tmp_path / "ens")  # split.json: one split for every member, cut with seed 5
    assert shared.seed == 5 and shared.part("val").paths == tuple(
        p.resolve() for p in run.splits["val"].paths
    )
    for member in run:
        assert load_split(member.path.with_name(member.path.stem + ".split.json")).hashes == shared.hashes
    assert scan_folder(folder).classes == shared.classes
