"""Recipes: named, overridable field by field, registrable, and what finetune actually runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ensemblenet import (
    Callback,
    ConfigError,
    DuplicateNameError,
    EpochRecord,
    FreezeUnfreeze,
    Recipe,
    UnknownNameError,
    finetune,
    get_recipe,
    list_recipes,
    register_recipe,
    train_ensemble,
)
from ensemblenet.api import DEFAULT_RECIPE, RECIPES

from .conftest import registered_tiny_source, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_built_in_recipes() -> None:
    assert list_recipes() == ["fast", "full", "reference", "strong"] and DEFAULT_RECIPE == "fast"
    assert get_recipe() is get_recipe("fast")
    reference = get_recipe("reference")
    assert (reference.freeze, reference.epochs, reference.lr, reference.batch_size) == (
        "bn_only",
        2,
        1e-3,
        32,
    )
    assert (reference.schedule, reference.augment, reference.feature_cache, reference.combine) == (
        "constant", "none", False, "mean",
    )  # fmt: skip
    fast = get_recipe("fast")
    assert (fast.freeze, fast.feature_cache, fast.schedule, fast.combine) == (
        "head_only",
        True,
        "cosine",
        "auto",
    )
    full = get_recipe("full")
    assert (
        isinstance(full.freeze, FreezeUnfreeze)
        and full.freeze.backbone_lr_scale < 1
        and not full.feature_cache
    )
    assert "recipe 'fast': freeze head_only" in str(fast)
    assert fast.to_dict()["freeze"] == {"name": "head_only"}


def test_overrides_field_by_field() -> None:
    fast = get_recipe("fast")
    longer = fast.replace(epochs=20, lr=None)  # None: keep
    assert (longer.epochs, longer.lr, longer.freeze) == (20, fast.lr, fast.freeze)
    assert dataclasses.replace(fast, epochs=3).epochs == 3
    with pytest.raises(ConfigError, match=r"no field\(s\) \['epoch'\]"):
        fast.replace(epoch=3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"combine": "median"}, "Recipe.combine='median': must be one of"),
        ({"augment": "randaugment"}, "unknown augmentation: 'randaugment'"),
        ({"epochs": 0}, "TrainConfig.epochs=0"),
        ({"feature_views": -1}, "feature_views=-1"),
        ({"augment": "light", "feature_views": 0}, "would train on unaugmented features only"),
        ({"freeze": "bn_olny"}, "Did you mean 'bn_only'"),
        ({"min_steps": -1}, r"min_steps=-1: must be an int >= 0"),
        ({"min_steps": 2.5}, r"min_steps=2.5: must be an int >= 0"),
        ({"tta": "crops"}, r"Recipe.tta='crops': must be one of \['none', 'flip', 'auto'\]"),
    ],
)
def test_bad_fields_are_refused_with_the_valid_options(changes: dict[str, object], message: str) -> None:
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        get_recipe("fast").replace(**changes)


def test_unknown_and_duplicate_names() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown recipe: 'fsat'\. Did you mean 'fast'"):
        get_recipe("fsat")
    with pytest.raises(DuplicateNameError):
        register_recipe(Recipe("fast"))


def test_finetune_runs_the_recipe_with_overrides(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=12)
    with registered_tiny_source("recipe-tiny"):
        fast = finetune("recipe-tiny:4", folder, epochs=3, out=tmp_path / "fast.pt", progress=False)
        reference = finetune(
            "recipe-tiny:4", folder, recipe="reference", out=tmp_path / "ref.pt", progress=False
        )
        none = finetune(
            "recipe-tiny:4",
            folder,
            recipe="fast",
            freeze="none",
            epochs=1,
            out=tmp_path / "n.pt",
            progress=False,
        )
        with pytest.raises(ConfigError, match="feature cache needs a freeze policy"):
            finetune("recipe-tiny:4", folder, freeze="bn_only", feature_cache=True, out=tmp_path / "x.pt")
    assert fast.recipe is not None and fast.recipe.name == "fast" and len(fast.history) == 3
    assert fast.feature_seconds > 0  # features were computed once, outside the epochs
    assert (
        reference.recipe is not None and reference.recipe.freeze == "bn_only" and len(reference.history) == 2
    )
    assert reference.feature_seconds == 0.0
    assert none.feature_seconds == 0.0  # the policy trains the backbone: no cache, and no error
    assert [r.lr for r in reference.history] == [1e-3, 1e-3]  # constant schedule
    text = repr(fast)
    assert (
        text.startswith("FinetuneResult('recipe-tiny:4', 3 epochs") and len(text) < 300 and "\n" not in text
    )


def test_a_registered_recipe_is_selectable_by_name(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=8)
    mine = register_recipe(Recipe("tiny-test", freeze="none", epochs=1, feature_cache=False, combine="mean"))
    try:
        with registered_tiny_source("recipe-tiny"):
            run = train_ensemble(
                ["recipe-tiny:4", "recipe-tiny:6"],
                folder,
                recipe="tiny-test",
                out_dir=tmp_path,
                progress=False,
            )
            ensemble = run.ensemble(progress=False)
        assert run.recipe is mine and [len(m.history) for m in run] == [1, 1]
        assert run.choice is not None and run.choice.name == "mean" and run.choice.chosen_by == "recipe"
        assert type(ensemble.strategy).__name__ == "MeanStrategy"
        assert run.meta()["choice"]["chosen_by"] == "recipe"  # nothing chosen: the recipe said "mean"
        assert set(run.meta()["choice"]["out_of_fold_scores"]) == {"mean", "weighted", "calibrated"}
    finally:
        RECIPES.unregister("tiny-test")


class StopAfter(Callback):
    """Ctrl-C after ``epochs`` epochs (what a user's interrupt does, at a known moment)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, trainer: object, model: object, record: EpochRecord) -> None:
        if record.epoch == self.epochs:
            raise KeyboardInterrupt


def test_the_fast_recipe_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """Cached features, augmented views, cosine schedule: an interrupted run resumed from its state
    file ends with the same weights as an uninterrupted one (the trainer seeds every epoch)."""
    folder = write_class_folder(tmp_path / "images", per_class=12)
    common = {"epochs": 4, "augment": "light", "feature_views": 2, "progress": False}
    with registered_tiny_source("recipe-tiny"):
        straight = finetune("recipe-tiny:4", folder, out=tmp_path / "a.pt", **common)
        state = tmp_path / "b.state.pt"
        out = tmp_path / "b.pt"
        with pytest.raises(KeyboardInterrupt):
            finetune("recipe-tiny:4", folder, out=out, state_path=state, callbacks=[StopAfter(2)], **common)
        resumed = finetune("recipe-tiny:4", folder, out=out, resume=state, **common)
    for name in ("train_loss", "val_loss", "val_accuracy", "lr"):  # wall times differ, nothing else
        assert resumed.history.column(name) == straight.history.column(name), name
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_augmenting_the_fast_recipe_caches_augmented_views() -> None:
    """Overriding only ``augment`` on the cached recipe must not be a silent no-op: views are cached."""
    strong = get_recipe("fast").replace(augment="strong")
    assert strong.feature_cache and strong.feature_views >= 1
    assert "(4 augmented views)" in str(strong) and "augmented views" not in str(get_recipe("fast"))


def test_the_strong_recipe_regularizes_the_head_and_decides_flip_on_validation() -> None:
    strong = get_recipe("strong")
    assert strong.to_dict()["head"] == {"name": "linear", "dropout": 0.2}
    assert (strong.optimizer, strong.weight_decay, strong.min_steps, strong.tta) == (
        "adamw",
        0.01,
        300,
        "auto",
    )
    assert strong.feature_cache and strong.freeze == "head_only"
    assert "(at least 300 steps)" in str(strong) and "flip TTA auto" in str(strong)


@pytest.mark.parametrize(
    ("n_train", "epochs", "batch_size", "min_steps", "expected"),
    [
        (13_120, 10, 64, 300, 10),
        (244, 10, 64, 300, 75),
        (24, 2, 8, 12, 4),
        (24, 2, 8, 13, 5),
        (24, 3, 8, 0, 3),
    ],
)
def test_min_steps_raises_the_epochs_only_on_small_data(
    n_train: int, epochs: int, batch_size: int, min_steps: int, expected: int
) -> None:
    recipe = Recipe("floor", epochs=epochs, batch_size=batch_size, min_steps=min_steps)
    assert recipe.epochs_for(n_train) == expected
    steps_per_epoch = -(-n_train // batch_size)
    assert expected * steps_per_epoch >= min_steps  # the floor is met...
    assert expected == epochs or (expected - 1) * steps_per_epoch < min_steps  # ...by the fewest epochs


def test_finetune_trains_at_least_min_steps(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=20)  # 40 images: 26 train at 64/18/18
    recipe = get_recipe("fast").replace(epochs=2, batch_size=8, min_steps=20)
    with registered_tiny_source("floor-tiny"):
        result = finetune("floor-tiny:4", folder, recipe=recipe, out=tmp_path / "m.pt", progress=False)
        given = finetune(
            "floor-tiny:4", folder, recipe=recipe, epochs=2, out=tmp_path / "g.pt", progress=False
        )
        off = finetune(
            "floor-tiny:4", folder, recipe=recipe, min_steps=0, out=tmp_path / "o.pt", progress=False
        )
    n_train = len(result.splits["train"])
    steps_per_epoch = -(-n_train // 8)
    assert len(result.history) == -(-20 // steps_per_epoch) > 2
    assert len(given.history) == 2  # an explicit epochs= is taken as given
    assert len(off.history) == 2


def test_finetune_scores_its_test_split_through_the_engine_like_the_eager_model(tmp_path: Path) -> None:
    from ensemblenet import TrainConfig, Trainer

    folder = write_class_folder(tmp_path / "images", per_class=20)
    with registered_tiny_source("engine-tiny"):
        result = finetune("engine-tiny:4", folder, epochs=2, out=tmp_path / "m.pt", progress=False)
    eager = Trainer(TrainConfig(progress=False)).evaluate(result.model, result.splits["test"])
    assert result.test is not None and result.test.n == eager.n == len(result.splits["test"])
    assert result.test.accuracy == eager.accuracy
    assert result.test.loss == pytest.approx(eager.loss, rel=1e-4)


def test_parse_members_reads_names_and_weights_or_the_recipes_own() -> None:
    from ensemblenet.api import parse_members

    assert parse_members(" a:x=w.pth , b:y ") == [
        {"backbone": "a:x", "weights": "w.pth"},
        {"backbone": "b:y", "weights": "DEFAULT"},
    ]
    assert [m["backbone"] for m in parse_members("", "fast")] == list(get_recipe("fast").members)
    assert len(parse_members(None, "strong")) == 4
    for bad in ("a,,b", "=w.pth"):
        with pytest.raises(ConfigError, match="every entry needs a backbone name"):
            parse_members(bad)
    with pytest.raises(ConfigError, match="must be a sequence of backbone names"):
        get_recipe("fast").replace(members="torchvision:mobilenet_v2")
