"""Shared fixtures: tiny models and generated image folders (no network, no real data needed)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from torch import nn

from ensemblenet.models import SOURCES, Backbone, ModelConfig, TransferModel, register_source
from ensemblenet.spec import InputSpec

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED_DATA = REPO.parent / "shared" / "data"


def tiny_backbone(width: int = 8) -> nn.Module:
    """conv -> BatchNorm -> ReLU -> conv(stride 2) -> BatchNorm -> pool: small but has BN to freeze."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


@contextlib.contextmanager
def registered_tiny_source(name: str) -> Iterator[str]:
    """Backbone source ``name`` whose ``"name:W"`` is :func:`tiny_backbone` of width W at 16 x 16
    (weights ignored), so ``create_model`` and checkpoints rebuild in milliseconds, offline.
    Unregistered on exit."""

    def load(model: str, weights: object) -> Backbone:
        return Backbone(tiny_backbone(int(model)), int(model), InputSpec(size=(16, 16)))

    register_source(name, load)
    try:
        yield name
    finally:
        SOURCES.unregister(name)


def load_script(path: Path) -> ModuleType:
    """The script at ``path`` as a fresh module; its folder is importable while it loads, as when
    the script runs (an example may import a helper module from beside it)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


def load_example(name: str) -> ModuleType:
    """``examples/NAME.py`` as a fresh module."""
    return load_script(EXAMPLES / f"{name}.py")


def make_tiny_model(
    classes: tuple[str, ...] = ("a", "b"), spec: InputSpec | None = None, width: int = 8, seed: int = 0
) -> TransferModel:
    torch.manual_seed(seed)
    spec = spec or InputSpec(size=(16, 16))
    config = ModelConfig(
        backbone="test:tiny",
        head={"name": "linear", "dropout": 0.0},
        classes=classes,
        spec=spec,
        num_features=width,
    )
    return TransferModel(tiny_backbone(width), nn.Linear(width, len(classes)), config)


@pytest.fixture(autouse=True, scope="session")
def engine_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Exported ONNX engines go to a temporary folder, never the user's ~/.cache."""
    before = os.environ.get("ENSEMBLENET_CACHE")
    os.environ["ENSEMBLENET_CACHE"] = str(tmp_path_factory.mktemp("ensemblenet-cache"))
    yield
    if before is None:
        del os.environ["ENSEMBLENET_CACHE"]
    else:
        os.environ["ENSEMBLENET_CACHE"] = before


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models: torch's thread pool only adds contention on a busy 2-core machine (10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_model() -> Callable[..., TransferModel]:
    return make_tiny_model


def write_class_folder(
    root: Path, per_class: int = 12, size: tuple[int, int] = (24, 24), seed: int = 0
) -> Path:
    """Two visually separable classes: 'cats' mostly red, 'dogs' mostly blue, with noise."""
    rng = np.random.default_rng(seed)
    for cls, channel in (("cats", 0), ("dogs", 2)):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(size[0], size[1], 3), dtype=np.uint8)
            pixels[..., channel] = rng.integers(160, 256, size=size, dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{cls[:-1]}.{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_class_folder(tmp_path / "images")


def separable_loader(
    n: int = 64, size: int = 16, batch_size: int = 16, seed: int = 0
) -> torch.utils.data.DataLoader:
    """A DataLoader of (uint8 images, labels) whose class is the dominant colour channel."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 90, (n, 3, size, size), generator=g, dtype=torch.uint8)
    images[labels == 0, 0] = 200
    images[labels == 1, 2] = 200
    dataset = torch.utils.data.TensorDataset(images, labels)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator()
    )


def require_shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"real data not available at {path}")
    return path


def read_raw(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """An ensemblenet file's safetensors metadata (settings JSON and digest) and tensors, as stored:
    for tests that edit a file the way an attacker or a bad disk would, without re-signing it."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + size])["__metadata__"]
    return metadata, safetensors.torch.load(data)


def write_raw(path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` with ``metadata`` as given (the recorded digest is not recomputed)."""
    path.write_bytes(safetensors.torch.save(tensors, metadata=metadata))
    return path
