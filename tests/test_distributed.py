"""Distributed training: a real 2-process ``torchrun`` on CPU (Gloo) against a single-process reference.

The comparison: with DDP, each of the 2 ranks takes a batch of ``b`` images per step and the gradients are
averaged, which is the gradient of the mean loss over the ``2b`` images. The reference trains in one
process with batches of ``2b`` built from exactly those images: :class:`GlobalBatches` asks
``DistributedSampler`` for both ranks' orders (seeded as the trainer seeds them, told the epoch through
``set_epoch``) and concatenates step ``k`` of rank 0 and of rank 1. The data sizes divide evenly, so
there is no padding. The remaining differences are float summation order (all-reduce vs one batch):
the tolerances below are ~1000x the differences seen (~1e-8), far below the effect of one wrong step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ensemblenet.errors import ConfigError
from ensemblenet.training import (
    DistContext,
    ShardSampler,
    Trainer,
    convert_sync_batchnorm,
    revert_sync_batchnorm,
)

from . import _dist_worker as worker

REPO = Path(__file__).resolve().parents[1]


class GlobalBatches:
    """The global batches of a ``world``-rank DDP run, as one process's batch sampler."""

    def __init__(self, dataset: Dataset[Any], world: int, per_rank: int, seed: int) -> None:
        self.samplers = [
            DistributedSampler(dataset, num_replicas=world, rank=r, shuffle=True, seed=seed)  # type: ignore[var-annotated]
            for r in range(world)
        ]
        self.per_rank = per_rank

    def set_epoch(self, epoch: int) -> None:
        for s in self.samplers:
            s.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        orders = [list(s) for s in self.samplers]
        for k in range(0, len(orders[0]), self.per_rank):
            yield [i for order in orders for i in order[k : k + self.per_rank]]

    def __len__(self) -> int:
        return -(-len(self.samplers[0]) // self.per_rank)


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("torchrun")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*command, str(REPO / "tests" / "_dist_worker.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _result(out: Path, rank: int) -> dict[str, Any]:
    return torch.load(out / f"result{rank}.pt", weights_only=True)  # type: ignore[no-any-return]


def _reference() -> tuple[torch.nn.Module, Any, Trainer]:
    train, val = worker.loaders()
    batches = GlobalBatches(train.dataset, worker.WORLD, worker.PER_RANK_BATCH, worker.CONFIG.seed)
    model = worker.build_model()
    trainer = Trainer(worker.CONFIG, freeze=worker.POLICY)
    history = trainer.fit(model, DataLoader(train.dataset, batch_sampler=batches), val)
    return model, history, trainer


def _assert_state_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-5, msg=key)


def test_two_ranks_match_one_process_on_the_same_global_batches(torchrun: Path) -> None:
    rank0, rank1 = _result(torchrun, 0), _result(torchrun, 1)
    assert rank0["world"] == [0, 2] and rank1["world"] == [1, 2]
    reference, history, _ = _reference()
    _assert_state_close(rank0["state_dict"], reference.state_dict())
    _assert_state_close(rank1["state_dict"], reference.state_dict())
    # the weights moved: a run that skipped its steps would not match the reference by accident
    assert not torch.equal(
        rank0["state_dict"]["head.weight"], worker.build_model().state_dict()["head.weight"]
    )
    for got, want in zip(rank0["history"]["records"], history.to_dict()["records"], strict=True):
        assert got["train_images"] == want["train_images"] == worker.TRAIN_N
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
        assert got["val_accuracy"] == want["val_accuracy"]


def test_metrics_reduce_to_a_single_process_evaluation(torchrun: Path) -> None:
    model = worker.build_model()
    model.load_state_dict(_result(torchrun, 0)["state_dict"])
    _, val = worker.loaders()
    single = Trainer(worker.CONFIG).evaluate(model, val)
    for rank in (0, 1):
        final = _result(torchrun, rank)["final"]
        assert final["n"] == single.n == worker.VAL_N  # 7 + 6 images: no padding duplicates
        assert final["accuracy"] == single.accuracy
        assert final["loss"] == pytest.approx(single.loss, rel=1e-6)


def test_only_rank_zero_writes(torchrun: Path) -> None:
    assert sorted(p.name for p in (torchrun / "rank0").iterdir()) == ["best.pt", "last.pt", "state.pt"]
    assert list((torchrun / "rank1").iterdir()) == []


def test_resume_under_torchrun_matches_an_uninterrupted_run(torchrun: Path) -> None:
    result = _result(torchrun, 0)
    for key, value in result["state_dict"].items():
        assert torch.equal(result["resumed"][key], value), key


def test_freeze_unfreeze_leaves_ranks_identical(torchrun: Path) -> None:
    rank0, rank1 = _result(torchrun, 0)["unfrozen"], _result(torchrun, 1)["unfrozen"]
    start = worker.build_model().state_dict()
    for key, value in rank0.items():
        assert torch.equal(rank1[key], value), key
    # both phases trained: the head in epoch 1, the convolutions only in epoch 2 (after re-wrapping)
    assert not torch.equal(rank0["head.weight"], start["head.weight"])
    assert not torch.equal(rank0["backbone.0.weight"], start["backbone.0.weight"])


def test_shard_sampler_covers_every_index_once() -> None:
    indices = list(range(100, 113))
    shards = [list(ShardSampler(indices, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == indices
    assert sorted(len(s) for s in shards) == [4, 4, 5]


def test_one_process_context_is_a_no_op() -> None:
    ctx = DistContext.from_env()
    model = worker.build_model()
    train, _ = worker.loaders()
    assert not ctx.enabled and ctx.is_main
    assert ctx.wrap(model) is model
    assert ctx.train_loader(train, seed=0) is train and ctx.eval_loader(train) is train
    assert ctx.sum(1.5, 2) == (1.5, 2.0)


def test_world_size_without_launcher_variables_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        DistContext.from_env()


def test_sync_batchnorm_conversion_shares_tensors_and_reverts() -> None:
    model = worker.build_model()
    originals = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    expected = model.train()(images)
    replaced = convert_sync_batchnorm(model)
    synced = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(replaced) == len(synced) == len(originals) == 2
    assert all(
        s.weight is o.weight and s.running_mean is o.running_mean
        for s, o in zip(synced, originals, strict=True)
    )
    # without a process group SyncBatchNorm computes plain BatchNorm: same output, same buffer updates
    torch.testing.assert_close(model(images), expected)
    revert_sync_batchnorm(replaced)
    assert [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)] == originals
    assert int(originals[0].num_batches_tracked) == 2  # both forwards updated the shared buffers
