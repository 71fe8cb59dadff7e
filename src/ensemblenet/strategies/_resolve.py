"""Resolving a strategy setting: a registered name (with its settings), an object or a function.

This is the one place that turns ``Ensemble(strategy=..., weights=...)`` into a strategy object,
and that says what ``Ensemble.fit_weights`` fits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import ConfigError
from ._base import STRATEGIES, CallableStrategy, Strategy
from ._basic import MeanStrategy
from ._weighted import WeightedStrategy

__all__ = ["StrategyLike", "fittable_strategy", "resolve_strategy"]

#: What a strategy setting may be: a registered name, a strategy object, or a function.
StrategyLike = str | Strategy | Callable[[torch.Tensor], torch.Tensor]


def resolve_strategy(
    strategy: StrategyLike,
    *,
    weights: Sequence[float] | None = None,
    members: int | None = None,
    **settings: Any,
) -> Strategy:
    """Turn a name (with its ``settings``), a strategy object or a function into a strategy.

    ``weights`` (one per member) ask for a weighted soft vote: allowed with ``"weighted"``, a
    :class:`WeightedStrategy` and ``"mean"`` (a weighted mean is then what is asked for). With
    ``members``, a weighted strategy must have exactly that many weights.

    >>> from ensemblenet.strategies import resolve_strategy
    >>> resolve_strategy("weighted", weights=[3, 1]).weights
    tensor([0.7500, 0.2500], dtype=torch.float64)

    Raises:
        UnknownNameError: an unregistered name (the message lists close matches).
        ConfigError: settings the strategy does not take, weights with a strategy that takes none
            or not one per member, or an object that is not a strategy.
    """
    if weights is not None:
        if not (strategy in ("weighted", "mean") or isinstance(strategy, WeightedStrategy)):
            raise ConfigError(
                f"weights={list(weights)!r} only apply to strategy='weighted', not {strategy!r}; pass "
                "strategy='weighted' or drop the weights."
            )
        strategy, settings = "weighted", {**settings, "weights": weights}
    resolved = _resolve(strategy, settings)
    known = resolved.weights if isinstance(resolved, WeightedStrategy) else None
    if members is not None and known is not None and len(known) != members:
        raise ConfigError(
            f"{len(known)} weights given for {members} members; pass exactly one weight per member."
        )
    return resolved


def _resolve(strategy: StrategyLike, settings: dict[str, Any]) -> Strategy:
    if isinstance(strategy, str):
        cls = STRATEGIES.get(strategy)
        try:
            return cls(**settings)  # type: ignore[no-any-return]
        except TypeError as exc:
            raise ConfigError(f"bad settings {settings!r} for strategy {strategy!r}: {exc}") from None
    if settings:
        raise ConfigError(
            f"settings {sorted(settings)} only apply to a strategy given by name; {strategy!r} is an object "
            "that carries its own settings."
        )
    if callable(getattr(strategy, "combine", None)):
        return strategy  # type: ignore[return-value]
    if callable(strategy):
        return CallableStrategy(strategy)
    raise ConfigError(
        f"strategy must be a name ({STRATEGIES.names()}), an object with combine(probs) and needs_fit, "
        f"or a function probs -> probs; got {strategy!r}"
    )


def fittable_strategy(strategy: Strategy) -> Strategy | None:
    """What fitting ``strategy`` on validation data means: the strategy itself when it has
    ``fit``, a new :class:`WeightedStrategy` for a plain ``"mean"`` (fitted weights are never worse
    than uniform on the data they are fitted on), or None when there is nothing to fit."""
    if callable(getattr(strategy, "fit", None)):
        return strategy
    if isinstance(strategy, MeanStrategy):
        return WeightedStrategy()
    return None
