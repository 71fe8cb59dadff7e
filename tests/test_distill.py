"""Distillation: the loss, soft targets through the feature cache, and ``distill`` end to end on tiny
models (a teacher whose decisions differ from the folder labels, so the student can only match it by
learning from the teacher)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ensemblenet import (
    DEFAULT_SPLIT,
    TTA,
    ConfigError,
    Ensemble,
    distill,
    load_model,
    save_ensemble,
    scan_folder,
    split_samples,
)
from ensemblenet.errors import ClassMismatchError
from ensemblenet.models import create_model
from ensemblenet.training import (
    DistillationLoss,
    TrainConfig,
    Trainer,
    fit_with_feature_cache,
    pack_targets,
    soften,
    unpack_targets,
)

from .conftest import registered_tiny_source, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")

# --------------------------------------------------------------------------- the loss


def test_pack_and_unpack_round_trip() -> None:
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    labels = torch.tensor([1, 0])
    back_probs, back_labels = unpack_targets(pack_targets(probs, labels))
    assert torch.equal(back_probs, probs) and torch.equal(back_labels, labels)


def test_soften_flattens_and_keeps_the_order() -> None:
    probs = torch.tensor([[0.9, 0.08, 0.02]])
    warm = soften(probs, 3.0)
    assert torch.allclose(soften(probs, 1.0), probs)
    assert warm.sum().item() == pytest.approx(1.0)
    assert warm[0, 0] < probs[0, 0] and warm[0, 2] > probs[0, 2]
    assert torch.equal(warm.argsort(), probs.argsort())


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_loss_is_the_scaled_kl_divergence(temperature: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 3)
    teacher = torch.softmax(torch.randn(6, 3), dim=1)
    targets = pack_targets(teacher, torch.zeros(6, dtype=torch.long))
    soft = soften(teacher, temperature)
    student = torch.softmax(logits / temperature, dim=1)
    kl = (soft * (soft.log() - student.log())).sum(dim=1).mean() * temperature**2
    assert DistillationLoss(temperature)(logits, targets).item() == pytest.approx(kl.item(), rel=1e-5)


def test_loss_is_zero_when_the_student_matches_and_mixes_in_hard_labels() -> None:
    teacher = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    labels = torch.tensor([1, 1])
    targets = pack_targets(teacher, labels)
    logits = teacher.log()
    assert DistillationLoss(temperature=3.0)(logits, targets).item() == pytest.approx(0.0, abs=1e-6)
    mixed = DistillationLoss(temperature=3.0, hard_weight=0.25)(logits, targets)
    assert mixed.item() == pytest.approx(0.25 * F.cross_entropy(logits, labels).item(), rel=1e-5)


def test_a_hard_zero_in_the_teacher_stays_finite() -> None:
    targets = pack_targets(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    loss = DistillationLoss(temperature=2.0)(torch.tensor([[0.0, 5.0]], requires_grad=True), targets)
    assert math.isfinite(loss.item())
    loss.backward()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: DistillationLoss(temperature=0.0), "temperature"),
        (lambda: DistillationLoss(hard_weight=1.5), "hard_weight"),
        (lambda: pack_targets(torch.ones(2, 2), torch.zeros(3)), "labels"),
        (lambda: pack_targets(torch.full((1, 2), math.nan), torch.zeros(1)), "NaN"),
        (lambda: DistillationLoss()(torch.zeros(2, 2), torch.zeros(2)), "packed targets"),
    ],
)
def test_bad_settings_are_refused_by_name(make: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        make()  # type: ignore[operator]


# --------------------------------------------------------------------------- soft targets in the cache


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("distill") / "images", per_class=40, size=(16, 16))


def test_soft_targets_need_a_criterion_that_reads_them(folder: Path) -> None:
    with registered_tiny_source("tinyd"):
        samples = scan_folder(folder)
        model = create_model("tinyd:8", samples.classes, head="linear", weights=None)
        trainer = Trainer(TrainConfig(epochs=1, progress=False), freeze="head_only")
        soft = torch.full((len(samples), 2), 0.5)
        with pytest.raises(ConfigError, match="criterion"):
            fit_with_feature_cache(trainer, model, samples, soft_targets=soft)
        trainer = Trainer(
            TrainConfig(epochs=1, progress=False), freeze="head_only", criterion=DistillationLoss()
        )
        with pytest.raises(ConfigError, match=r"one row of class probabilities per training sample"):
            fit_with_feature_cache(trainer, model, samples, soft_targets=soft[:-1])


# --------------------------------------------------------------------------- distill end to end


def _teacher(classes: tuple[str, ...]) -> Ensemble:
    """Two tiny members with random heads whose class rows are swapped, so their decisions are a
    function of the images that disagrees with the folder labels (the test checks how much)."""
    members = []
    for seed in (11, 12):
        torch.manual_seed(0)  # the same backbone as the student's below (seed 0)
        member = create_model("tinyd:8", classes, head="linear", weights=None)
        torch.manual_seed(seed)
        linear = member.head[0]
        assert isinstance(linear, nn.Linear)
        nn.init.normal_(linear.weight, std=3.0)
        nn.init.normal_(linear.bias, std=0.3)
        with torch.no_grad():
            linear.weight.copy_(linear.weight.flip(0))
            linear.bias.copy_(linear.bias.flip(0))
        members.append(member.eval())
    return Ensemble(members, strategy="mean")


def test_student_recovers_the_teachers_decisions_and_reloads_identically(
    folder: Path, tmp_path: Path
) -> None:
    val_folder = write_class_folder(tmp_path / "val", per_class=10, size=(16, 16), seed=1)
    test_folder = write_class_folder(tmp_path / "test", per_class=20, size=(16, 16), seed=2)
    with registered_tiny_source("tinyd"):
        test = scan_folder(test_folder)
        teacher = _teacher(test.classes)
        teacher_says = teacher.predict(test, progress=False).indices
        labels = torch.as_tensor(test.labels)
        assert 0.1 < (teacher_says == 1).double().mean().item() < 0.9, (
            "a teacher with one answer teaches nothing"
        )
        label_agreement = (teacher_says == labels).double().mean().item()
        result = distill(
            teacher,
            (folder, val_folder, test_folder),
            student="tinyd:8",
            weights=None,
            head="linear",
            epochs=60,
            lr=0.05,
            batch_size=16,
            flips=False,
            patience=None,
            # The teacher disagrees with the labels on purpose, so the validation log-loss (against
            # the labels) would keep the epoch that learned least: keep the closest student instead.
            monitor="train_loss",
            out=tmp_path / "student.pt",
            progress=False,
        )
        # Judged on images neither the teacher's labels nor the student's training saw.
        student_says = Ensemble([result.model]).predict(test, progress=False).indices
        agreement = (student_says == teacher_says).double().mean().item()
        assert label_agreement < 0.75  # so matching the teacher cannot come from the folder labels
        assert agreement >= 0.9, (agreement, label_agreement)
        assert agreement > label_agreement + 0.15
        assert result.agreement == pytest.approx(agreement)
        assert result.scored_on == "test" and result.n == len(test)
        assert [s.kind for s in result.scores] == ["ensemble", "member", "member", "student"]
        assert set(result.seconds) == {"ensemble", "student"} and min(result.seconds.values()) > 0
        assert result.timed == len(test)  # fewer than TIMED_IMAGES: all of them, the memo bypassed
        assert "student tinyd:8" in result.table()
        assert (tmp_path / "student.split.json").is_file() and (tmp_path / "student.metrics.csv").is_file()

        reloaded = load_model(tmp_path / "student.pt").eval()
        state = result.model.state_dict()
        assert all(torch.equal(t, state[k]) for k, t in reloaded.state_dict().items())
        # The feature cache may leave the student channels-last (other convolution kernels, other
        # last bits): compare both in one layout.
        x = torch.rand(5, 3, 16, 16)
        with torch.no_grad():
            for model in (reloaded, result.model):
                model.to(memory_format=torch.contiguous_format)
            assert torch.equal(reloaded(x), result.model(x))


def test_distill_reads_an_ensemble_file_and_checks_classes(folder: Path, tmp_path: Path) -> None:
    with registered_tiny_source("tinyd"):
        samples = scan_folder(folder)
        path = save_ensemble(_teacher(("x", "y")), tmp_path / "teacher.ens")
        with pytest.raises(ClassMismatchError, match="teacher ensemble"):
            distill(path, samples, student="tinyd:8", weights=None, progress=False, out=tmp_path / "s.pt")


# --------------------------------------------------------------------------- the command


def test_cli_distill_writes_a_student_and_a_report_and_refuses_to_overwrite(
    folder: Path, tmp_path: Path
) -> None:
    import io
    import json

    from ensemblenet.cli import main

    with registered_tiny_source("tinyd"):
        teacher = save_ensemble(_teacher(("cats", "dogs")), tmp_path / "teacher.ens")
        argv = [
            "distill", "-m", str(teacher), str(folder), "--student", "tinyd:8", "--student-weights", "none",
            "--head", "linear", "--epochs", "3", "--out", str(tmp_path / "student.pt"),
            "--report", str(tmp_path / "distill.json"), "-q",
        ]  # fmt: skip
        out, err = io.StringIO(), io.StringIO()
        assert main(argv, stdout=out, stderr=err) == 0, err.getvalue()
        assert "saved the student tinyd:8" in out.getvalue()
        document = json.loads((tmp_path / "distill.json").read_text())
        # DATA is cut as 'ensemblenet train' cuts it (the notebook's 64/18/18 shares, seed 0), so the
        # student learns only from the members' training images and is scored on their test images.
        _, _, test = split_samples(scan_folder(folder), DEFAULT_SPLIT, seed=0)
        assert document["scored_on"] == "test" and document["n"] == len(test)
        assert [row["kind"] for row in document["scores"]] == ["ensemble", "member", "member", "student"]
        assert load_model(tmp_path / "student.pt").classes == ("cats", "dogs")

        err = io.StringIO()
        assert main(argv, stdout=io.StringIO(), stderr=err) == 1
        assert "--overwrite" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


def test_cli_distill_adapts_the_students_last_stage_when_told(folder: Path, tmp_path: Path) -> None:
    import io

    from ensemblenet.cli import main
    from ensemblenet.models import split_backbone

    with registered_tiny_source("tinyd"):
        teacher = save_ensemble(_teacher(("cats", "dogs")), tmp_path / "teacher.ens")
        argv = [
            "distill", "-m", str(teacher), str(folder), "--student", "tinyd:8", "--student-weights", "none",
            "--head", "linear", "--epochs", "2", "--freeze",
            "freeze_stages(-5, backbone_lr_scale=0.5)", "--out", str(tmp_path / "student.pt"), "-q",
        ]  # fmt: skip
        err = io.StringIO()
        assert main(argv, stdout=io.StringIO(), stderr=err) == 0, err.getvalue()
        # (-5: the tiny backbone's last three stages, ReLU, pooling and flatten, have no weights)
        torch.manual_seed(0)  # distill seeds the student's initial weights with its seed (0)
        start = create_model("tinyd:8", ("cats", "dogs"), head="linear", weights=None)
        trained = load_model(tmp_path / "student.pt")
    start_prefix, start_rest = split_backbone(start.backbone, -5)
    prefix, rest = split_backbone(trained.backbone, -5)
    for before, after in zip(start_prefix.parameters(), prefix.parameters(), strict=True):
        assert torch.equal(before, after)  # the cached prefix stayed frozen
    assert any(
        not torch.equal(before, after)
        for before, after in zip(start_rest.parameters(), rest.parameters(), strict=True)
    )  # the last stages learned


def test_the_student_takes_a_recipes_head_and_training_settings(folder: Path, tmp_path: Path) -> None:
    from ensemblenet import Recipe, get_recipe
    from ensemblenet.models import head_config, resolve_head

    recipe = Recipe(
        "doc-student", head={"name": "linear", "dropout": 0.3}, epochs=1, min_steps=7, batch_size=16
    )
    with registered_tiny_source("tinyd"):
        teacher = _teacher(("cats", "dogs"))
        kwargs: dict[str, Any] = {
            "student": "tinyd:8",
            "weights": None,
            "progress": False,
            "patience": None,
        }
        own = distill(teacher, folder, recipe=recipe, out=tmp_path / "own.pt", **kwargs)
        strong = distill(teacher, folder, recipe="strong", epochs=2, out=tmp_path / "strong.pt", **kwargs)
        distill(teacher, folder, epochs=1, out=tmp_path / "plain.pt", **kwargs)
        heads = [load_model(tmp_path / f"{n}.pt").config.head for n in ("own", "strong", "plain")]
    assert heads == [
        head_config(resolve_head(recipe.head)),
        head_config(resolve_head(get_recipe("strong").head)),
        head_config(resolve_head("mlp")),  # the default recipe's ("fast")
    ]
    n_train = len(own.splits["train"])
    assert len(own.history.records) == recipe.epochs_for(n_train) > recipe.epochs  # the recipe's step floor
    assert len(strong.history.records) == 2  # an explicit epochs= is taken as given


def test_an_unknown_monitor_is_refused_by_name(folder: Path, tmp_path: Path) -> None:
    with registered_tiny_source("tinyd"):
        teacher = _teacher(("cats", "dogs"))
        with pytest.raises(ConfigError, match=r"monitor must be 'val_loss' or 'train_loss', got 'val_acc'"):
            distill(
                teacher, folder, student="tinyd:8", weights=None, monitor="val_acc", out=tmp_path / "s.pt"
            )
    assert not (tmp_path / "s.split.json").exists()  # refused before anything was written


def test_timing_uses_a_subset_and_the_teacher_keeps_its_tta(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ensemblenet.api import _distill

    monkeypatch.setattr(_distill, "TIMED_IMAGES", 10)
    val_folder = write_class_folder(tmp_path / "val", per_class=6, size=(16, 16), seed=1)
    test_folder = write_class_folder(tmp_path / "test", per_class=12, size=(16, 16), seed=2)
    with registered_tiny_source("tinyd"):
        teacher = _teacher(scan_folder(folder).classes)
        teacher.tta = TTA()
        teacher.reuse_predictions()
        result = distill(
            teacher,
            (folder, val_folder, test_folder),
            student="tinyd:8",
            weights=None,
            head="linear",
            epochs=2,
            out=tmp_path / "student.pt",
            progress=False,
        )
        assert teacher.tta == TTA()  # switched off for the training images only
        assert (result.timed, result.n) == (10, 24)
        assert result.to_dict()["timed_images"] == 10
        # The scores are the ensemble's on every test image, with its TTA (from its memo or not).
        fresh = Ensemble(list(teacher.members), strategy="mean", tta="flip").evaluate(
            test_folder, progress=False
        )
        assert result.scores[0].accuracy == pytest.approx(fresh.accuracy)
        assert result.scores[0].log_loss == pytest.approx(fresh.log_loss, rel=1e-5)
