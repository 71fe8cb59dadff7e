"""Ensemble members trained in parallel processes give the checkpoints sequential training gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from ensemblenet.api import train_ensemble
from ensemblenet.errors import ConfigError, TrainingError
from ensemblenet.models import load_checkpoint, tensors_sha256
from ensemblenet.spec import InputSpec

from .conftest import write_class_folder

# Two small random-init members (no downloads); different seeds, so they differ from each other.
MEMBERS = [
    {"backbone": "torchvision:mobilenet_v3_small", "seed": 1},
    {"backbone": "torchvision:mobilenet_v3_small", "seed": 2, "freeze": "head_only"},
]
COMMON = {
    "weights": None,
    "epochs": 1,
    "batch_size": 8,
    "input_spec": InputSpec(size=(32, 32)),
    "head": "linear",
}


def test_parallel_members_match_sequential_training(tmp_path: Path) -> None:
    data = write_class_folder(tmp_path / "data", per_class=10, size=(36, 36))
    kwargs = {**COMMON, "progress": False}
    sequential = train_ensemble(MEMBERS, data, parallel=1, threads=1, out_dir=tmp_path / "seq", **kwargs)
    parallel = train_ensemble(MEMBERS, data, parallel=2, threads=1, out_dir=tmp_path / "par", **kwargs)

    assert [r.name for r in parallel] == [
        "torchvision_mobilenet_v3_small",
        "torchvision_mobilenet_v3_small-2",
    ]
    assert [r.path.parent.name for r in parallel] == ["par", "par"]
    digests = []
    for seq, par in zip(sequential, parallel, strict=True):
        a, b = load_checkpoint(seq.path), load_checkpoint(par.path)
        assert tensors_sha256(a["state_dict"]) == tensors_sha256(b["state_dict"])  # bit-identical weights
        digests.append(tensors_sha256(a["state_dict"]))
        for got, want in zip(par.history.records, seq.history.records, strict=True):
            assert (got.train_loss, got.val_loss, got.val_accuracy) == (
                want.train_loss,
                want.val_loss,
                want.val_accuracy,
            )
        assert par.test is not None and seq.test is not None and par.test.loss == seq.test.loss
    assert digests[0] != digests[1]  # the members really are different models


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parallel"):
        train_ensemble(["torchvision:resnet18"], tmp_path, parallel=0)
    with pytest.raises(ConfigError, match="backbone"):
        train_ensemble([{"seed": 1}], tmp_path)
    with pytest.raises(ConfigError, match="at least one"):
        train_ensemble([], tmp_path)


def test_a_failing_member_is_named(tmp_path: Path) -> None:
    data = write_class_folder(tmp_path / "data", per_class=4, size=(36, 36))
    common = {**COMMON, "out_dir": tmp_path / "out"}
    bad_lr = {"backbone": "torchvision:mobilenet_v3_small", "lr": -1.0}
    bad_head = {"backbone": "torchvision:mobilenet_v3_small", "head": {1}}
    with pytest.raises(ConfigError, match=r"member 0 .*lr=-1\.0"):  # the library's class is kept
        train_ensemble([bad_lr], data, **common)
    with pytest.raises(ConfigError, match="member 0"):  # raised in a worker process
        train_ensemble([bad_lr, bad_head], data, parallel=2, **common)
    with pytest.raises(TrainingError, match=r"member 0 .*failed"):  # any other error becomes TrainingError
        train_ensemble(
            [{"backbone": "torchvision:mobilenet_v3_small", "callbacks": [object()]}], data, **common
        )


def test_cli_train_ensemble_writes_one_checkpoint_per_member(tmp_path: Path) -> None:
    import io
    import json

    from ensemblenet.cli import main

    data = write_class_folder(tmp_path / "data", per_class=6, size=(36, 36))
    out, err = io.StringIO(), io.StringIO()
    argv = ["train-ensemble", str(data), "--backbone", "torchvision:mobilenet_v3_small"]
    argv += ["--backbone", "torchvision:mobilenet_v3_small", "--weights", "none", "--head", "linear"]
    argv += ["--epochs", "1", "--batch-size", "6", "--threads", "1", "--out-dir", str(tmp_path / "runs")]
    assert main([*argv, "--json", "-q"], stdout=out, stderr=err) == 0, err.getvalue()
    document = json.loads(out.getvalue())
    assert document["command"] == "train-ensemble"
    paths = [Path(m["model"]) for m in document["members"]]
    assert [p.parent for p in paths] == [tmp_path / "runs"] * 2 and all(p.is_file() for p in paths)
    digests = [tensors_sha256(load_checkpoint(p)["state_dict"]) for p in paths]
    assert digests[0] != digests[1]  # member i used seed 0 + i
