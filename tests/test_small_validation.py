"""Small validation sets: a warning, weights shrunk toward uniform, stratified folds.

The issue's case: fitted on 12 validation images on which one member made no mistake (and was
sure of itself), the weights went to ``[1, 0]``; on the test images that member scored 0.833
against the other member's 0.917, and so did the "ensemble".
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from ensemblenet import WeightedStrategy, choose_strategy
from ensemblenet.scoring import accuracy, log_loss
from ensemblenet.strategies import SMALL_VALIDATION, StackingStrategy

LABELS = torch.tensor([0, 1] * 6)


def probs(true: list[float] | torch.Tensor, labels: torch.Tensor = LABELS) -> torch.Tensor:
    """Two-class probabilities giving the true class ``true[i]``."""
    t = torch.as_tensor(true, dtype=torch.float64)
    out = torch.empty(len(labels), 2, dtype=torch.float64)
    out[torch.arange(len(labels)), labels] = t
    out[torch.arange(len(labels)), 1 - labels] = 1 - t
    return out


def twelve_image_case() -> tuple[torch.Tensor, torch.Tensor]:
    """(validation probs, test probs): A is sure and right on all 12 validation images but wrong on
    2 of 12 test images (0.833); B errs once on validation and once on test (0.917)."""
    b_val = [0.95] * 12
    b_val[3] = 0.1
    a_test = [0.99] * 12
    a_test[0] = a_test[5] = 0.3
    b_test = [0.9] * 12
    b_test[7] = 0.45
    return torch.stack([probs([0.99] * 12), probs(b_val)]), torch.stack([probs(a_test), probs(b_test)])


def test_the_twelve_image_case(caplog: pytest.LogCaptureFixture) -> None:
    val, test = twelve_image_case()
    assert accuracy(test[0], LABELS) == pytest.approx(10 / 12) and accuracy(test[1], LABELS) == pytest.approx(
        11 / 12
    )
    unshrunk = WeightedStrategy(prior_rows=0)
    unshrunk.fit(val, LABELS)
    assert unshrunk.weights is not None and unshrunk.weights[0] > 0.999  # 0.1's behaviour: [1, 0]
    assert accuracy(unshrunk.combine(test), LABELS) == pytest.approx(10 / 12)
    with caplog.at_level(logging.WARNING, logger="ensemblenet.strategies"):
        shrunk = WeightedStrategy()
        shrunk.fit(val, LABELS)
    assert "on only 12 validation images (fewer than 200)" in caplog.text
    assert shrunk.weights is not None
    share = 12 / (12 + 50)  # n / (n + prior_rows) of the fit, the rest uniform
    assert shrunk.weights.tolist() == pytest.approx(
        [share * 1.0 + (1 - share) * 0.5, (1 - share) * 0.5], abs=1e-6
    )
    assert accuracy(shrunk.combine(test), LABELS) >= accuracy(test[1], LABELS)  # at least the better member
    # never worse than uniform on the fitting data (log-loss is convex in the weights)
    assert log_loss(shrunk.combine(val), LABELS) <= log_loss(val.mean(dim=0), LABELS) + 1e-12


def test_large_validation_sets_keep_the_fit_and_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (4000,), generator=g)
    good = probs(torch.full((4000,), 0.9), labels)
    noise = torch.rand(4000, 1, generator=g, dtype=torch.float64)
    coin = torch.cat([noise, 1 - noise], dim=1)
    with caplog.at_level(logging.WARNING, logger="ensemblenet.strategies"):
        fitted = WeightedStrategy()
        fitted.fit(torch.stack([good, coin]), labels)
    assert caplog.text == ""
    raw = WeightedStrategy(prior_rows=0)
    raw.fit(torch.stack([good, coin]), labels)
    assert fitted.weights is not None and raw.weights is not None
    assert (fitted.weights - raw.weights).abs().max() < 0.01  # 4000 / 4050 of the fit


def test_choosing_and_stacking_warn_once_below_the_documented_size(caplog: pytest.LogCaptureFixture) -> None:
    val, _ = twelve_image_case()
    labels24 = torch.cat([LABELS, LABELS])
    val24 = torch.cat([val, val], dim=1)
    with caplog.at_level(logging.WARNING, logger="ensemblenet.strategies"):
        choice = choose_strategy(val24, labels24, ["mean", "weighted", "calibrated"])
    warnings = [r for r in caplog.records if "validation images" in r.getMessage()]
    assert len(warnings) == 1 and "choosing the combination on only 24" in warnings[0].getMessage()
    assert choice.n == 24 and set(choice.fitted) == {"mean", "weighted", "calibrated"}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ensemblenet.strategies"):
        StackingStrategy(folds=3).fit(val24, labels24)
    assert "fitting a stacking combiner on only 24" in caplog.text
    assert SMALL_VALIDATION == 200


def test_prior_rows_is_validated_and_saved() -> None:
    with pytest.raises(ValueError, match="prior_rows must be a finite number >= 0"):
        WeightedStrategy(prior_rows=-1)
    strategy = WeightedStrategy(prior_rows=10)
    strategy.fit(*twelve_image_case()[:1], LABELS)
    restored = WeightedStrategy()
    restored.load_state_dict(strategy.state_dict())
    assert restored.prior_rows == 10 and torch.equal(restored.weights, strategy.weights)  # type: ignore[arg-type]


def test_temperatures_are_shrunk_toward_one_on_few_images() -> None:
    """The issue's other case: on 24 validation images, a timid member got a temperature far below 1
    (0.21 there). Fitted on n images, log T keeps n / (n + 50) of the fit."""
    from ensemblenet.strategies import CalibratedStrategy, fit_temperature

    labels = torch.tensor([0, 1] * 12)
    true = torch.full((24,), 0.6, dtype=torch.float64)
    true[5] = 0.45  # one mistake, so a temperature is fitted at all
    timid = probs(true, labels)
    raw = fit_temperature(timid, labels)
    shrunk = fit_temperature(timid, labels, prior_rows=50)
    assert raw < 0.3
    assert shrunk == pytest.approx(math.exp(24 / 74 * math.log(raw)), rel=1e-9)
    assert (
        log_loss(timid, labels)
        >= log_loss(apply(timid, shrunk), labels)
        >= log_loss(apply(timid, raw), labels)
    )
    strategy = CalibratedStrategy("mean")
    strategy.fit(torch.stack([timid, timid]), labels)
    assert strategy.member_temperatures == pytest.approx([shrunk, shrunk], rel=1e-6)


def apply(p: torch.Tensor, t: float) -> torch.Tensor:
    from ensemblenet.strategies import apply_temperature

    return apply_temperature(p, t)
