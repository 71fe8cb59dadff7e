"""Choosing the combination on validation data by cross-fitting (ensemblenet.strategies.choose_strategy)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ensemblenet import Ensemble, choose_strategy
from ensemblenet.data import scan_folder
from ensemblenet.errors import ConfigError, UnknownNameError
from ensemblenet.scoring import accuracy, log_loss
from ensemblenet.strategies import (
    DEFAULT_CANDIDATES,
    CalibratedStrategy,
    MeanStrategy,
    WeightedStrategy,
    fold_ids,
)

from .conftest import make_tiny_model, write_class_folder
from .test_selection import noisy_members


class Memorizer:
    """Overfits on purpose: recalls the label of every row it was fitted on, else says 50/50.

    In-sample it is perfect; on rows it never saw it knows nothing. A chooser that scored
    candidates on the rows they were fitted on would pick it.
    """

    name = "memorizer"
    needs_fit = True

    def __init__(self) -> None:
        self.seen: dict[tuple[float, ...], int] = {}

    def fit(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        self.seen = {tuple(probs[:, i].flatten().tolist()): int(labels[i]) for i in range(probs.shape[1])}
        self.needs_fit = False

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        out = torch.full((probs.shape[1], probs.shape[2]), 1.0 / probs.shape[2], dtype=torch.float64)
        for i in range(probs.shape[1]):
            label = self.seen.get(tuple(probs[:, i].flatten().tolist()))
            if label is not None:
                out[i] = 1e-6
                out[i, label] = 1 - 1e-6 * (probs.shape[2] - 1)
        return out


def test_a_candidate_that_memorizes_the_split_loses_out_of_fold() -> None:
    probs, labels = noisy_members(200, 0, (1.5, 1.0))
    in_sample = Memorizer()
    in_sample.fit(probs, labels)
    assert accuracy(in_sample.combine(probs), labels) == 1.0  # it would win on the rows it saw
    choice = choose_strategy(probs, labels, {"mean": "mean", "memorizer": Memorizer()})
    assert choice.name == "mean" and isinstance(choice.strategy, MeanStrategy)
    assert choice.scores["memorizer"] == pytest.approx(log_loss(torch.full((200, 2), 0.5), labels))


def test_scores_are_pooled_out_of_fold_metrics_and_the_winner_is_refitted_on_all_rows() -> None:
    probs, labels = noisy_members(300, 1, (2.5, 0.0))  # a good member and pure noise
    choice = choose_strategy(probs, labels, ["mean", "weighted"], folds=4, seed=3)
    assert choice.name == "weighted" and (choice.folds, choice.n, choice.metric) == (4, 300, "log_loss")
    assert choice.scores["mean"] == pytest.approx(log_loss(probs.mean(dim=0), labels))
    ids = fold_ids(300, 4, 3)
    oof = torch.empty(300, 2, dtype=torch.float64)
    for fold in range(4):
        held = ids == fold
        w = WeightedStrategy()
        w.fit(probs[:, ~held], labels[~held])
        oof[held] = w.combine(probs[:, held])
    assert choice.scores["weighted"] == pytest.approx(log_loss(oof, labels))
    on_all = WeightedStrategy()
    on_all.fit(probs, labels)
    assert isinstance(choice.strategy, WeightedStrategy) and choice.strategy.weights is not None
    assert torch.allclose(choice.strategy.weights, on_all.weights)  # type: ignore[arg-type]
    assert float(choice.strategy.weights[0]) > 0.9  # the noise member is all but dropped
    assert "chose 'weighted'" in str(choice)


def test_ties_go_to_the_candidate_listed_first_and_objects_are_not_modified() -> None:
    one, labels = noisy_members(50, 2, (1.0,))
    probs = torch.cat([one, one])  # identical members: mean == geometric exactly
    assert choose_strategy(probs, labels, ["mean", "geometric"]).name == "mean"
    assert choose_strategy(probs, labels, ["geometric", "mean"]).name == "geometric"
    given = WeightedStrategy()
    choice = choose_strategy(probs, labels, [given, "mean"])
    assert given.weights is None and given.needs_fit  # the caller's object stays unfitted
    assert choice.strategy is not given


def test_accuracy_metric_reports_accuracy_and_default_candidates_run() -> None:
    probs, labels = noisy_members(120, 4, (1.2, 1.0, 0.8))
    choice = choose_strategy(probs, labels, ["mean"], metric="accuracy")
    assert choice.scores["mean"] == pytest.approx(accuracy(probs.mean(dim=0), labels))
    default = choose_strategy(probs, labels)
    assert set(default.scores) == set(DEFAULT_CANDIDATES) and default.name in DEFAULT_CANDIDATES
    assert isinstance(choose_strategy(probs, labels, ["calibrated"]).strategy, CalibratedStrategy)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"candidates": []}, "no candidates"),
        ({"candidates": "mean"}, "write \\['mean'\\]"),
        ({"candidates": ["mean", "mean"]}, "more than once"),
        ({"folds": 1}, "folds must be an int >= 2"),
        ({"metric": "auc"}, "metric must be one of"),
    ],
)
def test_bad_settings_name_the_value_and_the_fix(kwargs: dict[str, object], message: str) -> None:
    probs, labels = noisy_members(20, 5, (1.0, 1.0))
    with pytest.raises(ConfigError, match=message):
        choose_strategy(probs, labels, **kwargs)  # type: ignore[arg-type]


def test_unknown_names_fail_before_any_fitting_and_one_row_is_refused() -> None:
    probs, labels = noisy_members(20, 6, (1.0, 1.0))
    with pytest.raises(UnknownNameError, match="weigthed"):
        choose_strategy(probs, labels, ["mean", "weigthed"])
    with pytest.raises(ConfigError, match="at least 2 validation rows"):
        choose_strategy(probs[:, :1], labels[:1])


def test_ensemble_choose_strategy_uses_the_winner(tmp_path: Path, one_thread: None) -> None:
    folder = write_class_folder(tmp_path / "val", per_class=10)
    members = [make_tiny_model(("cats", "dogs"), seed=s) for s in (0, 1)]
    ensemble = Ensemble(members)
    probs = ensemble.member_probas(folder, progress=False, device="cpu").double()
    labels = torch.as_tensor(scan_folder(folder).labels)
    expected = choose_strategy(probs, labels, folds=4)
    choice = ensemble.choose_strategy(folder, folds=4, progress=False, device="cpu")
    assert ensemble.strategy is choice.strategy
    assert choice.name == expected.name and choice.scores == pytest.approx(expected.scores)
    combined = ensemble.predict_proba(folder, progress=False, device="cpu")
    assert torch.allclose(combined, expected.strategy.combine(probs).to(combined.dtype))
