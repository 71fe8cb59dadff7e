"""The public surface is deliberate: pinned here so additions and removals are reviewed."""

from __future__ import annotations

import subprocess
import sys

import ensemblenet

EXPECTED = {
    "Backbone", "BatchNormOnly", "Callback", "CheckpointError", "ClassMismatchError", "ConfigError",
    "DEFAULT_SPLIT", "DataError", "DecodedCache", "DuplicateNameError", "EarlyStopping", "Ensemble",
    "EnsembleEvaluation", "EnsembleNetError", "EpochRecord", "Evaluation", "FinetuneResult", "FreezePolicy",
    "FreezeStages", "FreezeUnfreeze", "HeadOnly", "History", "ImageDataset", "InputSpec", "LinearHead",
    "MLPHead", "MeanStrategy", "MemberEvaluation", "MissingDependencyError", "ModelCheckpoint", "NoFreeze",
    "Samples", "Strategy", "TrainConfig", "Trainer", "TrainingError", "TransferModel", "UnknownNameError",
    "UnreadableImageError", "View", "VoteStrategy", "WeightedStrategy", "WeightsError",
    "WeightsUnavailableError", "__version__", "create_model", "finetune", "fit_with_feature_cache",
    "list_offline_weights", "load_backbone", "load_image", "load_model", "make_loader", "optimize_for_cpu",
    "register_freeze_policy", "register_head", "register_offline_weights", "register_source",
    "register_strategy", "save_model", "scan_folder", "split_samples",
    "CalibratedStrategy", "EnsembleReport", "GeometricStrategy", "GreedyStrategy", "StackingStrategy", "TTA",
    "brier_score", "expected_calibration_error", "export_onnx", "load_ensemble", "mcnemar_exact",
    "paired_bootstrap", "save_ensemble",
    "DistContext", "MemberResult", "train_ensemble",
    "StrategyChoice", "choose_strategy",
}  # fmt: skip


def test_all_is_pinned_sorted_and_importable() -> None:
    assert set(ensemblenet.__all__) == EXPECTED
    # ruff's RUF022 order (isort-style): SCREAMING_CASE constants first, then plain ASCII order.
    assert list(ensemblenet.__all__) == sorted(ensemblenet.__all__, key=lambda n: (not n.isupper(), n))
    for name in ensemblenet.__all__:
        assert hasattr(ensemblenet, name), name


def test_the_mission_import_works() -> None:
    from ensemblenet import Ensemble, finetune

    assert callable(finetune) and isinstance(Ensemble, type)


def test_import_has_no_side_effects() -> None:
    """No logging handlers, no timm import, no network at import time."""
    code = (
        "import logging, sys; import ensemblenet; "
        "assert not logging.getLogger('ensemblenet').handlers; "
        "assert not logging.getLogger().handlers; "
        "assert 'timm' not in sys.modules, 'timm must be imported lazily'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_error_tree() -> None:
    for name in ("ConfigError", "DataError", "WeightsError", "CheckpointError", "ClassMismatchError"):
        cls = getattr(ensemblenet, name)
        assert issubclass(cls, ensemblenet.EnsembleNetError) and issubclass(cls, ValueError)
    assert issubclass(ensemblenet.UnknownNameError, KeyError)
    assert issubclass(ensemblenet.WeightsUnavailableError, ensemblenet.WeightsError)
    assert issubclass(ensemblenet.UnreadableImageError, ensemblenet.DataError)
    assert issubclass(ensemblenet.TrainingError, RuntimeError)
