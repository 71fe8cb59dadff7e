"""choose_freeze: one model per freeze policy on one split, the winner by validation loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ensemblenet import ConfigError, FreezeStages, choose_freeze, load_model
from ensemblenet.api import freeze_label

from .conftest import registered_tiny_source, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_labels_name_the_policy_and_its_cut() -> None:
    assert freeze_label("head_only") == "head_only"
    assert freeze_label(FreezeStages(-1)) == "freeze_stages(-1)"
    assert freeze_label("bn_only") == "bn_only"


def test_every_candidate_trains_on_the_same_split_and_validation_decides(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=20)
    with registered_tiny_source("cut-tiny"):
        choice = choose_freeze(
            "cut-tiny:4",
            folder,
            ["head_only", FreezeStages(-1), ("bn_only", {"epochs": 2})],
            out_dir=tmp_path / "runs",
            epochs=3,
            progress=False,
        )
        assert list(choice.results) == ["head_only", "freeze_stages(-1)", "bn_only"]
        splits = [r.splits for r in choice.results.values()]
        for other in splits[1:]:
            assert all(other[k].paths == splits[0][k].paths for k in ("train", "val", "test"))
        for label, result in choice.results.items():
            assert choice.val_loss[label] == min(r.val_loss for r in result.history.records)
            assert result.path.is_file() and result.path.parent == tmp_path / "runs"
        assert choice.val_loss[choice.label] == min(choice.val_loss.values())
        assert choice.best is choice.results[choice.label]
        reloaded = load_model(choice.best.path)
        assert reloaded.config.backbone == "cut-tiny:4"
    # head_only is cached: seconds of features, nothing else; bn_only trains the backbone
    assert choice.results["head_only"].feature_seconds > 0 and choice.results["bn_only"].feature_seconds == 0
    assert [len(r.history) for r in choice.results.values()] == [3, 3, 2]  # bn_only's own epochs
    rows = choice.rows()
    assert [r["chosen"] for r in rows].count(True) == 1
    assert all(not math.isnan(r["val_loss"]) and r["test_accuracy"] is not None for r in rows)
    table = choice.table()
    assert f"| {choice.label} *" in table and "never used" in table


def test_bad_candidates_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one"):
        choose_freeze("x", tmp_path, [])
    with pytest.raises(ConfigError, match="must differ"):
        choose_freeze("x", tmp_path, ["head_only", "head_only"])
    with pytest.raises(ConfigError, match="candidates= and out_dir="):
        choose_freeze("x", tmp_path, ["head_only"], freeze="bn_only")


def test_labels_show_settings_that_differ_from_the_defaults() -> None:
    from ensemblenet import FreezeUnfreeze

    assert freeze_label(FreezeUnfreeze(freeze_epochs=2)) == "freeze_unfreeze(freeze_epochs=2)"
    assert freeze_label(FreezeStages(1)) == "freeze_stages(1)"
    assert freeze_label(FreezeStages(-1, backbone_lr_scale=0.1)) == "freeze_stages(-1, backbone_lr_scale=0.1)"


@pytest.mark.parametrize(
    "policy",
    [
        FreezeStages(-1),
        FreezeStages(-2, backbone_lr_scale=0.1),
        FreezeStages(3),
        "head_only",
        "bn_only",
        "none",
    ],
)
def test_a_label_reads_back_as_the_same_policy(policy: object) -> None:
    from ensemblenet.models import parse_freeze, resolve_freeze

    label = freeze_label(policy)  # type: ignore[arg-type]
    assert parse_freeze(label) == resolve_freeze(policy)  # type: ignore[arg-type]
    assert resolve_freeze(label) == resolve_freeze(policy)  # type: ignore[arg-type]


def test_unreadable_freeze_strings_name_the_form_and_the_fix() -> None:
    from ensemblenet import FreezeUnfreeze
    from ensemblenet.errors import UnknownNameError
    from ensemblenet.models import parse_freeze

    assert parse_freeze(" freeze_unfreeze(2, backbone_lr_scale=0.5) ") == FreezeUnfreeze(2, 0.5)
    with pytest.raises(ConfigError, match=r"freeze='freeze_stages\(-1' is not NAME or NAME\(ARG"):
        parse_freeze("freeze_stages(-1")
    with pytest.raises(ConfigError, match="literals"):
        parse_freeze("freeze_stages(x)")
    with pytest.raises(ConfigError, match=r"takes \['stages', 'backbone_lr_scale'\]"):
        parse_freeze("freeze_stages(lr=0.1)")
    with pytest.raises(UnknownNameError, match="Did you mean 'freeze_stages'"):  # and lists the names
        parse_freeze("freeze_stagez(-1)")
    with pytest.raises(ConfigError, match="backbone_lr_scale"):  # the policy's own check still runs
        parse_freeze("freeze_stages(-1, backbone_lr_scale=2)")
