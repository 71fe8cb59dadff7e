"""Fine-tuning one model: the Trainer, its callbacks and schedules, the frozen-feature cache,
and data-parallel training under ``torchrun``.

:class:`Trainer` runs one readable loop configured by a frozen :class:`TrainConfig`; a freeze
policy (from :mod:`ensemblenet.models`) says what trains each epoch; callbacks keep the best model
and stop early; the state is saved after every epoch so an interrupted run resumes exactly. When
the policy keeps a backbone prefix frozen in eval mode, :func:`fit_with_feature_cache` computes
that prefix once and trains only the rest (a :class:`FeatureStore` keeps it on disk for the next
run); with a teacher's probabilities as targets and a
:class:`DistillationLoss` it distils an ensemble into one student.

Training is visible while it runs: :class:`ProgressPrinter` prints an epoch table as each epoch
ends, :class:`CSVLogger` keeps a ``metrics.csv``, :class:`TensorBoardLogger` writes TensorBoard
scalars (:func:`~ensemblenet.finetune` adds the first two by default).

A newcomer adds a callback or a logger by subclassing :class:`Callback`.
"""

from ._callbacks import Callback, EarlyStopping, ModelCheckpoint, TrainerState
from ._config import OPTIMIZERS, PRECISIONS, TrainConfig, resolve_device
from ._distillation import DistillationLoss, pack_targets, soften, unpack_targets
from ._distributed import DistContext, ShardSampler, barrier, is_main_process
from ._feature_cache import (
    DEFAULT_VIEWS,
    compute_features,
    fit_with_feature_cache,
    frozen_stages,
)
from ._feature_store import FeatureStore, prefix_digest
from ._features import FeatureCache
from ._history import EpochRecord, History
from ._loggers import CSVLogger, ProgressPrinter, TensorBoardLogger, read_metrics_csv
from ._schedules import SCHEDULES, lr_factor
from ._sync_batchnorm import convert_sync_batchnorm, revert_sync_batchnorm
from ._trainer import Trainer

__all__ = [
    "DEFAULT_VIEWS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "CSVLogger",
    "Callback",
    "DistContext",
    "DistillationLoss",
    "EarlyStopping",
    "EpochRecord",
    "FeatureCache",
    "FeatureStore",
    "History",
    "ModelCheckpoint",
    "ProgressPrinter",
    "ShardSampler",
    "TensorBoardLogger",
    "TrainConfig",
    "Trainer",
    "TrainerState",
    "barrier",
    "compute_features",
    "convert_sync_batchnorm",
    "fit_with_feature_cache",
    "frozen_stages",
    "is_main_process",
    "lr_factor",
    "pack_targets",
    "prefix_digest",
    "read_metrics_csv",
    "resolve_device",
    "revert_sync_batchnorm",
    "soften",
    "unpack_targets",
]
