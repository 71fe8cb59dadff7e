"""Is the difference real? McNemar's exact test and paired bootstrap confidence intervals.

Both work on **paired** per-image correctness: two classifiers scored on the same images.

McNemar's exact test looks only at the discordant pairs: ``b`` images that A gets right and B
wrong, ``c`` the other way round. Under "equally accurate", ``b ~ Binomial(b + c, 1/2)``; the
two-sided p-value is ``min(1, 2 * P(X <= min(b, c)))`` (1 when ``b + c = 0``).

>>> from ensemblenet.scoring import mcnemar_exact
>>> result = mcnemar_exact([True] * 3 + [False] * 6 + [True], [True] * 3 + [True] * 6 + [False])
>>> (result.b, result.c, result.p_value)
(1, 6, 0.125)

The bootstrap resamples images with replacement (the same resampled images for both classifiers,
which is what "paired" means) and reports percentile intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["BootstrapResult", "McNemarResult", "mcnemar_exact", "paired_bootstrap"]

#: Resamples drawn per chunk, so memory stays ~ chunk * N indices whatever n_resamples is.
_CHUNK = 1000


@dataclass(frozen=True)
class McNemarResult:
    """Discordant counts and the exact two-sided p-value."""

    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimates and percentile confidence intervals from a paired bootstrap.

    ``accuracy_b`` / ``diff`` fields are None when only one classifier was given. ``diff`` is
    ``accuracy_a - accuracy_b``.
    """

    accuracy_a: float
    ci_a: tuple[float, float]
    accuracy_b: float | None
    ci_b: tuple[float, float] | None
    diff: float | None
    ci_diff: tuple[float, float] | None
    level: float
    n_resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_bool(x: Sequence[bool] | torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(
            f"{name} must be a non-empty 1-D sequence of per-image correctness, got {arr.shape}"
        )
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ConfigError(f"{name} must hold booleans (or 0/1): per image, was the prediction right?")
    return arr.astype(bool)


def mcnemar_exact(
    correct_a: Sequence[bool] | torch.Tensor, correct_b: Sequence[bool] | torch.Tensor
) -> McNemarResult:
    """McNemar's exact (binomial) two-sided test on paired per-image correctness."""
    a, b_ = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    if a.shape != b_.shape:
        raise ConfigError(f"correct_a has {a.size} images but correct_b has {b_.size}; they must be paired")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0)
    k = min(b, c)
    # Exact integer arithmetic for the tail, then one division: no float underflow for large n.
    tail = sum(math.comb(n, i) for i in range(k + 1))
    p = min(1.0, 2 * tail / 2**n)
    return McNemarResult(b, c, float(p))


def paired_bootstrap(
    correct_a: Sequence[bool] | torch.Tensor,
    correct_b: Sequence[bool] | torch.Tensor | None = None,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapResult:
    """Percentile bootstrap intervals for accuracy (and the paired accuracy difference).

    The resampled index matrix is ``numpy.random.default_rng(seed).integers(0, N, size=(n_resamples,
    N))`` (drawn in row chunks, which gives the same numbers); row ``r`` is one resample of the N
    images, used for both classifiers. Intervals are ``numpy.quantile`` (linear interpolation) at
    ``(1 - level) / 2`` and ``(1 + level) / 2`` of the resampled statistics.
    """
    a = _as_bool(correct_a, "correct_a")
    b = None if correct_b is None else _as_bool(correct_b, "correct_b")
    if b is not None and a.shape != b.shape:
        raise ConfigError(f"correct_a has {a.size} images but correct_b has {b.size}; they must be paired")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive int, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), e.g. 0.95, got {level!r}")
    n = a.size
    rng = np.random.default_rng(seed)
    acc_a = np.empty(n_resamples)
    acc_b = np.empty(n_resamples) if b is not None else None
    fa = a.astype(np.float64)
    fb = None if b is None else b.astype(np.float64)
    for start in range(0, n_resamples, _CHUNK):
        rows = min(_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        acc_a[start : start + rows] = fa[idx].mean(axis=1)
        if acc_b is not None and fb is not None:
            acc_b[start : start + rows] = fb[idx].mean(axis=1)
    q = ((1 - level) / 2, (1 + level) / 2)

    def ci(values: np.ndarray) -> tuple[float, float]:
        lo, hi = np.quantile(values, q)
        return float(lo), float(hi)

    return BootstrapResult(
        accuracy_a=float(fa.mean()),
        ci_a=ci(acc_a),
        accuracy_b=None if fb is None else float(fb.mean()),
        ci_b=None if acc_b is None else ci(acc_b),
        diff=None if fb is None else float(fa.mean() - fb.mean()),
        ci_diff=None if acc_b is None else ci(acc_a - acc_b),
        level=level,
        n_resamples=n_resamples,
        seed=seed,
    )
