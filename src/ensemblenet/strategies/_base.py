"""The strategy contract, its registry, and what every strategy shares.

A strategy is any object with

* ``combine(probs) -> Tensor``: member probabilities ``(M, N, C)`` (M members, N images, C
  classes; each row a distribution) to ensemble probabilities ``(N, C)`` whose rows sum to 1;
* ``needs_fit: bool``: True while the strategy must first learn something from validation data;
* optionally ``fit(probs, labels) -> None``: learn from validation probabilities ``(M, N, C)`` and
  integer labels ``(N,)`` (``Ensemble.fit_weights`` calls it);
* optionally ``state_dict()`` / ``load_state_dict(state)`` with plain data, so an ensemble file
  can save and restore what it learnt or was given.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from ..errors import ConfigError
from ..registry import Registry

__all__ = [
    "SMALL_VALIDATION",
    "STRATEGIES",
    "CallableStrategy",
    "Strategy",
    "check_labels",
    "check_member_probs",
    "fold_ids",
    "quiet_small_validation",
    "register_strategy",
    "single_thread",
    "small_validation_quiet",
    "strategy_from_state",
    "strategy_name",
    "strategy_state",
    "warn_small_validation",
]

logger = logging.getLogger("ensemblenet.strategies")

#: Below this many validation images, fitting a combination (weights, temperatures, stacking) or
#: choosing one logs a warning: one image is then more than half a point of accuracy, and a
#: fitted weight can follow a few lucky images (on ants vs bees, 49 validation images that one
#: member classified without an error put all the weight on it). Fitted weights are also shrunk
#: toward uniform (:class:`~ensemblenet.WeightedStrategy`'s ``prior_rows``).
SMALL_VALIDATION = 200

_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ensemblenet_quiet_small_validation", default=False
)


def warn_small_validation(n: int, what: str) -> None:
    """Log a WARNING when ``what`` (e.g. ``"fitting weights"``) uses fewer than
    :data:`SMALL_VALIDATION` validation images (not inside :func:`quiet_small_validation`)."""
    if n < SMALL_VALIDATION and not _quiet.get():
        logger.warning(
            "%s on only %d validation images (fewer than %d): the result can follow a few lucky images; "
            "use more validation images, or strategy='mean', which fits nothing",
            what,
            n,
            SMALL_VALIDATION,
        )


def small_validation_quiet() -> bool:
    """True inside :func:`quiet_small_validation` (fits that a caller has already warned about)."""
    return _quiet.get()


@contextlib.contextmanager
def quiet_small_validation() -> Iterator[None]:
    """No small-validation warning from fits inside (a chooser's folds, after it warned once)."""
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


@runtime_checkable
class Strategy(Protocol):
    """What an ensemble needs from a strategy (``fit(probs, labels)`` is optional)."""

    needs_fit: bool

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        """Map member probabilities ``(M, N, C)`` to ensemble probabilities ``(N, C)``."""
        ...


STRATEGIES: Registry[type[Any]] = Registry("strategy")


def register_strategy(name: str) -> Any:
    """Class decorator registering a strategy class under ``name`` (its constructor takes the settings)."""
    return STRATEGIES.register(name)


def check_member_probs(probs: object) -> torch.Tensor:
    """Return ``probs`` if it is a floating tensor of shape ``(M, N, C)`` with ``M >= 1``, else raise.

    Raises:
        ConfigError: not a tensor, not floating point, or not 3-dimensional.
    """
    if not isinstance(probs, torch.Tensor):
        raise ConfigError(
            f"member probabilities must be a torch.Tensor (M, N, C), got {type(probs).__name__}"
        )
    if probs.dim() != 3 or probs.shape[0] < 1:
        raise ConfigError(
            f"member probabilities must have shape (members, images, classes) with at least one member, "
            f"got shape {tuple(probs.shape)}; stack the members' (N, C) outputs with torch.stack(..., dim=0)."
        )
    if not probs.is_floating_point():
        raise ConfigError(f"member probabilities must be floating point, got dtype {probs.dtype}")
    return probs


class CallableStrategy:
    """Wrap a plain function ``f(probs (M, N, C)) -> probs (N, C)`` as a strategy."""

    needs_fit = False

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        return self.fn(check_member_probs(probs))

    def __repr__(self) -> str:
        return f"CallableStrategy({self.name})"


def strategy_name(strategy: object) -> str:
    """The registered name of ``strategy``, else its ``name`` attribute, else its class name."""
    registered = STRATEGIES.name_of(strategy)
    if registered is not None:
        return registered
    name: object = getattr(strategy, "name", None)
    return name if isinstance(name, str) else type(strategy).__name__


def check_labels(labels: object, probs: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != probs.shape[1]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"labels must be an integer tensor of shape ({probs.shape[1]},), got {shape}")
    labels = labels.long().to(probs.device)
    if labels.numel() and (labels.min() < 0 or labels.max() >= probs.shape[2]):
        raise ConfigError(f"labels must lie in [0, {probs.shape[2] - 1}], got values outside it")
    if labels.numel() == 0:
        raise ConfigError("cannot fit on zero labelled images; pass a non-empty validation set")
    return labels


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny tensor work on one intra-op thread, then restore the previous setting.

    The combiners fit a few hundred numbers; on a busy machine, waking a thread pool for each of
    thousands of tiny ops makes them tens of times slower than one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fold_ids(n: int, folds: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Fold of each row for cross-fitting: rows in a seeded random order, dealt round-robin.

    With ``labels`` the folds are **stratified**: each class's rows are shuffled and dealt in turn,
    so every fold holds each class in (nearly) its overall share, and no fold is left without a
    class that a combiner must learn to predict.
    """
    generator = torch.Generator().manual_seed(seed)
    ids = torch.empty(n, dtype=torch.int64)
    if labels is None:
        order = torch.randperm(n, generator=generator)
    else:
        labels = labels.long().cpu()
        groups = []
        for c in torch.unique(labels, sorted=True).tolist():
            rows = torch.nonzero(labels == c).flatten()
            groups.append(rows[torch.randperm(rows.numel(), generator=generator)])
        order = torch.cat(groups)
    ids[order] = torch.arange(n) % folds
    return ids


def strategy_state(strategy: object) -> dict[str, Any]:
    """``{"name": registered name, "state": plain-data state}`` for saving ``strategy``.

    Raises:
        ConfigError: the strategy is not registered, or carries settings without ``state_dict()``.
    """
    name = STRATEGIES.name_of(strategy)
    if name is None:
        raise ConfigError(
            f"cannot save strategy {strategy!r}: only registered strategies can be saved. Register its "
            "class with @register_strategy('name') and give it state_dict()/load_state_dict() if it "
            "has settings or fitted state."
        )
    state_fn = getattr(strategy, "state_dict", None)
    if callable(state_fn):
        state = state_fn()
    elif vars(strategy):
        raise ConfigError(
            f"cannot save strategy {name!r}: it has attributes {sorted(vars(strategy))} but no "
            "state_dict(); add state_dict() -> dict and load_state_dict(dict) so they can be restored."
        )
    else:
        state = {}
    return {"name": name, "state": state}


def strategy_from_state(saved: dict[str, Any]) -> Strategy:
    """Inverse of :func:`strategy_state`."""
    cls = STRATEGIES.get(str(saved["name"]))
    strategy = cls()
    state = saved.get("state") or {}
    if state:
        strategy.load_state_dict(state)
    return strategy  # type: ignore[no-any-return]
