"""Flip test-time augmentation decided on validation, and member predictions kept for reuse."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ensemblenet import TTA, Ensemble, scan_folder
from ensemblenet.ensemble import MirrorOnly, ProbaMemo
from ensemblenet.strategies import COMBINATIONS, StrategyChoice, choose_strategy

from .conftest import make_tiny_model, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("flip") / "val", per_class=30, size=(16, 16), seed=3)


def _members(classes: tuple[str, ...]) -> list:
    return [make_tiny_model(classes, seed=s).eval() for s in (1, 2)]


def test_flip_probabilities_are_the_mean_of_plain_and_mirrored(val_folder: Path) -> None:
    samples = scan_folder(val_folder)
    ensemble = Ensemble(_members(samples.classes))
    plain = ensemble.member_probas(samples, progress=False)
    ensemble.tta = MirrorOnly()
    mirrored = ensemble.member_probas(samples, progress=False)
    ensemble.tta = TTA()
    flipped = ensemble.member_probas(samples, progress=False)
    assert not torch.allclose(plain, mirrored)  # a mirror the members can tell apart
    torch.testing.assert_close((plain + mirrored) / 2, flipped, rtol=0, atol=1e-6)
    assert MirrorOnly().passes == 1


@pytest.mark.parametrize("combine", ["auto", "mean"])
def test_fit_combination_decides_flip_by_the_cross_fitted_score(val_folder: Path, combine: str) -> None:
    samples = scan_folder(val_folder)
    ensemble = Ensemble(_members(samples.classes))
    choice = ensemble.fit_combination(samples, combine, tta="auto", progress=False)
    decision = ensemble.flip_choice
    assert decision is not None and decision.metric == "log_loss"
    # Recompute both sides independently and check the decision and the scores.
    labels = torch.as_tensor(samples.labels)
    scores = {}
    for name, tta in (("plain", None), ("flip", TTA())):
        probs = Ensemble(ensemble.members, tta=tta).member_probas(samples, progress=False).double()
        if combine == "auto":
            other = choose_strategy(probs, labels, COMBINATIONS)
        else:
            other = StrategyChoice.given(combine, probs, labels, COMBINATIONS)
        scores[name] = (other.name, other.scores[other.name])
    assert decision.score_plain == pytest.approx(scores["plain"][1], rel=1e-6)
    assert decision.score_flip == pytest.approx(scores["flip"][1], rel=1e-6)
    assert decision.flip == (scores["flip"][1] < scores["plain"][1])
    assert ensemble.tta == (TTA() if decision.flip else None)
    assert choice.name == scores["flip" if decision.flip else "plain"][0]
    assert "flip TTA" in str(decision) and set(decision.to_dict()) == {
        "flip",
        "plain",
        "flip_score",
        "metric",
    }


def test_fit_combination_keeps_or_sets_the_tta(val_folder: Path) -> None:
    samples = scan_folder(val_folder)
    ensemble = Ensemble(_members(samples.classes), tta="flip")
    ensemble.fit_combination(samples, "mean", progress=False)
    assert ensemble.tta == TTA() and ensemble.flip_choice is None  # "keep"
    ensemble.fit_combination(samples, "mean", tta=None, progress=False)
    assert ensemble.tta is None


def _counting(ensemble: Ensemble) -> list[int]:
    calls = [0]
    for member in ensemble.members:
        member.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_kept_predictions_answer_a_repeated_call_and_only_that(val_folder: Path, tmp_path: Path) -> None:
    samples = scan_folder(val_folder)
    ensemble = Ensemble(_members(samples.classes), engine="torch").reuse_predictions()
    calls = _counting(ensemble)
    first = ensemble.member_probas(samples, progress=False)
    ran = calls[0]
    assert ran > 0
    again = ensemble.member_probas(samples, progress=False)
    assert calls[0] == ran and torch.equal(first, again)  # answered from memory
    ensemble.evaluate(samples, progress=False)  # the same files through another method: kept too
    assert calls[0] == ran
    ensemble.member_probas(samples, progress=False, reuse=False)
    assert calls[0] == 2 * ran  # asked to run
    ensemble.tta = TTA()
    ensemble.member_probas(samples, progress=False)
    assert calls[0] > 2 * ran  # other views: run
    ensemble.tta = None
    before = calls[0]
    other = scan_folder(write_class_folder(tmp_path / "other", per_class=3, size=(16, 16), seed=9))
    ensemble.member_probas(other, progress=False)
    assert calls[0] > before  # other files: run
    with torch.no_grad():  # new weights, changed in place: the stored result is stale
        ensemble.members[0].head.weight.add_(1.0)
    before = calls[0]
    changed = ensemble.member_probas(samples, progress=False)
    assert calls[0] > before and not torch.equal(changed[0], first[0])
    torch.testing.assert_close(changed[1], first[1])


def test_predictions_are_not_kept_by_default_or_for_tensors(val_folder: Path) -> None:
    samples = scan_folder(val_folder)
    ensemble = Ensemble(_members(samples.classes), engine="torch")
    calls = _counting(ensemble)
    ensemble.member_probas(samples, progress=False)
    ran = calls[0]
    ensemble.member_probas(samples, progress=False)
    assert calls[0] == 2 * ran
    ensemble.reuse_predictions()
    images = torch.rand(4, 3, 16, 16)
    ensemble.member_probas(images, progress=False)
    ensemble.member_probas(images, progress=False)
    assert calls[0] == 2 * ran + 2 * len(ensemble.members)  # one batch per member, twice
    assert ProbaMemo.key(ensemble.members[0], None, None, "torch") is None
