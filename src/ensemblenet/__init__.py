"""ensemblenet: ensemble transfer learning on images.

>>> from ensemblenet import Ensemble, finetune

Every public name is importable from here. The subpackages follow the data flow, from the bottom
up (each imports only from those below it; see the architecture page of the docs):

* :mod:`ensemblenet.data` -- image folders to batches of tensors;
* :mod:`ensemblenet.scoring` -- metrics, significance, the report and its figures;
* :mod:`ensemblenet.models` -- backbones, weights, heads, freeze policies, model files;
* :mod:`ensemblenet.engine` -- what runs the frozen parts: PyTorch or ONNX Runtime (float32, int8);
* :mod:`ensemblenet.training` -- the Trainer, callbacks, the frozen-feature cache, torchrun;
* :mod:`ensemblenet.strategies` -- how member probabilities become one prediction;
* :mod:`ensemblenet.ensemble` -- ``Ensemble``, test-time augmentation, ensemble files, ONNX;
* :mod:`ensemblenet.api` -- ``finetune``, ``train_ensemble`` and their recipes, ``distill``;
  :mod:`ensemblenet.cli` on top. Beside :mod:`ensemblenet.data`, :mod:`ensemblenet.datasets`
  fetches public image sets (with consent).
"""

from ._version import __version__
from .api import (
    DistillResult,
    FinetuneResult,
    FreezeChoice,
    MemberResult,
    Recipe,
    Splits,
    choose_freeze,
    distill,
    finetune,
    get_recipe,
    list_recipes,
    register_recipe,
    train_ensemble,
)
from .data import (
    DEFAULT_SPLIT,
    DecodedCache,
    ImageDataset,
    Samples,
    UnreadableImageError,
    View,
    load_image,
    make_loader,
    scan_folder,
    split_samples,
)
from .engine import OnnxRuntimeEngine, TorchEngine
from .ensemble import (
    TTA,
    Ensemble,
    Prediction,
    Predictions,
    export_onnx,
    load_ensemble,
    optimize_for_cpu,
    save_ensemble,
)
from .errors import (
    CheckpointError,
    ClassMismatchError,
    ConfigError,
    DataError,
    DuplicateNameError,
    EnsembleNetError,
    MissingDependencyError,
    QuantizationError,
    TrainingError,
    UnknownNameError,
    WeightsError,
    WeightsUnavailableError,
)
from .models import (
    Backbone,
    BatchNormOnly,
    FreezePolicy,
    FreezeStages,
    FreezeUnfreeze,
    HeadOnly,
    LinearHead,
    MLPHead,
    NoFreeze,
    TransferModel,
    create_model,
    list_offline_weights,
    load_backbone,
    load_model,
    register_freeze_policy,
    register_head,
    register_offline_weights,
    register_source,
    save_model,
)
from .scoring import (
    EnsembleEvaluation,
    EnsembleReport,
    Evaluation,
    MemberEvaluation,
    brier_score,
    expected_calibration_error,
    mcnemar_exact,
    paired_bootstrap,
)
from .spec import InputSpec
from .strategies import (
    CalibratedStrategy,
    GeometricStrategy,
    GreedyStrategy,
    MeanStrategy,
    StackingStrategy,
    Strategy,
    StrategyChoice,
    VoteStrategy,
    WeightedStrategy,
    choose_strategy,
    register_strategy,
)
from .training import (
    Callback,
    CSVLogger,
    DistContext,
    EarlyStopping,
    EpochRecord,
    History,
    ModelCheckpoint,
    ProgressPrinter,
    TensorBoardLogger,
    TrainConfig,
    Trainer,
    fit_with_feature_cache,
)

# Grouped by layer, bottom up, as docs/api.rst documents them (so not globally sorted, on purpose);
# sorted within each group. tests/test_public_api.py pins the names and the grouping.
__all__ = [  # noqa: RUF022
    # shared by every layer
    "CheckpointError",
    "ClassMismatchError",
    "ConfigError",
    "DataError",
    "DuplicateNameError",
    "EnsembleNetError",
    "InputSpec",
    "MissingDependencyError",
    "QuantizationError",
    "TrainingError",
    "UnknownNameError",
    "WeightsError",
    "WeightsUnavailableError",
    "__version__",
    # data
    "DEFAULT_SPLIT",
    "DecodedCache",
    "ImageDataset",
    "Samples",
    "UnreadableImageError",
    "View",
    "load_image",
    "make_loader",
    "scan_folder",
    "split_samples",
    # scoring
    "EnsembleEvaluation",
    "EnsembleReport",
    "Evaluation",
    "MemberEvaluation",
    "brier_score",
    "expected_calibration_error",
    "mcnemar_exact",
    "paired_bootstrap",
    # models
    "Backbone",
    "BatchNormOnly",
    "FreezePolicy",
    "FreezeStages",
    "FreezeUnfreeze",
    "HeadOnly",
    "LinearHead",
    "MLPHead",
    "NoFreeze",
    "TransferModel",
    "create_model",
    "list_offline_weights",
    "load_backbone",
    "load_model",
    "register_freeze_policy",
    "register_head",
    "register_offline_weights",
    "register_source",
    "save_model",
    # engine
    "OnnxRuntimeEngine",
    "TorchEngine",
    # training
    "CSVLogger",
    "Callback",
    "DistContext",
    "EarlyStopping",
    "EpochRecord",
    "History",
    "ModelCheckpoint",
    "ProgressPrinter",
    "TensorBoardLogger",
    "TrainConfig",
    "Trainer",
    "fit_with_feature_cache",
    # strategies
    "CalibratedStrategy",
    "GeometricStrategy",
    "GreedyStrategy",
    "MeanStrategy",
    "StackingStrategy",
    "Strategy",
    "StrategyChoice",
    "VoteStrategy",
    "WeightedStrategy",
    "choose_strategy",
    "register_strategy",
    # ensemble
    "TTA",
    "Ensemble",
    "Prediction",
    "Predictions",
    "export_onnx",
    "load_ensemble",
    "optimize_for_cpu",
    "save_ensemble",
    # api
    "DistillResult",
    "FinetuneResult",
    "FreezeChoice",
    "MemberResult",
    "Recipe",
    "Splits",
    "choose_freeze",
    "distill",
    "finetune",
    "get_recipe",
    "list_recipes",
    "register_recipe",
    "train_ensemble",
]
