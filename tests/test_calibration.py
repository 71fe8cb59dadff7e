"""ECE, Brier and temperature scaling: known answers and properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemblenet.errors import ConfigError
from ensemblenet.scoring import brier_score, expected_calibration_error, log_loss
from ensemblenet.strategies import CalibratedStrategy, apply_temperature, fit_temperature


def test_ece_hand_computed() -> None:
    # 4 bins of width 0.25 (top-label confidence):
    #   (0.75, 1]:  0.9 right, 0.8 wrong, 0.95 right -> acc 2/3, conf 0.8833 -> |diff| 0.21667 * 3/6
    #   (0.5, 0.75]: 0.6 wrong, 0.7 right           -> acc 1/2, conf 0.65   -> 0.15 * 2/6
    #   (0.25, 0.5]: 0.4 (3 classes) right          -> acc 1,   conf 0.4    -> 0.6 * 1/6
    probs = torch.tensor(
        [
            [0.9, 0.05, 0.05],
            [0.8, 0.1, 0.1],
            [0.025, 0.95, 0.025],
            [0.6, 0.3, 0.1],
            [0.1, 0.2, 0.7],
            [0.35, 0.4, 0.25],
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([0, 1, 1, 1, 2, 1])
    expected = (abs(2 / 3 - (0.9 + 0.8 + 0.95) / 3) * 3 + abs(0.5 - 0.65) * 2 + abs(1 - 0.4) * 1) / 6
    assert expected_calibration_error(probs, labels, n_bins=4) == pytest.approx(expected, abs=1e-12)


def test_ece_bin_edges_are_right_closed() -> None:
    # With 2 bins, confidence exactly 0.5 belongs to (0, 0.5], the first bin; 1.0 to (0.5, 1].
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([1, 0])  # the 0.5 row predicts class 0 (argmax): wrong
    # bin 0: acc 0, conf 0.5 -> 0.5 * 1/2; bin 1: acc 1, conf 1 -> 0
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.25)
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(abs(0.5 - 0.75))


def test_ece_perfectly_calibrated_and_bad_bins() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])) == 0.0
    with pytest.raises(ConfigError, match="n_bins"):
        expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=0)


def test_brier_hand_computed() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = torch.tensor([0, 1])
    # row 0: 0.09 + 0.04 + 0.01; row 1: 0.01 + 0.81 + 0.64
    assert brier_score(probs, labels) == pytest.approx((0.14 + 1.46) / 2)


@st.composite
def calibration_case(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor]:
    n = draw(st.integers(1, 30))
    c = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 10_000))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, c, (n,), generator=g)
    return torch.softmax(logits, dim=1), labels


@settings(max_examples=30, deadline=None)
@given(calibration_case())
def test_temperature_scaling_never_raises_validation_nll(case: tuple[torch.Tensor, torch.Tensor]) -> None:
    probs, labels = case
    t = fit_temperature(probs, labels)
    assert t > 0 and math.isfinite(t)
    scaled = apply_temperature(probs, t)
    assert log_loss(scaled, labels) <= log_loss(probs, labels)
    # Temperature never changes the predicted class (up to exact ties).
    torch.testing.assert_close(scaled.sum(dim=1), torch.ones(len(probs), dtype=torch.float64))
    top = probs.max(dim=1).values
    unique_top = (probs == top[:, None]).sum(dim=1) == 1
    assert torch.equal(scaled.argmax(dim=1)[unique_top], probs.argmax(dim=1)[unique_top])


def test_temperature_fixes_overconfidence() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=g)
    logits = torch.randn(400, 2, generator=g, dtype=torch.float64)
    logits[torch.arange(400), labels] += 1.0
    overconfident = torch.softmax(logits * 6, dim=1)
    t = fit_temperature(overconfident, labels)
    assert 3 < t < 12  # the 6x sharpening is largely undone
    assert expected_calibration_error(
        apply_temperature(overconfident, t), labels
    ) < expected_calibration_error(overconfident, labels)


def test_calibrated_strategy_fits_members_and_ensemble() -> None:
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (120,), generator=g)
    logits = torch.randn(2, 120, 3, generator=g, dtype=torch.float64)
    logits[:, torch.arange(120), labels] += 1.5
    probs = torch.softmax(logits * torch.tensor([4.0, 0.5], dtype=torch.float64).view(2, 1, 1), dim=2)
    strategy = CalibratedStrategy("mean")
    assert strategy.needs_fit
    with pytest.raises(ConfigError, match="not fitted"):
        strategy.combine(probs)
    strategy.fit(probs, labels)
    assert not strategy.needs_fit
    assert strategy.member_temperatures is not None and strategy.temperature is not None
    t_sharp, t_soft = strategy.member_temperatures
    assert t_sharp > 1 > t_soft  # the over-confident member is cooled, the timid one sharpened
    scaled_mean = strategy.scale_members(probs).mean(dim=0)
    combined = strategy.combine(probs)
    torch.testing.assert_close(combined.sum(dim=1), torch.ones(120, dtype=torch.float64))
    assert log_loss(combined, labels) <= log_loss(scaled_mean, labels)
    with pytest.raises(ConfigError, match="temperature"):
        CalibratedStrategy(temperature=-1.0)


def test_no_validation_errors_keeps_temperature_one() -> None:
    """A member right on every validation image would otherwise get T -> 0 (seen on ants vs bees)."""
    from ensemblenet.strategies import fit_temperature

    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55], [0.1, 0.9], [0.9, 0.1]])
    assert fit_temperature(probs, labels) == 1.0


def test_fitted_temperature_is_clipped() -> None:
    from ensemblenet.strategies import MAX_TEMPERATURE, MIN_TEMPERATURE, fit_temperature

    # One error in 5,001 rows at p = 0.6: the unclipped optimum is T = log(1.5) / log(5000) = 0.048.
    labels = torch.tensor([0] * 5000 + [1])
    probs = torch.tensor([[0.6, 0.4]]).repeat(5001, 1)
    assert fit_temperature(probs, labels) == MIN_TEMPERATURE
    # Uninformative probabilities: NLL is flat-to-rising in T, never pushed out of range.
    uniform = torch.full((10, 2), 0.5)
    assert MIN_TEMPERATURE <= fit_temperature(uniform, torch.tensor([0, 1] * 5)) <= MAX_TEMPERATURE
