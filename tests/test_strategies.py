"""Properties of the ensemble strategies and hand-computed checks of the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ensemblenet.errors import ConfigError, DuplicateNameError, UnknownNameError
from ensemblenet.scoring import accuracy, confusion_matrix, log_loss
from ensemblenet.strategies import (
    STRATEGIES,
    CallableStrategy,
    MeanStrategy,
    VoteStrategy,
    WeightedStrategy,
    register_strategy,
    resolve_strategy,
    strategy_name,
)

PROPS = settings(deadline=None, max_examples=60)


@st.composite
def member_probs(draw: st.DrawFn, min_members: int = 1, max_members: int = 5) -> torch.Tensor:
    """Random member probabilities (M, N, C): softmax of bounded logits, float32 or float64."""
    m = draw(st.integers(min_members, max_members))
    n = draw(st.integers(1, 8))
    c = draw(st.integers(2, 6))
    logits = draw(arrays(np.float64, (m, n, c), elements=st.floats(-8, 8, allow_nan=False)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return torch.softmax(torch.from_numpy(logits), dim=2).to(dtype)


def positive_weights(m: int) -> st.SearchStrategy[list[float]]:
    return st.lists(st.floats(0.01, 10.0), min_size=m, max_size=m)


def assert_distributions(out: torch.Tensor, n: int, c: int) -> None:
    assert out.shape == (n, c)
    assert torch.isfinite(out).all()
    assert (out >= 0).all()
    torch.testing.assert_close(out.double().sum(dim=1), torch.ones(n, dtype=torch.float64), atol=1e-5, rtol=0)


def labels_for(probs: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, probs.shape[2], (probs.shape[1],), generator=gen)


# --- every strategy returns distributions ------------------------------------------------------


@PROPS
@given(probs=member_probs(), data=st.data())
def test_every_registered_strategy_returns_distributions(probs: torch.Tensor, data: st.DataObject) -> None:
    m, n, c = probs.shape
    for name in STRATEGIES.names():
        strategy = resolve_strategy(name)
        if strategy.needs_fit:
            strategy.fit(probs, labels_for(probs, data.draw(st.integers(0, 10**6))))  # type: ignore[attr-defined]
            assert not strategy.needs_fit
        assert_distributions(strategy.combine(probs), n, c)
    weighted = WeightedStrategy(data.draw(positive_weights(m)))
    assert_distributions(weighted.combine(probs), n, c)


# --- member order does not matter --------------------------------------------------------------


@PROPS
@given(probs=member_probs(), data=st.data())
def test_member_order_does_not_matter(probs: torch.Tensor, data: st.DataObject) -> None:
    m = probs.shape[0]
    perm = data.draw(st.permutations(range(m)))
    shuffled = probs[list(perm)]
    torch.testing.assert_close(MeanStrategy().combine(shuffled), MeanStrategy().combine(probs))
    torch.testing.assert_close(VoteStrategy().combine(shuffled), VoteStrategy().combine(probs))
    weights = data.draw(positive_weights(m))
    torch.testing.assert_close(
        WeightedStrategy([weights[i] for i in perm]).combine(shuffled),
        WeightedStrategy(weights).combine(probs),
    )


# --- identical members give the member back ---------------------------------------------------


@PROPS
@given(probs=member_probs(max_members=1), m=st.integers(1, 5), data=st.data())
def test_identical_members_return_the_member(probs: torch.Tensor, m: int, data: st.DataObject) -> None:
    member = probs[0]
    same = member.expand(m, *member.shape).clone()
    torch.testing.assert_close(MeanStrategy().combine(same), member)
    torch.testing.assert_close(WeightedStrategy(data.draw(positive_weights(m))).combine(same), member)
    voted = VoteStrategy().combine(same)
    assert torch.equal(voted.argmax(dim=1), member.argmax(dim=1))


@PROPS
@given(probs=member_probs(), w=st.floats(0.01, 100.0))
def test_uniform_weights_equal_mean(probs: torch.Tensor, w: float) -> None:
    uniform = WeightedStrategy([w] * probs.shape[0])
    torch.testing.assert_close(uniform.combine(probs), MeanStrategy().combine(probs))


# --- vote --------------------------------------------------------------------------------------


@PROPS
@given(probs=member_probs(), data=st.data())
def test_strict_majority_wins_the_vote(probs: torch.Tensor, data: st.DataObject) -> None:
    m, n, c = probs.shape
    winners = torch.tensor(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    size = data.draw(st.integers(m // 2 + 1, m))  # strictly more than half
    majority = data.draw(st.permutations(range(m)))[:size]
    logits = probs.double().log()
    rows = torch.arange(n)
    for member in majority:
        # Lift the winner's logit above every other: this member now votes for it.
        logits[member, rows, winners] = logits[member].max(dim=1).values + 1.0
    voted = VoteStrategy().combine(torch.softmax(logits, dim=2).to(probs.dtype))
    assert torch.equal(voted.argmax(dim=1), winners)


def expected_vote_winner(probs: torch.Tensor, row: int) -> int:
    """The documented rule, written independently: most votes, then highest mean, then lowest index."""
    m, _, c = probs.shape
    votes = [0] * c
    for member in range(m):
        values = probs[member, row].tolist()
        votes[values.index(max(values))] += 1
    means = [math.fsum(float(probs[k, row, j]) for k in range(m)) / m for j in range(c)]
    return min(range(c), key=lambda j: (-votes[j], -means[j], j))


@PROPS
@given(probs=member_probs(min_members=2, max_members=2), data=st.data())
def test_vote_tie_is_broken_by_mean_probability(probs: torch.Tensor, data: st.DataObject) -> None:
    _, n, c = probs.shape
    logits = probs.double().log()
    for row in range(n):
        # Make the two members disagree, so the row is a 1-1 tie between classes a and b.
        a, b = data.draw(st.permutations(range(c)))[:2]
        logits[0, row, a] = logits[0, row].max() + 0.5
        logits[1, row, b] = logits[1, row].max() + 0.5
    tied = torch.softmax(logits, dim=2).to(probs.dtype)
    means = tied.double().mean(dim=0)
    top2 = means.sort(dim=1, descending=True).values[:, :2]
    assume(bool(((top2[:, 0] - top2[:, 1]).abs() > 1e-7).all()))  # exact mean ties are tested below
    voted = VoteStrategy().combine(tied)
    for row in range(n):
        assert int(voted[row].argmax()) == expected_vote_winner(tied, row)
        # The shares are unchanged apart from the tiny tie-break term.
        assert sorted(voted[row].tolist(), reverse=True)[:2] == pytest.approx([0.5, 0.5], abs=1e-5)


def test_vote_exact_mean_tie_goes_to_lowest_class_index() -> None:
    probs = torch.tensor([[[0.6, 0.4], [0.4, 0.6]], [[0.4, 0.6], [0.6, 0.4]]])  # 1-1 votes, means 0.5
    assert VoteStrategy().combine(probs).argmax(dim=1).tolist() == [0, 0]
    three = torch.tensor([[[0.1, 0.3, 0.6]], [[0.1, 0.6, 0.3]]])  # votes for 2 and 1, means 0.45 each
    out = VoteStrategy().combine(three)
    assert out.argmax(dim=1).tolist() == [1]
    assert out[0].tolist() == pytest.approx([0.0, 0.5, 0.5], abs=1e-5)


def test_vote_tie_prefers_higher_mean_even_when_it_is_not_the_lowest_index() -> None:
    probs = torch.tensor([[[0.51, 0.49]], [[0.01, 0.99]]])  # one vote each; means 0.26 vs 0.74
    assert VoteStrategy().combine(probs).argmax(dim=1).tolist() == [1]


def test_vote_shares_and_dtype() -> None:
    probs = torch.tensor([[[0.9, 0.1]], [[0.8, 0.2]], [[0.3, 0.7]]])
    out = VoteStrategy().combine(probs)
    assert out.dtype == torch.float64
    assert out[0].tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-5)


# --- weighted ----------------------------------------------------------------------------------


def test_weights_are_normalized_and_applied() -> None:
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    strategy = WeightedStrategy([3, 1])
    assert strategy.weights is not None
    assert strategy.weights.tolist() == pytest.approx([0.75, 0.25])
    assert strategy.combine(probs)[0].tolist() == pytest.approx([0.75, 0.25])
    assert not strategy.needs_fit


@pytest.mark.parametrize("weights", [[-1.0, 2.0], [0.0, 0.0], [float("nan"), 1.0], [float("inf"), 1.0], []])
def test_bad_weights_are_rejected(weights: list[float]) -> None:
    with pytest.raises(ConfigError, match="weights"):
        WeightedStrategy(weights)


def test_non_numeric_weights_are_rejected() -> None:
    with pytest.raises(ConfigError, match="numbers"):
        WeightedStrategy(["heavy", "light"])  # type: ignore[list-item]


def test_weight_count_must_match_members() -> None:
    with pytest.raises(ConfigError, match=r"3 weights but the ensemble has 2 members"):
        WeightedStrategy([1, 1, 1]).combine(torch.full((2, 4, 2), 0.5))


def test_combine_before_fit_says_how_to_fix() -> None:
    strategy = WeightedStrategy()
    assert strategy.needs_fit
    assert strategy.weights is None
    with pytest.raises(ConfigError, match=r"fit_weights\(val\)"):
        strategy.combine(torch.full((2, 4, 2), 0.5))


@PROPS
@given(probs=member_probs(), seed=st.integers(0, 10**6))
def test_fitted_weights_are_never_worse_than_uniform(probs: torch.Tensor, seed: int) -> None:
    labels = labels_for(probs, seed)
    fitted = WeightedStrategy()
    fitted.fit(probs, labels)
    assert fitted.weights is not None
    assert (fitted.weights >= 0).all()
    assert float(fitted.weights.sum()) == pytest.approx(1.0)
    uniform = WeightedStrategy([1.0] * probs.shape[0])
    assert log_loss(fitted.combine(probs), labels) <= log_loss(uniform.combine(probs), labels)


def test_fit_favours_the_informative_member_and_is_deterministic() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (200,), generator=gen)
    informative = torch.full((200, 3), 0.05)
    informative[torch.arange(200), labels] = 0.9
    noise = torch.softmax(3 * torch.randn(200, 3, generator=gen), dim=1)
    probs = torch.stack([noise, informative])
    first, second = WeightedStrategy(), WeightedStrategy()
    first.fit(probs, labels)
    second.fit(probs, labels)
    assert first.weights is not None and second.weights is not None
    assert torch.equal(first.weights, second.weights)
    assert first.weights[1] > 0.8 > first.weights[0]


def test_fit_rejects_bad_labels_and_nan() -> None:
    probs = torch.full((2, 3, 2), 0.5)
    with pytest.raises(ConfigError, match=r"shape \(3,\)"):
        WeightedStrategy().fit(probs, torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        WeightedStrategy().fit(probs, torch.tensor([0, 1, 2]))
    probs[0, 0, 0] = float("nan")
    with pytest.raises(ConfigError, match="non-finite"):
        WeightedStrategy().fit(probs, torch.tensor([0, 1, 1]))


# --- shapes, resolution, registry --------------------------------------------------------------


@pytest.mark.parametrize("strategy", [MeanStrategy(), VoteStrategy(), WeightedStrategy([1.0])])
@pytest.mark.parametrize("shape", [(4, 2), (0, 4, 2), (1, 2, 4, 2)])
def test_wrong_shapes_are_config_errors(strategy: object, shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=r"\(members, images, classes\)"):
        strategy.combine(torch.full(shape, 0.5))  # type: ignore[attr-defined]


def test_integer_probabilities_are_rejected() -> None:
    with pytest.raises(ConfigError, match="floating point"):
        MeanStrategy().combine(torch.ones(2, 3, 2, dtype=torch.int64))


def test_resolve_by_name_object_and_callable() -> None:
    assert isinstance(resolve_strategy("mean"), MeanStrategy)
    assert isinstance(resolve_strategy("vote"), VoteStrategy)
    weighted = resolve_strategy("weighted", weights=[1, 1])
    assert isinstance(weighted, WeightedStrategy)
    obj = VoteStrategy()
    assert resolve_strategy(obj) is obj

    def geometric(probs: torch.Tensor) -> torch.Tensor:
        g = probs.log().mean(dim=0).exp()
        return g / g.sum(dim=1, keepdim=True)

    wrapped = resolve_strategy(geometric)
    assert isinstance(wrapped, CallableStrategy)
    assert not wrapped.needs_fit
    assert strategy_name(wrapped) == "geometric"
    probs = torch.tensor([[[0.8, 0.2]], [[0.2, 0.8]]])
    assert wrapped.combine(probs)[0].tolist() == pytest.approx([0.5, 0.5])


def test_resolve_errors_name_the_problem() -> None:
    with pytest.raises(UnknownNameError, match=r"Did you mean 'mean'"):
        resolve_strategy("meen")
    with pytest.raises(ConfigError, match="bad settings"):
        resolve_strategy("mean", rounds=3)
    with pytest.raises(ConfigError, match="carries its own settings"):
        resolve_strategy(MeanStrategy(), rounds=3)
    with pytest.raises(ConfigError, match="only apply to strategy='weighted'"):
        resolve_strategy("vote", weights=[1, 2])
    with pytest.raises(ConfigError, match="2 weights given for 3 members"):
        resolve_strategy("weighted", weights=[1, 2], members=3)


def test_weights_with_mean_mean_a_weighted_mean_in_every_caller() -> None:
    """One resolution: ``"mean"`` with weights is a weighted soft vote, as ``Ensemble`` has it."""
    resolved = resolve_strategy("mean", weights=[1, 3])
    assert isinstance(resolved, WeightedStrategy)
    assert resolved.weights is not None and resolved.weights.tolist() == [0.25, 0.75]
    with pytest.raises(ConfigError, match="strategy must be"):
        resolve_strategy(42)  # type: ignore[arg-type]


def test_user_strategy_registers_and_resolves() -> None:
    @register_strategy("test_first_member")
    class FirstMember:
        needs_fit = False

        def combine(self, probs: torch.Tensor) -> torch.Tensor:
            return probs[0]

    try:
        strategy = resolve_strategy("test_first_member")
        assert isinstance(strategy, FirstMember)
        assert strategy_name(strategy) == "test_first_member"
        with pytest.raises(DuplicateNameError):
            register_strategy("test_first_member")(FirstMember)
    finally:
        STRATEGIES.unregister("test_first_member")
    assert "test_first_member" not in STRATEGIES


def test_builtin_names() -> None:
    assert {"mean", "vote", "weighted"} <= set(STRATEGIES.names())
    assert strategy_name(MeanStrategy()) == "mean"
    assert strategy_name(WeightedStrategy([1.0])) == "weighted"


# --- metrics, against hand-computed values -----------------------------------------------------


def test_accuracy_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    labels = torch.tensor([0, 1, 1, 0])
    assert accuracy(probs, labels) == 0.5


def test_log_loss_by_hand() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1])
    expected = -(math.log(0.9) + math.log(0.7) + math.log(0.4)) / 3
    assert log_loss(probs, labels) == pytest.approx(expected, rel=1e-6)


def test_log_loss_clamps_zero_probabilities() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1])
    assert log_loss(probs, labels) == pytest.approx(-math.log(1e-15) / 2)  # Kaggle's clip: 34.5 each
    assert log_loss(probs, labels) == pytest.approx(34.538776394910684 / 2)
    assert log_loss(probs, labels, eps=1e-3) == pytest.approx(-math.log(1e-3) / 2)


def test_confusion_matrix_by_hand() -> None:
    preds = torch.tensor([0, 1, 2, 2, 1, 0])
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    expected = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1]])  # rows: true class, columns: predicted
    cm = confusion_matrix(preds, labels, num_classes=3)
    assert cm.dtype == torch.int64
    assert torch.equal(cm, expected)
    assert confusion_matrix(preds, labels, num_classes=4)[3].sum() == 0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: accuracy(torch.ones(3), torch.tensor([0, 1, 0])), r"shape \(N, C\)"),
        (lambda: accuracy(torch.ones(3, 2), torch.tensor([0, 1])), "3 rows but labels has 2"),
        (lambda: accuracy(torch.ones(0, 2), torch.zeros(0, dtype=torch.int64)), "zero images"),
        (lambda: log_loss(torch.ones(2, 2), torch.tensor([0, 2])), r"\[0, 1\]"),
        (lambda: log_loss(torch.ones(2, 2), torch.tensor([0.0, 1.0])), "integer"),
        (lambda: log_loss(torch.ones(2, 2), torch.tensor([0, 1]), eps=0.0), "eps"),
        (lambda: confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3), "preds must lie"),
        (lambda: confusion_matrix(torch.tensor([0]), torch.tensor([0, 1]), 3), "differ in length"),
        (lambda: confusion_matrix(torch.tensor([0]), torch.tensor([0]), 0), "num_classes"),
    ],
)
def test_metric_input_errors(call: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()  # type: ignore[operator]
