"""ONNX export of a whole ensemble: the onnxruntime outputs match PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ensemblenet.ensemble import Ensemble
from ensemblenet.errors import ConfigError
from ensemblenet.spec import InputSpec

from .conftest import make_tiny_model

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from ensemblenet.ensemble import EnsembleGraph, run_onnx

#: Stated tolerance: onnxruntime and PyTorch differ by float32 rounding in the convolutions.
ATOL = 1e-4
CPU = {"progress": False, "device": "cpu"}


def members() -> list:  # type: ignore[type-arg]
    out = [
        make_tiny_model(("cats", "dogs"), InputSpec(size=(16, 16)), seed=1),
        make_tiny_model(
            ("cats", "dogs"),
            InputSpec(size=(20, 20), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic"),
            width=6,
            seed=2,
        ),
    ]
    with torch.no_grad():
        for m in out:
            for p in m.head.parameters():
                p.mul_(10.0)
    return [m.eval() for m in out]


@pytest.mark.parametrize(
    ("strategy", "tta", "dtype"),
    [("mean", None, "float32"), ("geometric", "flip", "uint8"), ("stacking", None, "float32")],
)
def test_onnx_matches_pytorch(tmp_path: Path, strategy: str, tta: str | None, dtype: str) -> None:
    ensemble = Ensemble(members(), strategy=strategy, tta=tta)
    g = torch.Generator().manual_seed(0)
    if strategy == "stacking":
        val = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8, generator=g)
        from ensemblenet.strategies import StackingStrategy

        ensemble.strategy = StackingStrategy(folds=2, l2=0.1)
        ensemble.strategy.fit(ensemble.member_probas(val, **CPU).double(), torch.arange(24) % 2)
    path = ensemble.export_onnx(tmp_path / "ens.onnx", input_dtype=dtype)
    images = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8, generator=g)  # batch != export's 2
    x = images if dtype == "uint8" else images.float() / 255
    out = run_onnx(path, x)
    assert out.shape == (7, 2) and out.dtype == np.float32
    with torch.no_grad():
        graph = EnsembleGraph(ensemble, dtype).eval()(x)
    np.testing.assert_allclose(out, graph.numpy(), atol=ATOL, rtol=0)


def test_onnx_matches_predict_proba_when_no_resize_is_needed(tmp_path: Path) -> None:
    # In-graph resizing has no antialiasing (ONNX export cannot express PyTorch's), so the exact
    # comparison with Ensemble.predict_proba feeds every member its own size.
    a, b = members()
    b = make_tiny_model(
        ("cats", "dogs"), InputSpec(size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3), width=6, seed=3
    )
    ensemble = Ensemble([a, b.eval()], weights=[0.3, 0.7], tta="flip+crops")
    path = ensemble.export_onnx(tmp_path / "ens.onnx", input_dtype="uint8")
    images = torch.randint(
        0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    expected = ensemble.predict_proba(images, **CPU).numpy()
    np.testing.assert_allclose(run_onnx(path, images), expected, atol=ATOL, rtol=0)


def test_export_refuses_an_unfitted_strategy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fit"):
        Ensemble(members(), strategy="weighted").export_onnx(tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="input_dtype"):
        Ensemble(members()).export_onnx(tmp_path / "x.onnx", input_dtype="int16")
