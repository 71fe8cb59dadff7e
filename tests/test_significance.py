"""McNemar's exact test and the paired bootstrap against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensemblenet.errors import ConfigError
from ensemblenet.scoring import mcnemar_exact, paired_bootstrap


def pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


@pytest.mark.parametrize(
    ("only_a", "only_b", "p"),
    [
        (1, 6, 0.125),  # n=7: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128
        (6, 1, 0.125),  # symmetric
        (0, 5, 0.0625),  # 2 * 1 / 32
        (3, 3, 1.0),  # 2 * P(X <= 3 | n=6) = 2 * 42/64 > 1 -> 1
        (0, 0, 1.0),  # no discordant pairs: no evidence either way
        (2, 10, 2 * (1 + 12 + 66) / 4096),  # n=12: 2 * (C(12,0)+C(12,1)+C(12,2)) / 2^12
    ],
)
def test_mcnemar_known_answers(only_a: int, only_b: int, p: float) -> None:
    a, b = pairs(both=20, only_a=only_a, only_b=only_b, neither=4)
    result = mcnemar_exact(a, b)
    assert (result.b, result.c) == (only_a, only_b)
    assert result.p_value == pytest.approx(p, rel=1e-12)


def test_mcnemar_large_n_does_not_underflow() -> None:
    a, b = pairs(both=0, only_a=0, only_b=3000, neither=0)
    p = mcnemar_exact(torch.tensor(a), torch.tensor(b)).p_value
    assert 0.0 <= p < 1e-300  # 2 / 2^3000 underflows to 0.0, never NaN or an error


def test_mcnemar_rejects_unpaired_and_non_boolean() -> None:
    with pytest.raises(ConfigError, match="paired"):
        mcnemar_exact([True, False], [True])
    with pytest.raises(ConfigError, match="booleans"):
        mcnemar_exact([0.5, 1.0], [1, 0])


def test_bootstrap_degenerate_all_resamples_agree() -> None:
    # Every image right for both: every resample gives accuracy 1 and difference 0.
    result = paired_bootstrap([True] * 9, [True] * 9, n_resamples=500, seed=3)
    assert result.accuracy_a == 1.0 and result.ci_a == (1.0, 1.0)
    assert result.ci_b == (1.0, 1.0) and result.diff == 0.0 and result.ci_diff == (0.0, 0.0)
    # Identical correctness vectors: the difference is 0 in every resample whatever the images.
    same = [True, False, True, True, False]
    assert paired_bootstrap(same, same, n_resamples=300).ci_diff == (0.0, 0.0)


def test_bootstrap_tiny_case_matches_a_direct_computation() -> None:
    a = [True, False, True, True, False, True]
    b = [True, True, False, True, False, False]
    result = paired_bootstrap(a, b, n_resamples=2500, seed=7, level=0.9)
    # Written independently: one resample = N indices drawn uniformly with replacement, from
    # numpy's default_rng(seed); statistic per resample by a plain loop; 5% and 95% quantiles.
    rng = np.random.default_rng(7)
    draws = rng.integers(0, 6, size=(2500, 6))
    acc_a, acc_b, diff = [], [], []
    for row in draws:
        ra = sum(a[i] for i in row) / 6
        rb = sum(b[i] for i in row) / 6
        acc_a.append(ra)
        acc_b.append(rb)
        diff.append(ra - rb)
    assert result.accuracy_a == pytest.approx(4 / 6) and result.accuracy_b == pytest.approx(3 / 6)
    assert result.diff == pytest.approx(1 / 6)
    for got, values in ((result.ci_a, acc_a), (result.ci_b, acc_b), (result.ci_diff, diff)):
        assert got is not None
        assert got == pytest.approx(tuple(np.quantile(values, [0.05, 0.95])), abs=1e-12)
    # The interval is a real interval here (not degenerate) and contains the point estimate.
    assert result.ci_diff is not None and result.ci_diff[0] < 1 / 6 < result.ci_diff[1]


def test_bootstrap_is_seeded_and_chunking_is_invisible() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(50) < 0.8, rng.random(50) < 0.7
    first = paired_bootstrap(a, b, n_resamples=2345, seed=11)  # spans several 1000-row chunks
    assert first == paired_bootstrap(a, b, n_resamples=2345, seed=11)
    draws = np.random.default_rng(11).integers(0, 50, size=(2345, 50))
    direct = a[draws].mean(axis=1) - b[draws].mean(axis=1)
    assert first.ci_diff == pytest.approx(tuple(np.quantile(direct, [0.025, 0.975])), abs=1e-12)
    with pytest.raises(ConfigError, match="n_resamples"):
        paired_bootstrap(a, n_resamples=0)
    with pytest.raises(ConfigError, match="level"):
        paired_bootstrap(a, level=95)
    single = paired_bootstrap(a, n_resamples=100)
    assert single.accuracy_b is None and single.ci_diff is None
