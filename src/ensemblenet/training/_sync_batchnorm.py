"""SyncBatchNorm for data-parallel training on GPUs: swap BatchNorm layers in and out, sharing tensors.

With ``TrainConfig(sync_batchnorm=True)`` under ``torchrun`` on GPUs, BatchNorm batch statistics are
computed over the global batch instead of each rank's share; the trainer swaps the layers in for
``fit`` and back afterwards, so the caller gets back the modules it gave.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import nn

__all__ = ["convert_sync_batchnorm", "revert_sync_batchnorm"]

log = logging.getLogger("ensemblenet.training")

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def convert_sync_batchnorm(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace every plain ``BatchNorm1d/2d/3d`` in ``module`` by a ``SyncBatchNorm``, in place.

    The new layers share the old ones' parameters and buffers (same tensor objects), so the optimizer,
    checkpoints and :func:`revert_sync_batchnorm` see every update. Subclasses of BatchNorm that add
    behaviour (e.g. timm's ``BatchNormAct2d``, which also applies an activation) are left alone and
    logged, since a plain ``SyncBatchNorm`` would silently drop that behaviour.

    Returns:
        ``(parent, child name, original layer)`` triples for :func:`revert_sync_batchnorm`.
    """
    replaced: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in _BATCHNORMS:
                assert isinstance(child, nn.modules.batchnorm._BatchNorm)  # for mypy: checked just above
                sync = nn.SyncBatchNorm(
                    child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
                )
                sync.weight, sync.bias = child.weight, child.bias
                sync.running_mean, sync.running_var = child.running_mean, child.running_var
                sync.num_batches_tracked = child.num_batches_tracked
                sync.train(child.training)
                setattr(parent, name, sync)
                replaced.append((parent, name, child))
            elif isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
                child, nn.SyncBatchNorm
            ):
                log.warning("sync_batchnorm: left %s (%s) unsynchronised", name, type(child).__name__)
    return replaced


def revert_sync_batchnorm(replaced: Sequence[tuple[nn.Module, str, nn.Module]]) -> None:
    """Put back the layers :func:`convert_sync_batchnorm` replaced (they share the trained tensors)."""
    for parent, name, original in reversed(replaced):
        sync = getattr(parent, name)
        original.train(sync.training)
        setattr(parent, name, original)
