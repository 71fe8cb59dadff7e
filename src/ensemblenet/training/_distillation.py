"""Knowledge distillation: the loss that trains a student on a teacher's soft probabilities.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": the student's
logits, divided by a temperature ``T``, are pulled towards the teacher's probabilities softened by
the same ``T``; the KL term is multiplied by ``T**2`` so that its gradients keep their size as
``T`` changes. Optionally a share ``hard_weight`` of the loss is ordinary cross-entropy on the true
labels.

The teacher here is an :class:`~ensemblenet.Ensemble`, which gives *probabilities* (its members'
logits are combined by a strategy, so there are no ensemble logits); softening ``p`` by ``T`` is
``softmax(log(p) / T)``, which equals softening the logits when the teacher is a single model.

The trainer hands the loss one target tensor per batch, so teacher probabilities and true labels
travel together, packed as ``(N, C + 1)``: the ``C`` probabilities, then the label index as a
float (see :func:`pack_targets`).

>>> import torch
>>> targets = pack_targets(torch.tensor([[0.9, 0.1]]), torch.tensor([0]))
>>> loss = DistillationLoss(temperature=1.0)
>>> round(loss(torch.log(torch.tensor([[0.9, 0.1]])), targets).item(), 6)  # student == teacher
0.0
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError

__all__ = ["DistillationLoss", "pack_targets", "soften", "unpack_targets"]

# Teacher probabilities of exactly 0 (float rounding of a confident ensemble) would make
# log(p) = -inf; this floor keeps the softened target finite and changes nothing measurable.
_FLOOR = 1e-12


def pack_targets(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` teacher probabilities and ``(N,)`` label indices as one float32 ``(N, C + 1)``."""
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ConfigError(
            f"pack_targets needs probabilities (N, C) and labels (N,); got {tuple(probs.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not torch.isfinite(probs).all():
        raise ConfigError(
            "the teacher's probabilities contain NaN or inf (an image it could not read?); leave "
            "those images out before packing"
        )
    return torch.cat([probs.float(), labels.float().unsqueeze(1)], dim=1)


def unpack_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack_targets`: probabilities ``(N, C)`` and labels int64 ``(N,)``."""
    return targets[:, :-1], targets[:, -1].round().long()


def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(log(probs) / temperature)``: a flatter distribution for ``temperature > 1``."""
    return torch.softmax(torch.log(probs.clamp_min(_FLOOR)) / temperature, dim=1)


class DistillationLoss(nn.Module):
    """``(1 - hard_weight) * T**2 * KL(soften(p, T) || softmax(z / T)) + hard_weight * CE(z, y)``.

    Args:
        temperature: ``T`` > 0; 1 matches the teacher's probabilities as they are, larger values
            put more weight on how the teacher ranks the classes it does not pick.
        hard_weight: share of cross-entropy on the true labels, in ``[0, 1]``; 0 learns from the
            teacher alone (the labels are not needed), 1 ignores the teacher.

    Called as ``loss(logits, targets)`` with targets from :func:`pack_targets`.
    """

    def __init__(self, temperature: float = 2.0, hard_weight: float = 0.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r} (1 = the teacher as it is)")
        if not 0.0 <= hard_weight <= 1.0:
            raise ConfigError(f"hard_weight must be in [0, 1], got {hard_weight!r}")
        self.temperature = float(temperature)
        self.hard_weight = float(hard_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.dim() != 2 or targets.shape[1] != logits.shape[1] + 1:
            raise ConfigError(
                f"DistillationLoss needs packed targets (N, C + 1) = ({logits.shape[0]}, "
                f"{logits.shape[1] + 1}) from pack_targets; got {tuple(targets.shape)}"
            )
        probs, labels = unpack_targets(targets)
        t = self.temperature
        soft = soften(probs.float(), t)
        log_student = F.log_softmax(logits.float() / t, dim=1)
        kd = F.kl_div(log_student, soft, reduction="batchmean") * (t * t)
        if self.hard_weight == 0.0:
            return kd
        hard = F.cross_entropy(logits.float(), labels)
        return (1.0 - self.hard_weight) * kd + self.hard_weight * hard

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, hard_weight={self.hard_weight}"
