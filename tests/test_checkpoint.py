"""Checkpoints: self-describing, identical logits after reload for every source, atomic, tamper-evident."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ensemblenet import CheckpointError, InputSpec, create_model, load_model, save_model
from ensemblenet.models import FORMAT_VERSION, atomic_save, load_checkpoint

HUBCONF = """
dependencies = ["torch", "torchvision"]

def tiny_resnet(weights=None, **kwargs):
    from torchvision.models.resnet import BasicBlock, ResNet
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)
"""


@pytest.fixture
def cached_hub_repo(tmp_path: Path) -> Iterator[str]:
    """A torch.hub cache holding 'ensemblenet-tests/tiny' as if downloaded earlier (works offline)."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "ensemblenet-tests_tiny_main"
    repo.mkdir(parents=True)
    (repo / "hubconf.py").write_text(HUBCONF)
    try:
        yield "hub:ensemblenet-tests/tiny:tiny_resnet"
    finally:
        torch.hub.set_dir(old)


SMALL = InputSpec(size=(64, 64))


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Make BatchNorm statistics non-trivial so a reload that drops buffers would be caught."""
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, *SMALL.size))
    return model.eval()


def assert_round_trip(backbone: str, tmp_path: Path, **kw: object) -> None:
    torch.manual_seed(0)
    model = perturbed(create_model(backbone, ["cat", "dog"], input_spec=SMALL, **{"weights": None, **kw}))  # type: ignore[arg-type]
    images = torch.randint(0, 256, (3, 3, *SMALL.size), dtype=torch.uint8)
    with torch.inference_mode():
        expected = model(images)
    path = save_model(model, tmp_path / "m.pt", metrics={"val_accuracy": 0.5})
    torch.manual_seed(1)  # a different random init: everything must come from the file
    loaded = load_model(path)
    with torch.inference_mode():
        assert torch.equal(loaded(images), expected)
    assert loaded.config == model.config
    assert loaded.metrics == {"val_accuracy": 0.5}
    assert not loaded.training


def test_round_trip_torchvision_resnet18(tmp_path: Path) -> None:
    assert_round_trip(
        "torchvision:resnet18", tmp_path, head={"name": "mlp", "hidden": 32, "activation": "relu"}
    )


def test_round_trip_torchvision_mobilenet_v2(tmp_path: Path) -> None:
    assert_round_trip("torchvision:mobilenet_v2", tmp_path, head="linear")


def test_round_trip_timm(tmp_path: Path) -> None:
    pytest.importorskip("timm")
    assert_round_trip("timm:tf_efficientnet_lite0", tmp_path)


def test_round_trip_hub(tmp_path: Path, cached_hub_repo: str) -> None:
    assert_round_trip(cached_hub_repo, tmp_path)


def test_head_is_rebuilt_with_its_own_settings(tmp_path: Path) -> None:
    model = create_model(
        "torchvision:resnet18",
        ["a", "b", "c"],
        head={"name": "mlp", "hidden": 48, "dropout": 0.3},
        input_spec=SMALL,
        weights=None,
    )
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert loaded.config.head == {"name": "mlp", "hidden": 48, "activation": None, "dropout": 0.3}
    assert [type(m).__name__ for m in loaded.head] == ["Linear", "Dropout", "Linear"]
    assert loaded.head[0].out_features == 48  # type: ignore[index]
    assert loaded.classes == ("a", "b", "c")
    assert loaded.spec == SMALL


def test_file_is_plain_data(tmp_path: Path) -> None:
    model = create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL, weights=None)
    path = save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)  # would raise on any pickled code
    assert payload["format"] == "ensemblenet.model"
    assert payload["format_version"] == FORMAT_VERSION
    assert payload["config"]["backbone"] == "torchvision:resnet18"
    assert payload["config"]["spec"]["size"] == [64, 64]


def test_atomic_save_keeps_old_file_when_writing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.pt"
    atomic_save({"version": "old"}, target)

    def exploding_save(obj: object, f: object, *a: object, **k: object) -> None:
        f.write(b"partial bytes")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"version": "new"}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"version": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temp file left behind


def test_tampered_tensor_is_detected(tmp_path: Path) -> None:
    model = create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL, weights=None)
    path = save_model(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.1.bias"] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        load_model(path)


class Exploit:
    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    crafted = tmp_path / "evil.pt"  # what an attacker would publish: a torch file with code in it
    torch.save({"format": "ensemblenet.model", "x": Exploit()}, crafted)
    plain_pickle = tmp_path / "evil.pkl"
    with plain_pickle.open("wb") as f:
        pickle.dump({"format": "ensemblenet.model", "x": Exploit()}, f)
    for path in (crafted, plain_pickle):
        with pytest.raises(CheckpointError, match=r"refused|cannot read"):
            load_model(path)


def test_foreign_truncated_and_future_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an ensemblenet model"):
        load_model(plain)

    model = create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL, weights=None)
    good = save_model(model, tmp_path / "m.pt")
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(truncated)

    payload = torch.load(good, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="Upgrade ensemblenet"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
