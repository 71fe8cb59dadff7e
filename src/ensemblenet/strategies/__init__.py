"""Ways to combine ensemble members' class probabilities into one prediction.

Every strategy defined here is registered by name when this package is imported: ``"mean"``
(soft vote), ``"geometric"`` (mean of log-probabilities, renormalized), ``"vote"`` (hard majority
vote, ties broken by mean probability), ``"weighted"`` (weighted soft vote, weights given or fitted
on validation log-loss), ``"greedy"`` (Caruana's ensemble selection), ``"stacking"`` (cross-fitted
logistic regression) and ``"calibrated"`` (temperature scaling around another strategy).
:func:`choose_strategy` picks among candidates by cross-fitted validation score, in folds
stratified by class. Fitting or choosing on fewer than :data:`SMALL_VALIDATION` validation
images logs a warning, and fitted weights are shrunk toward uniform.

The contract is small (see :class:`Strategy`). A plain function ``f(probs) -> probs`` works too.
Register a strategy by name so the string form (``Ensemble(members, strategy="doc_max")``) works:

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
"""

from ._base import (
    SMALL_VALIDATION,
    STRATEGIES,
    CallableStrategy,
    Strategy,
    check_labels,
    check_member_probs,
    fold_ids,
    quiet_small_validation,
    register_strategy,
    single_thread,
    strategy_from_state,
    strategy_name,
    strategy_state,
    warn_small_validation,
)
from ._basic import GeometricStrategy, MeanStrategy, VoteStrategy
from ._calibrated import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    CalibratedStrategy,
    apply_temperature,
    fit_temperature,
)
from ._chooser import COMBINATIONS, DEFAULT_CANDIDATES, StrategyChoice, choose_strategy, fit_candidate
from ._greedy import GreedyStrategy
from ._resolve import StrategyLike, fittable_strategy, resolve_strategy
from ._stacking import StackingStrategy
from ._weighted import WeightedStrategy, normalize_weights, weighted_mean

__all__ = [
    "COMBINATIONS",
    "DEFAULT_CANDIDATES",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "SMALL_VALIDATION",
    "STRATEGIES",
    "CalibratedStrategy",
    "CallableStrategy",
    "GeometricStrategy",
    "GreedyStrategy",
    "MeanStrategy",
    "StackingStrategy",
    "Strategy",
    "StrategyChoice",
    "StrategyLike",
    "VoteStrategy",
    "WeightedStrategy",
    "apply_temperature",
    "check_labels",
    "check_member_probs",
    "choose_strategy",
    "fit_candidate",
    "fit_temperature",
    "fittable_strategy",
    "fold_ids",
    "normalize_weights",
    "quiet_small_validation",
    "register_strategy",
    "resolve_strategy",
    "single_thread",
    "strategy_from_state",
    "strategy_name",
    "strategy_state",
    "warn_small_validation",
    "weighted_mean",
]
