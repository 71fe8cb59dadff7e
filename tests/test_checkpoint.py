"""Model files: self-describing, identical logits after reload for every source, atomic, tamper-evident.

Hostile and malformed files (code, pipes, foreign formats, every invalid setting) are in
``test_security.py``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch

from ensemblenet import CheckpointError, InputSpec, create_model, load_model, save_model
from ensemblenet.models import FORMAT_VERSION, file_sha256, load_checkpoint, tensors_sha256, write_document

from .conftest import REPO, read_raw, write_raw

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


def assert_round_trip(backbone: str, tmp_path: Path, trust_code: bool = False, **kw: object) -> None:
    torch.manual_seed(0)
    model = perturbed(create_model(backbone, ["cat", "dog"], input_spec=SMALL, **kw))  # type: ignore[arg-type]
    images = torch.randint(0, 256, (3, 3, *SMALL.size), dtype=torch.uint8)
    with torch.inference_mode():
        expected = model(images)
    path = save_model(model, tmp_path / "m.pt", metrics={"val_accuracy": 0.5, "val_loss": float("nan")})
    torch.manual_seed(1)  # a different random init: everything must come from the file
    loaded = load_model(path, trust_code=trust_code)
    with torch.inference_mode():
        assert torch.equal(loaded(images), expected)
    assert loaded.config == model.config
    assert loaded.metrics["val_accuracy"] == 0.5 and str(loaded.metrics["val_loss"]) == "nan"
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


def test_round_trip_hub_with_consent(tmp_path: Path, cached_hub_repo: str) -> None:
    assert_round_trip(cached_hub_repo, tmp_path, trust_code=True)
    with pytest.raises(CheckpointError, match=r"trust_code=True.*--trust-code"):
        load_model(tmp_path / "m.pt")  # the same file, without consent


def test_head_is_rebuilt_with_its_own_settings(tmp_path: Path) -> None:
    model = create_model(
        "torchvision:resnet18",
        ["a", "b", "c"],
        head={"name": "mlp", "hidden": 48, "dropout": 0.3},
        input_spec=SMALL,
    )
    loaded = load_model(save_model(model, tmp_path / "m.pt"))
    assert loaded.config.head == {"name": "mlp", "hidden": 48, "activation": None, "dropout": 0.3}
    assert [type(m).__name__ for m in loaded.head] == ["Linear", "Dropout", "Linear"]
    assert loaded.head[0].out_features == 48  # type: ignore[index]
    assert loaded.classes == ("a", "b", "c")
    assert loaded.spec == SMALL


def test_file_is_safetensors_with_json_settings_and_no_pickle(tmp_path: Path) -> None:
    model = create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL)
    path = save_model(model, tmp_path / "m.pt")
    data = path.read_bytes()
    assert not data.startswith((b"PK\x03\x04", b"\x80"))  # neither a torch archive nor a pickle
    tensors = safetensors.torch.load(data)  # any safetensors reader can open it
    assert set(tensors) == {f"state_dict/{k}" for k in model.state_dict()}
    metadata, _ = read_raw(path)
    settings = json.loads(metadata["ensemblenet"])
    assert settings["format"] == "ensemblenet.model" and settings["format_version"] == FORMAT_VERSION == 2
    assert settings["config"]["backbone"] == "torchvision:resnet18"
    assert settings["config"]["spec"]["size"] == [64, 64]
    assert len(metadata["sha256"]) == 64


_FILL_DISK = """
import resource, sys
import torch
from ensemblenet import InputSpec, create_model, save_model
model = create_model("torchvision:resnet18", ["a", "b"], input_spec=InputSpec(size=(64, 64)))
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))  # a 45 MB file cannot be written
try:
    save_model(model, sys.argv[1])
except OSError as exc:
    print(exc)
    sys.exit(3)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_that_fails_half_way_keeps_the_old_file_and_names_the_path(tmp_path: Path) -> None:
    """A real failing write (the file size limit, as a full disk would): the kernel refuses the
    write mid-file, the old file is intact, no temporary file is left, the error names the file."""
    target = tmp_path / "m.pt"
    old = save_model(create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL), target)
    before = old.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-c", _FILL_DISK, str(target)], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 3, done.stderr
    assert f"cannot write {target}" in done.stdout and "File too large" in done.stdout
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temp file left behind


def test_tampered_tensor_is_detected(tmp_path: Path) -> None:
    model = create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL)
    path = save_model(model, tmp_path / "m.pt")
    metadata, tensors = read_raw(path)
    tensors["state_dict/head.1.bias"] += 1.0
    write_raw(path, metadata, tensors)
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        load_model(path)


def test_swapped_class_names_are_detected(tmp_path: Path) -> None:
    """The digest covers the settings: flipping the labels is a modification, not a valid file."""
    path = save_model(
        create_model("torchvision:resnet18", ["cat", "dog"], input_spec=SMALL), tmp_path / "m.pt"
    )
    metadata, tensors = read_raw(path)
    assert '"classes":["cat","dog"]' in metadata["ensemblenet"]
    metadata["ensemblenet"] = metadata["ensemblenet"].replace('["cat","dog"]', '["dog","cat"]')
    write_raw(path, metadata, tensors)
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
        with pytest.raises(CheckpointError, match=r"refused to load .*possibly code"):
            load_model(path)


def test_foreign_truncated_and_future_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not an ensemblenet model file"):
        load_model(plain)
    weights_only = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(2)}, str(weights_only))
    with pytest.raises(
        CheckpointError, match=r"safetensors file without ensemblenet settings.*load_backbone"
    ):
        load_model(weights_only)

    model = create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL)
    good = save_model(model, tmp_path / "m.pt")
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="tensors cannot be read"):
        load_model(truncated)

    document = load_checkpoint(good)
    write_document({**document, "format_version": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="Upgrade ensemblenet"):
        load_checkpoint(tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def write_0_1_file(model: torch.nn.Module, path: Path) -> Path:
    """A model file exactly as ensemblenet 0.1 wrote it (torch.save of plain data, digest of tensors)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": "ensemblenet.model",
        "format_version": 1,
        "ensemblenet_version": "0.1.0",
        "torch_version": str(torch.__version__),
        "created": "2026-11-28T00:00:00+00:00",
        "config": model.config.to_dict(),  # type: ignore[operator]
        "state_dict": state,
        "tensors_sha256": tensors_sha256(state),
        "metrics": {"val_accuracy": 0.75},
    }
    torch.save(payload, path)
    return path


def test_0_1_files_still_load_through_the_same_checks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = perturbed(create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL))
    old = write_0_1_file(model, tmp_path / "old.pt")
    images = torch.randint(0, 256, (2, 3, *SMALL.size), dtype=torch.uint8)
    with caplog.at_level(logging.WARNING, logger="ensemblenet"):
        loaded = load_model(old)
    assert "0.1 file" in caplog.text and "re-save" in caplog.text
    with torch.inference_mode():
        assert torch.equal(loaded(images), model(images))
    assert loaded.metrics == {"val_accuracy": 0.75}

    payload = torch.load(old, weights_only=True)
    payload["state_dict"]["head.1.bias"] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="corrupted or was modified"):
        load_model(tmp_path / "tampered.pt")
    payload = torch.load(old, weights_only=True)
    payload["config"]["spec"]["size"] = [
        60000,
        60000,
    ]  # 0.1 digests covered tensors only: the schema catches it
    torch.save(payload, tmp_path / "huge.pt")
    with pytest.raises(CheckpointError, match=r"config\.spec\.size .* 1 to 4096, got \[60000, 60000\]"):
        load_model(tmp_path / "huge.pt")


def test_expected_sha256_is_checked_before_the_file_is_read(tmp_path: Path) -> None:
    path = save_model(create_model("torchvision:resnet18", ["a", "b"], input_spec=SMALL), tmp_path / "m.pt")
    published = file_sha256(path)
    assert published == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert load_model(path, expected_sha256=published.upper()).classes == ("a", "b")
    with pytest.raises(CheckpointError, match=r"not the published file"):
        load_model(path, expected_sha256="0" * 64)
