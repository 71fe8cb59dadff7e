"""What an :class:`~ensemblenet.Ensemble` checks of its members, and how it applies its strategy.

The members must be models that predict the same classes in the same order; rows of images some
member could not read stay NaN instead of reaching the strategy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch

from ..errors import ClassMismatchError, ConfigError
from ..models import TransferModel
from ..strategies import Strategy, strategy_name
from ._inputs import readable_rows
from ._tta import TTA

__all__ = ["EnsembleParts", "check_fitted", "check_members", "combine_probas"]


class EnsembleParts(Protocol):
    """What an ensemble is made of, as its file writer and its ONNX export read it."""

    @property
    def members(self) -> Sequence[TransferModel]: ...
    @property
    def classes(self) -> tuple[str, ...]: ...
    @property
    def strategy(self) -> Strategy: ...
    @property
    def tta(self) -> TTA | None: ...


def check_members(members: Sequence[TransferModel]) -> tuple[str, ...]:
    """The class names every member predicts.

    Raises:
        ConfigError: no members, or a member that is not a :class:`~ensemblenet.TransferModel`.
        ClassMismatchError: members whose class names or their order differ.
    """
    if not members:
        raise ConfigError("an Ensemble needs at least one member model")
    for i, member in enumerate(members):
        if not isinstance(member, TransferModel):
            raise ConfigError(
                f"ensemble member {i} is a {type(member).__name__}, not an ensemblenet TransferModel; "
                "build members with create_model() or load them with load_model()."
            )
    classes = members[0].classes
    for i, member in enumerate(members[1:], start=1):
        if member.classes != classes:
            how = "in a different order" if set(member.classes) == set(classes) else "different names"
            raise ClassMismatchError(
                f"ensemble member {i} ({member.config.backbone}) predicts classes "
                f"{list(member.classes)} but member 0 ({members[0].config.backbone}) predicts "
                f"{list(classes)} ({how}); "
                "every member must predict the same class names in the same order. Retrain member "
                f"{i} with classes={list(classes)}, or reorder the members' class folders to match."
            )
    return classes


def check_fitted(strategy: Strategy) -> None:
    """Raise :class:`~ensemblenet.ConfigError` if ``strategy`` still needs fitting."""
    if getattr(strategy, "needs_fit", False):
        raise ConfigError(
            f"strategy {strategy_name(strategy)!r} must be fitted first: call "
            "Ensemble.fit_weights(val) on labelled validation data, or pass weights=[...]."
        )


def combine_probas(strategy: Strategy, probs: torch.Tensor) -> torch.Tensor:
    """Combine member probabilities ``(M, N, C)`` into float64 ``(N, C)``; NaN rows stay NaN.

    Raises:
        ConfigError: the strategy returned something other than an ``(images, classes)`` tensor.
    """
    n, c = probs.shape[1], probs.shape[2]
    out = torch.full((n, c), math.nan, dtype=torch.float64)
    valid = readable_rows(probs)
    if valid.any():
        combined = strategy.combine(probs[:, valid].double())
        if not isinstance(combined, torch.Tensor) or tuple(combined.shape) != (int(valid.sum()), c):
            shape = tuple(combined.shape) if isinstance(combined, torch.Tensor) else type(combined).__name__
            raise ConfigError(
                f"strategy {strategy_name(strategy)!r} returned {shape}; combine(probs) must map "
                f"(members, images, classes) to (images, classes) = ({int(valid.sum())}, {c})"
            )
        out[valid] = combined.double().cpu()
    return out
