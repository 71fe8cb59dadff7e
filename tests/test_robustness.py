"""Training survives what goes wrong: non-finite losses, Ctrl-C, files that break mid-epoch.

Each test provokes the failure for real (a poisoned batch, a KeyboardInterrupt raised from inside the
data pipeline, a file truncated after the scan) and checks that nothing already written is lost.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from ensemblenet import TrainConfig, Trainer, TrainingError
from ensemblenet.data import scan_folder
from ensemblenet.models import TransferModel, load_checkpoint, save_model
from ensemblenet.training import Callback, EarlyStopping, EpochRecord, History, ModelCheckpoint

from .conftest import make_tiny_model, write_class_folder

N, SIZE = 32, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {"epochs": 3, "lr": 1e-2, "progress": False, "device": "cpu", "batch_size": 8}
    base.update(kw)
    return TrainConfig(**base)


class Colours(Dataset[tuple[torch.Tensor, int]]):
    """Separable uint8 images; can turn poisonous (non-finite pixels) or raise Ctrl-C on a given fetch."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(N) % 2
        self.images = torch.randint(0, 90, (N, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
        self.images[self.labels == 0, 0] = 200
        self.images[self.labels == 1, 2] = 200
        self.poison: float | None = None
        self.interrupt_at: int | None = None
        self.fetches = 0

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.fetches += 1
        if self.interrupt_at is not None and self.fetches == self.interrupt_at:
            raise KeyboardInterrupt  # what Ctrl-C does to whatever code is running
        if self.poison is not None:
            return torch.full((3, SIZE, SIZE), self.poison), int(self.labels[i])
        return self.images[i].float() / 255.0, int(self.labels[i])


def loader(dataset: Dataset[Any]) -> DataLoader[Any]:
    return DataLoader(dataset, batch_size=8, shuffle=True, generator=torch.Generator())


class Snapshot(Callback):
    """Keeps the bytes of a file after every epoch (runs after the ModelCheckpoint before it)."""

    def __init__(self, path: Path, then: Any = None) -> None:
        self.path, self.then, self.bytes = path, then, b""

    def on_epoch_end(self, trainer: Trainer, model: TransferModel, record: EpochRecord) -> None:
        self.bytes = self.path.read_bytes()
        if self.then is not None:
            self.then(record)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_loss_keeps_the_last_good_checkpoint_and_state(tmp_path: Path, poison: float) -> None:
    data = Colours()
    best, state = tmp_path / "best.pt", tmp_path / "state.pt"
    snap = Snapshot(best, then=lambda record: setattr(data, "poison", poison) if record.epoch == 1 else None)
    trainer = Trainer(
        config(),
        freeze="none",
        callbacks=[ModelCheckpoint(best, monitor="train_loss"), snap],
        state_path=state,
    )
    model = make_tiny_model()
    with pytest.raises(TrainingError, match=r"epoch 2, step 1\b"):
        trainer.fit(model, loader(data))
    assert best.read_bytes() == snap.bytes  # the best model of epoch 1, untouched
    assert load_checkpoint(best)["metrics"]["epoch"] == 1
    assert load_checkpoint(state)["train_state"]["epoch"] == 1  # and a state to resume from


def straight_run() -> dict[str, torch.Tensor]:
    model = make_tiny_model()
    Trainer(config(schedule="cosine"), freeze="none").fit(model, loader(Colours()))
    return model.state_dict()


def test_ctrl_c_mid_epoch_keeps_a_resumable_state(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data, state = Colours(), tmp_path / "state.pt"
    data.interrupt_at = N + 12  # inside the second epoch (batch 2 of 4)
    trainer = Trainer(config(schedule="cosine"), freeze="none", state_path=state)
    with caplog.at_level(logging.WARNING, "ensemblenet"), pytest.raises(KeyboardInterrupt):
        trainer.fit(make_tiny_model(), loader(data))
    assert f"interrupted in epoch 2; {state} holds the state after epoch 1" in caplog.text
    assert load_checkpoint(state)["train_state"]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind

    resumed = make_tiny_model(seed=99)  # everything must come from the state file
    history = Trainer(config(schedule="cosine"), freeze="none", state_path=state).fit(
        resumed, loader(Colours()), resume=state
    )
    assert [r.epoch for r in history] == [1, 2, 3]
    expected = straight_run()
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert load_checkpoint(state)["train_state"]["epoch"] == 3


def test_ctrl_c_in_the_first_epoch_resumes_from_the_initial_state(tmp_path: Path) -> None:
    data, state = Colours(), tmp_path / "state.pt"
    data.interrupt_at = 5
    with pytest.raises(KeyboardInterrupt):
        Trainer(config(), freeze="none", state_path=state).fit(make_tiny_model(), loader(data))
    assert load_checkpoint(state)["train_state"]["epoch"] == 0
    resumed = make_tiny_model(seed=42)
    Trainer(config(), freeze="none").fit(resumed, loader(Colours()), resume=state)
    reference = make_tiny_model()
    Trainer(config(), freeze="none").fit(reference, loader(Colours()))
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key


def test_callbacks_remember_the_history_of_a_resumed_run(tmp_path: Path) -> None:
    trainer = Trainer(config(), freeze="none")
    trainer.history = History()
    for epoch, loss in enumerate([0.5, 0.3, 0.4, 0.45], start=1):
        trainer.history.append(EpochRecord(epoch=epoch, train_loss=loss, val_loss=loss))
    model = make_tiny_model()
    save_model(model, tmp_path / "best.pt", metrics=trainer.history[1].to_dict())  # epoch 2, the best
    saver = ModelCheckpoint(tmp_path / "best.pt")
    stopper = EarlyStopping(patience=5)
    saver.on_fit_start(trainer, model)
    stopper.on_fit_start(trainer, model)
    assert (saver.best, saver.best_epoch) == (0.3, 2)  # a worse epoch after resuming will not overwrite it
    assert (stopper.best, stopper.bad_epochs) == (0.3, 2)


def test_resuming_into_another_output_saves_the_best_epochs_still_to_come(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The best epoch's weights went to another file: this one gets the best of what follows (it
    must not claim a best epoch whose weights it does not hold)."""
    trainer = Trainer(config(), freeze="none")
    trainer.history = History([EpochRecord(epoch=1, train_loss=0.5, val_loss=0.3)])
    saver = ModelCheckpoint(tmp_path / "new-out.pt")
    with caplog.at_level(logging.WARNING, "ensemblenet"):
        saver.on_fit_start(trainer, make_tiny_model())
    assert (saver.best, saver.best_epoch) == (None, None)
    assert "best epoch so far (1) was saved to another file" in caplog.text


def test_file_broken_after_the_scan_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_class_folder(tmp_path / "images", per_class=8, size=(16, 16))
    samples = scan_folder(root)
    victim = samples.paths[3]
    victim.write_bytes(victim.read_bytes()[:40])  # truncated while training runs
    model = make_tiny_model(classes=samples.classes)
    with caplog.at_level(logging.WARNING, "ensemblenet"):
        history = Trainer(config(epochs=2), freeze="none").fit(model, samples, samples)
    assert [r.epoch for r in history] == [1, 2]
    assert all(r.train_images == 15 and r.skipped == 2 for r in history.records)  # train + validation
    assert str(victim) in caplog.text
