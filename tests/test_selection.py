"""Greedy ensemble selection and cross-fitted stacking: behaviour beyond the shared properties."""

from __future__ import annotations

import math

import pytest
import torch

from ensemblenet.errors import ConfigError
from ensemblenet.scoring import accuracy, log_loss
from ensemblenet.strategies import GreedyStrategy, StackingStrategy, fold_ids


def noisy_members(n: int, seed: int, strengths: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Members whose logits favour the true class by ``strength`` (0 = pure noise)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    logits = torch.randn(len(strengths), n, 2, generator=g, dtype=torch.float64)
    for m, s in enumerate(strengths):
        logits[m, torch.arange(n), labels] += s
    return torch.softmax(logits, dim=2), labels


def test_greedy_selects_with_replacement_and_drops_useless_members() -> None:
    probs, labels = noisy_members(300, 0, (2.0, 1.5, 0.0))
    greedy = GreedyStrategy(rounds=20)
    greedy.fit(probs, labels)
    assert greedy.counts is not None and greedy.weights is not None
    assert greedy.counts[2] == 0  # the pure-noise member never helps
    assert greedy.counts[0] >= 1 and greedy.counts[1] >= 1  # both informative members are used
    assert float(greedy.weights.sum()) == pytest.approx(1.0)
    assert torch.equal(greedy.weights, torch.tensor(greedy.counts, dtype=torch.float64) / sum(greedy.counts))


def test_greedy_accuracy_metric_and_errors() -> None:
    probs, labels = noisy_members(200, 1, (1.0, 2.0))
    greedy = GreedyStrategy(metric="accuracy", rounds=5)
    greedy.fit(probs, labels)
    assert accuracy(greedy.combine(probs), labels) >= max(accuracy(p, labels) for p in probs)
    with pytest.raises(ConfigError, match="greedy metric"):
        GreedyStrategy(metric="auc")
    with pytest.raises(ConfigError, match="not fitted"):
        GreedyStrategy().combine(probs)


def test_fold_ids_are_balanced_and_label_free() -> None:
    ids = fold_ids(23, 5, seed=3)
    assert sorted(torch.bincount(ids).tolist()) == [4, 4, 5, 5, 5]
    assert torch.equal(ids, fold_ids(23, 5, seed=3))


def test_fold_ids_with_labels_are_stratified() -> None:
    """With labels, every fold holds each class in its overall share (within one image); without,
    a rare class can be missing from a fold."""
    labels = torch.tensor([0] * 40 + [1] * 10 + [2] * 5)
    ids = fold_ids(55, 5, seed=0, labels=labels)
    assert sorted(torch.bincount(ids).tolist()) == [11] * 5
    for c, size in ((0, 40), (1, 10), (2, 5)):
        per_fold = torch.bincount(ids[labels == c], minlength=5)
        assert int(per_fold.max() - per_fold.min()) <= 1 and int(per_fold.sum()) == size
    unstratified = [torch.bincount(fold_ids(55, 5, seed=s)[labels == 2], minlength=5) for s in range(20)]
    assert any(int(c.min()) == 0 for c in unstratified)  # what stratifying prevents


def test_stacking_out_of_fold_predictions_never_see_their_own_label() -> None:
    # Flip the label of row 0 and of another row of the same class in the same fold, so the
    # stratified folds stay as they were: row 0's out-of-fold prediction must not move (the
    # combiner that predicts it was fitted without its fold), while the in-sample refit does move.
    probs, labels = noisy_members(60, 2, (1.0, 0.5, 0.2))
    ids = fold_ids(60, 4, seed=0, labels=labels)
    partner = next(i for i in range(1, 60) if ids[i] == ids[0] and labels[i] != labels[0])
    flipped = labels.clone()
    flipped[0], flipped[partner] = labels[partner], labels[0]  # same class counts, same folds
    assert torch.equal(fold_ids(60, 4, seed=0, labels=flipped), ids)
    a, b = StackingStrategy(folds=4, l2=1e-3), StackingStrategy(folds=4, l2=1e-3)
    a.fit(probs, labels)
    b.fit(probs, flipped)
    assert a.oof_probs is not None and b.oof_probs is not None
    held = ids == ids[0]
    torch.testing.assert_close(a.oof_probs[held], b.oof_probs[held])
    assert not torch.allclose(a.oof_probs[~held], b.oof_probs[~held])  # other folds did see row 0
    assert not torch.allclose(a.combine(probs)[0], b.combine(probs)[0])


def test_stacking_does_not_memorize_noise() -> None:
    # Pure-noise members and random labels: a weakly regularized combiner fits the rows it was
    # trained on better than chance, but its out-of-fold estimate stays honest (no better than
    # the constant prediction), and the strongest regularization in the grid is chosen.
    probs, labels = noisy_members(80, 3, (0.0, 0.0, 0.0, 0.0))
    stack = StackingStrategy(folds=5, l2=(1e-4, 10.0))
    stack.fit(probs, labels)
    assert stack.oof_log_loss is not None
    constant = -math.log(0.5)
    assert stack.oof_log_loss >= constant - 0.02
    assert stack.l2 == 10.0
    weak = StackingStrategy(folds=5, l2=1e-4)
    weak.fit(probs, labels)
    assert weak.oof_log_loss is not None
    assert log_loss(weak.combine(probs), labels) < weak.oof_log_loss  # in-sample looks better: memorized


def test_stacking_learns_to_trust_the_good_member() -> None:
    probs, labels = noisy_members(200, 4, (3.0, 0.0))
    stack = StackingStrategy()
    stack.fit(probs, labels)
    assert stack.oof_log_loss is not None and stack.oof_log_loss < log_loss(probs.mean(dim=0), labels)
    assert stack.cv_log_loss and stack.l2 in stack.cv_log_loss
    with pytest.raises(ConfigError, match="members"):
        stack.combine(probs[:1])
    with pytest.raises(ConfigError, match="folds"):
        StackingStrategy(folds=1)
    with pytest.raises(ConfigError, match="l2"):
        StackingStrategy(l2=-1.0)
