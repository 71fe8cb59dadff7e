"""Ways to combine ensemble members' class probabilities into one prediction.

The contract is small. A strategy is any object with

* ``combine(probs) -> Tensor``: member probabilities ``(M, N, C)`` (M members, N images, C
  classes; each row a distribution) to ensemble probabilities ``(N, C)`` whose rows sum to 1;
* ``needs_fit: bool``: True while the strategy must first learn something from validation data;
* optionally ``fit(probs, labels) -> None``: learn from validation probabilities ``(M, N, C)`` and
  integer labels ``(N,)`` (``Ensemble.fit_weights`` calls it).

A plain function ``f(probs) -> probs`` works too. Register a strategy by name so the string form
(``Ensemble(members, strategy="doc_max")``) works:

>>> import torch
>>> from ensemblenet.strategies import STRATEGIES, register_strategy, resolve_strategy
>>> @register_strategy("doc_max")
... class MaxStrategy:
...     '''Trust the most confident member for each class, then renormalize.'''
...     needs_fit = False
...     def combine(self, probs: torch.Tensor) -> torch.Tensor:
...         best = probs.max(dim=0).values
...         return best / best.sum(dim=1, keepdim=True)
>>> probs = torch.tensor([[[0.9, 0.1]], [[0.4, 0.6]]])  # 2 members, 1 image, 2 classes
>>> resolve_strategy("doc_max").combine(probs)
tensor([[0.6000, 0.4000]])
>>> resolve_strategy(lambda p: p.mean(dim=0)).combine(probs)
tensor([[0.6500, 0.3500]])
>>> STRATEGIES.unregister("doc_max")

Built in: ``"mean"`` (soft vote), ``"geometric"`` (mean of log-probabilities, renormalized),
``"vote"`` (hard majority vote) and ``"weighted"`` (weighted soft vote, with weights given or
fitted on validation data); :mod:`ensemblenet.selection` adds ``"greedy"`` and ``"stacking"``,
:mod:`ensemblenet.calibration` adds ``"calibrated"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from .errors import ConfigError
from .registry import Registry

__all__ = [
    "STRATEGIES",
    "CallableStrategy",
    "GeometricStrategy",
    "MeanStrategy",
    "Strategy",
    "VoteStrategy",
    "WeightedStrategy",
    "check_member_probs",
    "register_strategy",
    "resolve_strategy",
    "strategy_name",
]


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


@register_strategy("mean")
class MeanStrategy:
    """Soft vote: the mean of the members' probabilities (scikit-learn's ``voting="soft"``)."""

    needs_fit = False

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        return check_member_probs(probs).mean(dim=0)

    def __repr__(self) -> str:
        return "MeanStrategy()"


@register_strategy("geometric")
class GeometricStrategy:
    """Geometric mean: ``softmax(mean_m log probs[m])``, i.e. the renormalized product of experts.

    Probabilities are clamped to at least 1e-7 before the log, so one member's hard zero cannot
    veto a class on its own.

    >>> import torch
    >>> from ensemblenet.strategies import GeometricStrategy
    >>> GeometricStrategy().combine(torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]]))
    tensor([[0.5000, 0.5000]])
    """

    needs_fit = False

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        probs = check_member_probs(probs)
        return torch.softmax(torch.log(probs.clamp_min(1e-7)).mean(dim=0), dim=-1)

    def __repr__(self) -> str:
        return "GeometricStrategy()"


@register_strategy("vote")
class VoteStrategy:
    """Hard majority vote; the output probabilities are the vote shares.

    Each member votes for its most probable class (the lowest index if a member's own top
    probabilities tie). Ties between classes with the same number of votes are frequent with two
    members, so they are broken explicitly, never silently by class order:

    1. among the tied classes, the one with the highest **mean probability** wins: the output is
       ``shares + eps * mean_probs`` renormalized, with ``eps = 1e-6 / M``, far below the ``1 / M``
       gap between vote counts, so the shares are otherwise unchanged;
    2. if the mean probabilities tie exactly too, the **lowest class index** wins (``argmax``).

    The result is float64 whatever the input dtype: the tie-break term is below float32 resolution.

    >>> import torch
    >>> from ensemblenet.strategies import VoteStrategy
    >>> probs = torch.tensor([[[0.9, 0.1]], [[0.3, 0.7]]])  # one vote each; mean 0.6 vs 0.4
    >>> VoteStrategy().combine(probs).argmax(dim=1)
    tensor([0])
    """

    needs_fit = False

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        probs = check_member_probs(probs).double()
        members, _, classes = probs.shape
        votes = torch.nn.functional.one_hot(probs.argmax(dim=2), classes).to(probs.dtype)
        shares = votes.mean(dim=0)
        eps = 1e-6 / members
        scores = shares + eps * probs.mean(dim=0)
        return scores / scores.sum(dim=1, keepdim=True)

    def __repr__(self) -> str:
        return "VoteStrategy()"


@register_strategy("weighted")
class WeightedStrategy:
    """Weighted soft vote: ``sum_m w_m * probs[m]`` with weights normalized to sum to 1.

    Args:
        weights: one non-negative weight per member (normalized here), or None to learn them with
            :meth:`fit` (``Ensemble.fit_weights(val)``) on validation data.

    :meth:`fit` minimizes the validation log-loss over the simplex (softmax parametrization,
    L-BFGS in float64, started at uniform weights; deterministic) and keeps uniform weights unless
    the fitted ones are at least as good, so fitted weights are never worse than uniform on the
    data they were fitted on.
    """

    def __init__(self, weights: Sequence[float] | None = None) -> None:
        self._weights: torch.Tensor | None = None if weights is None else _normalize_weights(weights)
        self.needs_fit = weights is None

    @property
    def weights(self) -> torch.Tensor | None:
        """The normalized float64 weights, or None before :meth:`fit` when none were given."""
        return None if self._weights is None else self._weights.clone()

    def combine(self, probs: torch.Tensor) -> torch.Tensor:
        probs = check_member_probs(probs)
        if self._weights is None:
            raise ConfigError(
                "WeightedStrategy has no weights yet: call Ensemble.fit_weights(val) to learn them on "
                "validation data, or pass them, e.g. strategy='weighted', weights=[0.6, 0.4]."
            )
        return _weighted_mean(probs, self._weights)

    def fit(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Learn the weights that minimize the log-loss of ``probs`` ``(M, N, C)`` against ``labels``."""
        from .metrics import log_loss  # local: metrics is a leaf module, this keeps imports one-way

        probs = check_member_probs(probs)
        labels = _check_labels(labels, probs)
        if not torch.isfinite(probs).all():
            raise ConfigError("cannot fit weights on non-finite probabilities; drop the NaN rows first")
        members = probs.shape[0]
        uniform = torch.full((members,), 1.0 / members, dtype=torch.float64)
        # Only the probability each member gives the true class matters for the log-loss.
        true_probs = probs.double()[:, torch.arange(probs.shape[1]), labels]  # (M, N)
        logits = torch.zeros(members, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [logits], lr=1.0, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            mixed = (torch.softmax(logits, dim=0)[:, None] * true_probs).sum(dim=0)
            loss = -torch.log(mixed.clamp_min(1e-12)).mean()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        if members > 1:
            optimizer.step(closure)  # type: ignore[no-untyped-call]
        fitted = torch.softmax(logits.detach(), dim=0)
        # Judge with the exact computation users will measure (combine + metrics.log_loss), so the
        # "never worse than uniform" promise holds on these data, rounding included.
        fitted_loss = log_loss(_weighted_mean(probs, fitted), labels)
        uniform_loss = log_loss(_weighted_mean(probs, uniform), labels)
        self._weights = fitted if math.isfinite(fitted_loss) and fitted_loss <= uniform_loss else uniform
        self.needs_fit = False

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state, for saving an ensemble to one file."""
        return {"weights": None if self._weights is None else self._weights.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state.get("weights")
        self._weights = None if weights is None else _normalize_weights(weights)
        self.needs_fit = weights is None

    def __repr__(self) -> str:
        shown = None if self._weights is None else [round(w, 4) for w in self._weights.tolist()]
        return f"WeightedStrategy(weights={shown})"


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


def resolve_strategy(
    strategy: str | Strategy | Callable[[torch.Tensor], torch.Tensor], **kwargs: Any
) -> Strategy:
    """Turn a name (settings as ``kwargs``), a strategy object or a function into a strategy.

    >>> from ensemblenet.strategies import resolve_strategy
    >>> resolve_strategy("weighted", weights=[3, 1]).weights
    tensor([0.7500, 0.2500], dtype=torch.float64)

    Raises:
        UnknownNameError: an unregistered name (the message lists close matches).
        ConfigError: settings the strategy does not take, or an object that is not a strategy.
    """
    if isinstance(strategy, str):
        cls = STRATEGIES.get(strategy)
        try:
            return cls(**kwargs)  # type: ignore[no-any-return]
        except TypeError as exc:
            raise ConfigError(f"bad settings {kwargs!r} for strategy {strategy!r}: {exc}") from None
    if kwargs:
        raise ConfigError(
            f"settings {sorted(kwargs)} only apply to a strategy given by name; {strategy!r} is an object "
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


def strategy_name(strategy: object) -> str:
    """The registered name of ``strategy``, else its ``name`` attribute, else its class name."""
    registered = STRATEGIES.name_of(strategy)
    if registered is not None:
        return registered
    name: object = getattr(strategy, "name", None)
    return name if isinstance(name, str) else type(strategy).__name__


def _normalize_weights(weights: Sequence[float]) -> torch.Tensor:
    try:
        values = torch.tensor([float(w) for w in weights], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"weights must be a sequence of numbers, one per member, got {weights!r}") from None
    if values.numel() == 0:
        raise ConfigError("weights is empty; pass one non-negative weight per ensemble member")
    if not torch.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ConfigError(
            f"weights must be finite, non-negative and not all zero, got {list(weights)!r}; "
            "they are normalized to sum to 1, so e.g. [2, 1] means 2/3 and 1/3."
        )
    return values / values.sum()


def _weighted_mean(probs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    if weights.numel() != probs.shape[0]:
        raise ConfigError(
            f"WeightedStrategy has {weights.numel()} weights but the ensemble has {probs.shape[0]} members; "
            "pass exactly one weight per member, in member order."
        )
    w = weights.to(device=probs.device, dtype=probs.dtype).view(-1, 1, 1)
    return (w * probs).sum(dim=0)


def _check_labels(labels: object, probs: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != probs.shape[1]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"labels must be an integer tensor of shape ({probs.shape[1]},), got {shape}")
    labels = labels.long().to(probs.device)
    if labels.numel() and (labels.min() < 0 or labels.max() >= probs.shape[2]):
        raise ConfigError(f"labels must lie in [0, {probs.shape[2] - 1}], got values outside it")
    if labels.numel() == 0:
        raise ConfigError("cannot fit on zero labelled images; pass a non-empty validation set")
    return labels
