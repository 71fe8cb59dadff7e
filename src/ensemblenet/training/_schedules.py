"""Learning-rate schedules as pure functions of the step: easy to test, nothing to pickle."""

from __future__ import annotations

import math

from ..errors import ConfigError

__all__ = ["SCHEDULES", "lr_factor"]

SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(schedule: str, step: int, total_steps: int, warmup: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total_steps``.

    A linear warm-up over the first ``warmup`` fraction of steps, then ``constant`` (1),
    ``cosine`` (half cosine to 0) or ``linear`` (straight line to 0).

    >>> lr_factor("cosine", 50, 100)
    0.5
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; valid schedules: {list(SCHEDULES)}")
    warm = int(warmup * total_steps)
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress
