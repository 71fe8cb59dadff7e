"""ensemblenet: ensemble transfer learning on images.

>>> from ensemblenet import Ensemble, finetune
"""

from ._version import __version__
from .api import FinetuneResult, finetune
from .backbones import Backbone, load_backbone
from .callbacks import Callback, EarlyStopping, ModelCheckpoint
from .checkpoint import load_model, save_model
from .data import DEFAULT_SPLIT, Samples, scan_folder, split_samples
from .ensemble import Ensemble
from .errors import (
    CheckpointError,
    ClassMismatchError,
    ConfigError,
    DataError,
    DuplicateNameError,
    EnsembleNetError,
    MissingDependencyError,
    TrainingError,
    UnknownNameError,
    WeightsError,
    WeightsUnavailableError,
)
from .freeze import (
    BatchNormOnly,
    FreezePolicy,
    FreezeUnfreeze,
    HeadOnly,
    NoFreeze,
    register_freeze_policy,
)
from .heads import LinearHead, MLPHead, register_head
from .history import EpochRecord, Evaluation, History
from .model import TransferModel, create_model
from .spec import InputSpec
from .strategies import register_strategy
from .trainer import TrainConfig, Trainer

__all__ = [
    "DEFAULT_SPLIT",
    "Backbone",
    "BatchNormOnly",
    "Callback",
    "CheckpointError",
    "ClassMismatchError",
    "ConfigError",
    "DataError",
    "DuplicateNameError",
    "EarlyStopping",
    "Ensemble",
    "EnsembleNetError",
    "EpochRecord",
    "Evaluation",
    "FinetuneResult",
    "FreezePolicy",
    "FreezeUnfreeze",
    "HeadOnly",
    "History",
    "InputSpec",
    "LinearHead",
    "MLPHead",
    "MissingDependencyError",
    "ModelCheckpoint",
    "NoFreeze",
    "Samples",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "TransferModel",
    "UnknownNameError",
    "WeightsError",
    "WeightsUnavailableError",
    "__version__",
    "create_model",
    "finetune",
    "load_backbone",
    "load_model",
    "register_freeze_policy",
    "register_head",
    "register_strategy",
    "save_model",
    "scan_folder",
    "split_samples",
]
