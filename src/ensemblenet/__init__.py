"""ensemblenet: ensemble transfer learning on images.

>>> from ensemblenet import Ensemble, finetune
"""

from ._version import __version__
from .api import FinetuneResult, finetune
from .backbones import Backbone, load_backbone, register_source
from .cache import DecodedCache
from .calibration import CalibratedStrategy, brier_score, expected_calibration_error
from .callbacks import Callback, EarlyStopping, ModelCheckpoint
from .checkpoint import load_model, save_model
from .choice import StrategyChoice, choose_strategy
from .data import (
    DEFAULT_SPLIT,
    ImageDataset,
    Samples,
    UnreadableImageError,
    View,
    load_image,
    make_loader,
    scan_folder,
    split_samples,
)
from .distributed import DistContext
from .ensemble import Ensemble, EnsembleEvaluation, MemberEvaluation
from .ensemble_io import load_ensemble, save_ensemble
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
from .export import export_onnx
from .fast import optimize_for_cpu
from .features import FreezeStages, fit_with_feature_cache
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
from .parallel import MemberResult, train_ensemble
from .report import EnsembleReport
from .selection import GreedyStrategy, StackingStrategy
from .significance import mcnemar_exact, paired_bootstrap
from .spec import InputSpec
from .strategies import (
    GeometricStrategy,
    MeanStrategy,
    Strategy,
    VoteStrategy,
    WeightedStrategy,
    register_strategy,
)
from .trainer import TrainConfig, Trainer
from .tta import TTA
from .weights import list_offline_weights, register_offline_weights

__all__ = [
    "DEFAULT_SPLIT",
    "TTA",
    "Backbone",
    "BatchNormOnly",
    "CalibratedStrategy",
    "Callback",
    "CheckpointError",
    "ClassMismatchError",
    "ConfigError",
    "DataError",
    "DecodedCache",
    "DistContext",
    "DuplicateNameError",
    "EarlyStopping",
    "Ensemble",
    "EnsembleEvaluation",
    "EnsembleNetError",
    "EnsembleReport",
    "EpochRecord",
    "Evaluation",
    "FinetuneResult",
    "FreezePolicy",
    "FreezeStages",
    "FreezeUnfreeze",
    "GeometricStrategy",
    "GreedyStrategy",
    "HeadOnly",
    "History",
    "ImageDataset",
    "InputSpec",
    "LinearHead",
    "MLPHead",
    "MeanStrategy",
    "MemberEvaluation",
    "MemberResult",
    "MissingDependencyError",
    "ModelCheckpoint",
    "NoFreeze",
    "Samples",
    "StackingStrategy",
    "Strategy",
    "StrategyChoice",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "TransferModel",
    "UnknownNameError",
    "UnreadableImageError",
    "View",
    "VoteStrategy",
    "WeightedStrategy",
    "WeightsError",
    "WeightsUnavailableError",
    "__version__",
    "brier_score",
    "choose_strategy",
    "create_model",
    "expected_calibration_error",
    "export_onnx",
    "finetune",
    "fit_with_feature_cache",
    "list_offline_weights",
    "load_backbone",
    "load_ensemble",
    "load_image",
    "load_model",
    "make_loader",
    "mcnemar_exact",
    "optimize_for_cpu",
    "paired_bootstrap",
    "register_freeze_policy",
    "register_head",
    "register_offline_weights",
    "register_source",
    "register_strategy",
    "save_ensemble",
    "save_model",
    "scan_folder",
    "split_samples",
    "train_ensemble",
]
