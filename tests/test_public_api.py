"""The public surface is deliberate: pinned here so additions and removals are reviewed."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import ensemblenet

REPO = Path(__file__).resolve().parents[1]

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
    "Recipe", "Splits", "get_recipe", "list_recipes", "register_recipe", "Prediction", "Predictions",
    "CSVLogger", "ProgressPrinter", "TensorBoardLogger",
    "DistillResult", "distill", "FreezeChoice", "choose_freeze",
    "OnnxRuntimeEngine", "QuantizationError", "TorchEngine",
}  # fmt: skip


def _api_page_groups() -> list[tuple[str, list[str]]]:
    """The (layer, names) rows of the table at the top of docs/api.rst."""
    text = (REPO / "docs" / "api.rst").read_text(encoding="utf-8")
    table = text.split(".. list-table::", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"   \* - (.+?)\n     - (.+?)(?=\n   \* - |\Z)", table, re.S)[1:]  # header off
    return [(layer.strip(), re.findall(r"``([A-Za-z_]+)``", names)) for layer, names in rows]


def _ruff_order(names: list[str]) -> list[str]:
    # ruff's RUF022 order (isort-style): SCREAMING_CASE constants first, then plain ASCII order.
    return sorted(names, key=lambda n: (not n.isupper(), n))


def test_all_is_pinned_and_importable() -> None:
    assert set(ensemblenet.__all__) == EXPECTED
    assert len(ensemblenet.__all__) == len(EXPECTED)
    for name in ensemblenet.__all__:
        assert hasattr(ensemblenet, name), name


def test_all_is_grouped_by_layer_as_the_api_page_says() -> None:
    """``__all__`` lists the layers bottom up, sorted within each, exactly as the table of
    docs/api.rst; every name comes from the subpackage its row names."""
    groups = _api_page_groups()
    assert [layer for layer, _ in groups][:2] == ["shared", ":mod:`ensemblenet.data`"]
    flattened = [name for _, names in groups for name in names]
    assert flattened == list(ensemblenet.__all__)
    for layer, names in groups:
        assert names == _ruff_order(names), layer
        match = re.fullmatch(r":mod:`(ensemblenet\.[a-z]+)`", layer)
        if match is None:
            continue
        package = importlib.import_module(match.group(1))
        for name in names:
            assert name in package.__all__, (name, layer)
            assert getattr(package, name) is getattr(ensemblenet, name), (name, layer)


def test_every_subpackage_exports_what_it_imports_for_others() -> None:
    """A subpackage's ``__all__`` names exist, and its private modules stay private: no public
    submodule besides the layers themselves."""
    for package_name in (
        "data",
        "datasets",
        "scoring",
        "models",
        "engine",
        "training",
        "strategies",
        "ensemble",
        "api",
        "cli",
    ):
        package = importlib.import_module(f"ensemblenet.{package_name}")
        for name in package.__all__:
            assert hasattr(package, name), (package_name, name)
        modules = [p.stem for p in Path(package.__file__).parent.glob("*.py") if p.stem != "__init__"]
        assert all(m.startswith("_") for m in modules), (package_name, modules)


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
