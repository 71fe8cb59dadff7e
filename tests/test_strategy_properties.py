"""Properties every combination strategy must have, checked with hypothesis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemblenet.scoring import log_loss
from ensemblenet.strategies import (
    CalibratedStrategy,
    GeometricStrategy,
    GreedyStrategy,
    MeanStrategy,
    StackingStrategy,
    Strategy,
    VoteStrategy,
    WeightedStrategy,
    resolve_strategy,
)

Case = tuple[torch.Tensor, torch.Tensor]


@st.composite
def member_probs(draw: st.DrawFn, min_n: int = 1) -> Case:
    """(M, N, C) float64 member probabilities (some near 0/1) and labels (N,)."""
    m = draw(st.integers(1, 4))
    n = draw(st.integers(min_n, 16))
    c = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 100_000))
    scale = draw(st.sampled_from([0.3, 2.0, 20.0]))
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(m, n, c, generator=g, dtype=torch.float64) * scale, dim=2)
    labels = torch.randint(0, c, (n,), generator=g)
    return probs, labels


def fitted(name: str, probs: torch.Tensor, labels: torch.Tensor) -> Strategy:
    kwargs = {"stacking": {"folds": 2, "l2": (0.1,)}}.get(name, {})
    strategy = resolve_strategy(name, **kwargs)
    fit = getattr(strategy, "fit", None)
    if getattr(strategy, "needs_fit", False) and callable(fit):
        fit(probs, labels)
    return strategy


ALL = ["mean", "geometric", "vote", "weighted", "greedy", "stacking", "calibrated"]


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=10, deadline=None)
@given(case=member_probs(min_n=2))
def test_every_strategy_returns_distributions(name: str, case: Case) -> None:
    probs, labels = case
    out = fitted(name, probs, labels).combine(probs)
    assert out.shape == probs.shape[1:]
    assert torch.isfinite(out).all() and (out >= 0).all()
    torch.testing.assert_close(out.sum(dim=1), torch.ones(out.shape[0], dtype=out.dtype), atol=1e-6, rtol=0)


UNFITTED: dict[str, Callable[[list[int]], Strategy]] = {
    "mean": lambda order: MeanStrategy(),
    "geometric": lambda order: GeometricStrategy(),
    "vote": lambda order: VoteStrategy(),
    # Weights follow their members when the members are reordered.
    "weighted": lambda order: WeightedStrategy([[1.0, 2.0, 3.0, 4.0][i] for i in order]),
}


@pytest.mark.parametrize("name", sorted(UNFITTED))
@settings(max_examples=25, deadline=None)
@given(case=member_probs(), data=st.data())
def test_member_order_does_not_matter(name: str, case: Case, data: st.DataObject) -> None:
    probs, _ = case
    m = probs.shape[0]
    order = data.draw(st.permutations(range(m)))
    base = UNFITTED[name](list(range(m))).combine(probs)
    permuted = UNFITTED[name](list(order)).combine(probs[list(order)])
    torch.testing.assert_close(permuted, base, atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", sorted(UNFITTED))
@settings(max_examples=25, deadline=None)
@given(case=member_probs(), data=st.data())
def test_images_are_combined_independently(name: str, case: Case, data: st.DataObject) -> None:
    probs, _ = case
    order = list(data.draw(st.permutations(range(probs.shape[1]))))
    strategy = UNFITTED[name](list(range(probs.shape[0])))
    torch.testing.assert_close(strategy.combine(probs[:, order]), strategy.combine(probs)[order])


@settings(max_examples=6, deadline=None)
@given(case=member_probs(min_n=4), data=st.data())
def test_stacking_member_order_does_not_matter(case: Case, data: st.DataObject) -> None:
    # The L2-penalized logistic regression has a unique optimum, which permuting features permutes.
    probs, labels = case
    order = list(data.draw(st.permutations(range(probs.shape[0]))))
    a, b = StackingStrategy(folds=2, l2=0.1), StackingStrategy(folds=2, l2=0.1)
    a.fit(probs, labels)
    b.fit(probs[order], labels)
    torch.testing.assert_close(b.combine(probs[order]), a.combine(probs), atol=2e-4, rtol=0)


@settings(max_examples=40, deadline=None)
@given(case=member_probs())
def test_fitted_weights_never_worse_than_uniform(case: Case) -> None:
    probs, labels = case
    strategy = WeightedStrategy()
    strategy.fit(probs, labels)
    assert log_loss(strategy.combine(probs), labels) <= log_loss(MeanStrategy().combine(probs), labels)


@settings(max_examples=40, deadline=None)
@given(case=member_probs(), metric=st.sampled_from(["log_loss", "brier"]))
def test_greedy_never_worse_than_best_member(case: Case, metric: str) -> None:
    from ensemblenet.scoring import brier_score

    score = log_loss if metric == "log_loss" else brier_score
    probs, labels = case
    strategy = GreedyStrategy(metric=metric, rounds=10)
    strategy.fit(probs, labels)
    best = min(score(p, labels) for p in probs)
    assert score(strategy.combine(probs), labels) <= best + 1e-12
    assert strategy.counts is not None and sum(strategy.counts) <= 10


@settings(max_examples=25, deadline=None)
@given(case=member_probs())
def test_calibrated_ensemble_temperature_never_raises_nll(case: Case) -> None:
    probs, labels = case
    strategy = CalibratedStrategy("mean")
    strategy.fit(probs, labels)
    before = log_loss(MeanStrategy().combine(strategy.scale_members(probs)), labels)
    assert log_loss(strategy.combine(probs), labels) <= before
