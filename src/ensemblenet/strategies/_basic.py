"""The combinations with nothing to learn: the soft vote, the geometric mean and the hard vote."""

from __future__ import annotations

import torch

from ._base import check_member_probs, register_strategy

__all__ = ["GeometricStrategy", "MeanStrategy", "VoteStrategy"]


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
