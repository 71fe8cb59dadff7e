"""Predictions people can use: names with probabilities; PIL images and DataLoaders in; ONNX files that
carry their classes and input spec, and run on image files directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ensemblenet import ConfigError, Ensemble, InputSpec, Predictions, make_loader, scan_folder
from ensemblenet.cli import main
from ensemblenet.ensemble import OnnxPredictor, onnx_metadata

from .conftest import make_tiny_model, write_class_folder

CPU = {"device": "cpu", "progress": False}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def ensemble() -> Ensemble:
    members = [make_tiny_model(("cats", "dogs"), seed=s) for s in (0, 1)]
    members[1] = make_tiny_model(("cats", "dogs"), InputSpec(size=(24, 24)), seed=1)
    return Ensemble(members)


def test_predict_gives_names_probabilities_and_the_tensors(tmp_path: Path, ensemble: Ensemble) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=3)
    files = sorted(folder.rglob("*.png"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    preds = ensemble.predict([*files, broken], **CPU)
    assert isinstance(preds, Predictions) and len(preds) == 7
    probs = ensemble.predict_proba([*files, broken], **CPU)
    torch.testing.assert_close(preds.probs, probs, equal_nan=True)
    assert preds.indices.tolist()[:6] == probs[:6].argmax(dim=1).tolist() and preds.indices[6] == -1
    assert preds.labels[:6] == [("cats", "dogs")[i] for i in probs[:6].argmax(dim=1).tolist()]
    assert preds.labels[6] is None and preds[6].source == str(broken)
    first = preds[0]
    assert first.source == str(files[0]) and set(first.probabilities) == {"cats", "dogs"}
    assert first.confidence == pytest.approx(max(first.probabilities.values()), abs=1e-6)
    assert "(unreadable)" in str(preds) and "unreadable=1" in repr(preds)
    records = preds.to_records()
    assert records[0]["label"] == first.label and json.dumps(records[:6])


def test_pil_images_give_the_same_probabilities_as_their_files(tmp_path: Path, ensemble: Ensemble) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=3)
    files = sorted(folder.rglob("*.png"))
    pictures = [Image.open(f).convert("RGB") for f in files]
    torch.testing.assert_close(ensemble.predict_proba(pictures, **CPU), ensemble.predict_proba(files, **CPU))
    assert ensemble.predict(pictures[0], **CPU).labels == ensemble.predict(files[:1], **CPU).labels


def test_a_dataloader_is_evaluated_with_its_labels(tmp_path: Path, ensemble: Ensemble) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=4, size=(16, 16))
    samples = scan_folder(folder)
    images = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                          for p in samples.paths])  # fmt: skip
    loader = DataLoader(list(zip(images, torch.tensor(samples.labels), strict=True)), batch_size=3)
    from_loader = ensemble.evaluate(loader, **CPU)
    from_tensor = ensemble.predict_proba(images, **CPU)
    assert from_loader.n == 8
    assert from_loader.accuracy == pytest.approx(
        float((from_tensor.argmax(dim=1) == torch.tensor(samples.labels)).double().mean())
    )
    ens_loader = make_loader(samples, ensemble.members[0].spec, batch_size=4)
    assert ensemble.evaluate(ens_loader, **CPU).n == 8  # ensemblenet's own Batch objects work too
    with pytest.raises(ConfigError, match="DataLoader yielded str"):
        ensemble.predict(DataLoader(["a", "b"], batch_size=2), **CPU)


def test_onnx_file_carries_classes_and_input_spec_and_predicts_files(
    tmp_path: Path, ensemble: Ensemble, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = ensemble.export_onnx(tmp_path / "ens.onnx", input_dtype="uint8")
    meta = onnx_metadata(path)
    assert json.loads(meta["ensemblenet.classes"]) == ["cats", "dogs"]
    spec = json.loads(meta["ensemblenet.input"])
    assert spec["size"] == [16, 16] and spec["dtype"] == "uint8" and spec["normalized_inside"] is True
    assert json.loads(meta["ensemblenet.members"]) == ["test:tiny", "test:tiny"]
    folder = write_class_folder(tmp_path / "images", per_class=3, size=(16, 16))
    files = sorted(folder.rglob("*.png"))
    predictor = OnnxPredictor(path)
    onnx_probs = predictor.predict_proba([*files, tmp_path / "missing.png"])
    assert torch.isnan(onnx_probs[-1]).all()
    # the members' own sizes: 16 (no resize) and 24 (resized inside the graph, without antialiasing)
    torch.testing.assert_close(onnx_probs[:-1], ensemble.predict_proba(files, **CPU), atol=0.02, rtol=0)
    assert main(["predict", "-m", str(path), str(folder), "--format", "jsonl", "-q"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [str(f) for f in files]
    assert [r["prediction"] for r in rows] == [("cats", "dogs")[int(p.argmax())] for p in onnx_probs[:-1]]
    assert main(["predict", "-m", str(path), "-m", str(path), str(folder), "-q"]) == 1
