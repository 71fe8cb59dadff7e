"""Ensemble.report / calibrate / save / load / tta and fitted strategies, on tiny models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ensemblenet.data import scan_folder
from ensemblenet.ensemble import TTA, Ensemble, load_ensemble, member_probs, resolve_tta, save_ensemble
from ensemblenet.errors import CheckpointError, ConfigError
from ensemblenet.models import TransferModel, create_model, load_model, save_model, write_document
from ensemblenet.scoring import accuracy, brier_score, expected_calibration_error, log_loss, mcnemar_exact
from ensemblenet.spec import InputSpec
from ensemblenet.strategies import STRATEGIES, CalibratedStrategy, register_strategy

from .conftest import read_raw, registered_tiny_source, write_class_folder, write_raw

CLASSES = ("cats", "dogs")
CPU: dict[str, Any] = {"progress": False, "device": "cpu"}
SPEC_A = InputSpec(size=(16, 16))
SPEC_B = InputSpec(size=(20, 24), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")


@pytest.fixture
def tiny_source() -> Iterator[str]:
    """A backbone source building conftest's tiny network, so saved ensembles rebuild offline."""
    with registered_tiny_source("ensx-test") as source:
        yield source


def members(source: str) -> list[TransferModel]:
    torch.manual_seed(0)
    out = [
        create_model(f"{source}:8", CLASSES, head="linear", input_spec=SPEC_A),
        create_model(f"{source}:6", CLASSES, head="mlp", input_spec=SPEC_B),
        create_model(f"{source}:4", CLASSES, head="linear", input_spec=SPEC_A),
    ]
    with torch.no_grad():  # spread the probabilities so fitted state matters
        for m in out:
            for p in m.head.parameters():
                p.mul_(8.0)
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_class_folder(tmp_path / "images", per_class=8, size=(28, 32))


@pytest.mark.parametrize("strategy", ["weighted", "greedy", "stacking", "calibrated", "geometric", "vote"])
def test_save_load_round_trip_gives_identical_probabilities(
    strategy: str, tmp_path: Path, folder: Path, tiny_source: str
) -> None:
    ensemble = Ensemble(members(tiny_source), strategy=strategy, tta="flip" if strategy == "greedy" else None)
    if getattr(ensemble.strategy, "needs_fit", False):
        ensemble.fit_weights(folder, **CPU)
    path = ensemble.save(tmp_path / "ens.pt")
    loaded = Ensemble.load(path)
    assert loaded.classes == ensemble.classes and loaded.tta == ensemble.tta
    assert type(loaded.strategy) is type(ensemble.strategy)
    assert repr(loaded.strategy) == repr(ensemble.strategy)  # fitted weights / temperatures / counts
    assert torch.equal(loaded.predict_proba(folder, **CPU), ensemble.predict_proba(folder, **CPU))
    # Settings as JSON, tensors in safetensors: no pickle at all.
    settings = json.loads(read_raw(path)[0]["ensemblenet"])
    assert settings["format"] == "ensemblenet.ensemble" and settings["format_version"] == 2


def test_saved_file_refuses_tampering_and_foreign_files(tmp_path: Path, tiny_source: str) -> None:
    ensemble = Ensemble(members(tiny_source), weights=[1, 2, 3])
    path = ensemble.save(tmp_path / "ens.pt")
    metadata, tensors = read_raw(path)
    edited = dict(metadata, ensemblenet=metadata["ensemblenet"].replace('"weights":[', '"weights":[9,'))
    with pytest.raises(CheckpointError, match="modified"):
        load_ensemble(write_raw(tmp_path / "bad.pt", edited, tensors))
    key = next(k for k in tensors if k.startswith("members/0/state_dict/head.") and k.endswith("weight"))
    with pytest.raises(CheckpointError, match="modified"):
        load_ensemble(write_raw(tmp_path / "bad2.pt", metadata, {**tensors, key: tensors[key] + 1}))
    single = save_model(ensemble.members[0], tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="load_model"):
        load_ensemble(single)
    with pytest.raises(CheckpointError, match=r"Ensemble\.load"):
        load_model(path)
    document = json.loads(metadata["ensemblenet"])
    with pytest.raises(CheckpointError, match="Upgrade"):
        load_ensemble(write_document({**document, "format_version": 99}, tmp_path / "new.pt"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_ensemble(tmp_path / "missing.pt")


def test_unsaveable_strategies_say_why(tmp_path: Path, tiny_source: str) -> None:
    with pytest.raises(ConfigError, match="only registered strategies"):
        save_ensemble(Ensemble(members(tiny_source), strategy=lambda p: p.mean(dim=0)), tmp_path / "x.pt")

    @register_strategy("ensx_scaled")
    class Scaled:
        needs_fit = False

        def __init__(self, power: float = 1.0) -> None:
            self.power = power

        def combine(self, probs: torch.Tensor) -> torch.Tensor:
            p = probs.mean(dim=0) ** self.power
            return p / p.sum(dim=1, keepdim=True)

    try:
        with pytest.raises(ConfigError, match="state_dict"):
            save_ensemble(Ensemble(members(tiny_source), strategy=Scaled(2.0)), tmp_path / "x.pt")
    finally:
        STRATEGIES.unregister("ensx_scaled")


def test_report_numbers_match_direct_computation(folder: Path, tiny_source: str) -> None:
    ensemble = Ensemble(members(tiny_source))
    report = ensemble.report(folder, n_resamples=500, seed=1, **CPU)
    probs = ensemble.member_probas(folder, **CPU).double()
    labels = torch.as_tensor(scan_folder(folder).labels)
    combined = probs.mean(dim=0)
    row = report.row("ensemble (mean)")
    assert row.accuracy == accuracy(combined, labels) and row.log_loss == log_loss(combined, labels)
    assert row.ece == expected_calibration_error(combined, labels)
    assert row.brier == brier_score(combined, labels)
    assert report.n == 16 and report.n_bins == 15 and report.tta_passes == 1
    member_acc = [accuracy(p, labels) for p in probs]
    best = max(range(3), key=lambda i: (member_acc[i], -log_loss(probs[i], labels)))
    assert report.best_member == ensemble.member_names[best]
    (comparison,) = report.comparisons
    right = combined.argmax(dim=1) == labels
    base = probs[best].argmax(dim=1) == labels
    assert comparison.p_value == mcnemar_exact(right, base).p_value
    assert comparison.accuracy_diff == pytest.approx(float(right.double().mean() - base.double().mean()))
    preds = probs.argmax(dim=2)
    assert report.disagreement[0][1] == pytest.approx(float((preds[0] != preds[1]).double().mean()))
    assert report.oracle_accuracy == pytest.approx(float((preds == labels).any(dim=0).double().mean()))
    as_json = json.loads(report.to_json())
    assert as_json["rows"][0]["name"] == ensemble.member_names[0]
    text = str(report)
    assert "McNemar p" in text and "oracle accuracy" in text and "15 equal-width bins" in text
    assert f"{row.accuracy:.4f}" in text


def test_report_extra_strategies_and_fitted_greedy(folder: Path, tiny_source: str) -> None:
    ensemble = Ensemble(members(tiny_source), strategy="greedy")
    with pytest.raises(ConfigError, match="must be fitted"):
        ensemble.report(folder, **CPU)
    ensemble.fit_weights(folder, **CPU)
    stacking = STRATEGIES.get("stacking")(folds=2, l2=0.1)
    stacking.fit(ensemble.member_probas(folder, **CPU).double(), torch.as_tensor(scan_folder(folder).labels))
    report = ensemble.report(folder, strategies={"stacking": stacking}, n_resamples=200, **CPU)
    assert [r.name for r in report.rows if r.kind == "ensemble"] == ["ensemble (greedy)", "stacking"]
    assert len(report.comparisons) == 2


def test_evaluate_reports_ece_and_brier(folder: Path, tiny_source: str) -> None:
    ensemble = Ensemble(members(tiny_source))
    result = ensemble.evaluate(folder, **CPU)
    probs = ensemble.member_probas(folder, **CPU)
    labels = torch.as_tensor(scan_folder(folder).labels)
    assert result.members[0].ece == expected_calibration_error(probs[0], labels)
    assert result.brier == brier_score(ensemble.predict_proba(folder, **CPU), labels)
    assert "ECE" in str(result) and "brier" in result.to_dict()


def test_calibrate_wraps_the_strategy_and_does_not_raise_nll(folder: Path, tiny_source: str) -> None:
    ensemble = Ensemble(members(tiny_source), weights=[1, 1, 2])
    before = ensemble.evaluate(folder, **CPU).log_loss
    calibrated = ensemble.calibrate(folder, **CPU)
    assert isinstance(ensemble.strategy, CalibratedStrategy) and calibrated is ensemble.strategy
    assert calibrated.member_temperatures is not None and len(calibrated.member_temperatures) == 3
    assert "weighted" in repr(calibrated.inner).lower()
    # The member temperatures are fitted per member; the final ensemble temperature never hurts.
    scaled = calibrated.scale_members(ensemble.member_probas(folder, **CPU).double())
    labels = torch.as_tensor(scan_folder(folder).labels)
    assert ensemble.evaluate(folder, **CPU).log_loss <= log_loss(calibrated.inner.combine(scaled), labels)
    assert before > 0
    again = ensemble.calibrate(folder, members=False, **CPU)  # re-calibrating does not nest wrappers
    assert not isinstance(again.inner, CalibratedStrategy) and again.member_temperatures == [1.0, 1.0, 1.0]
    given = Ensemble(members(tiny_source), weights=[1, 1, 2])
    kept = given.calibrate(folder, refit=False, **CPU)
    assert kept.inner.weights.tolist() == [0.25, 0.25, 0.5]  # type: ignore[attr-defined]


def test_tta_averages_flipped_views(tiny_source: str) -> None:
    model = members(tiny_source)[0].eval()
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        plain = torch.softmax(model(images), dim=1)
        flipped = torch.softmax(model(torch.flip(images, dims=(-1,))), dim=1)
        torch.testing.assert_close(member_probs(model, images, TTA()), (plain + flipped) / 2)
        # A horizontally symmetric image gives the same answer with or without flip TTA.
        sym = torch.cat([images[..., :8], torch.flip(images[..., :8], dims=(-1,))], dim=-1)
        torch.testing.assert_close(member_probs(model, sym, TTA()), member_probs(model, sym, None))
        crops = member_probs(model, images, TTA(crops=5))
    assert crops.shape == (4, 2)
    ensemble = Ensemble([model], tta="flip")
    torch.testing.assert_close(
        ensemble.member_probas(images, **CPU)[0], (plain + flipped) / 2, atol=1e-6, rtol=0
    )
    assert resolve_tta("flip+crops") == TTA(crops=5) and resolve_tta(None) is None
    assert TTA(crops=5).passes == 12
    with pytest.raises(ConfigError, match="tta must be"):
        resolve_tta("rotate")
    with pytest.raises(ConfigError, match="crops"):
        TTA(crops=3)
