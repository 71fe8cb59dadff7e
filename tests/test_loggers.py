"""Visible training: the epoch table as epochs end, metrics.csv (also across a resume), TensorBoard."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from ensemblenet import (
    Callback,
    CSVLogger,
    EpochRecord,
    ProgressPrinter,
    TensorBoardLogger,
    TrainConfig,
    Trainer,
    finetune,
)
from ensemblenet.training import read_metrics_csv

from .conftest import make_tiny_model, registered_tiny_source, write_class_folder

pytestmark = pytest.mark.usefixtures("one_thread")


class Snapshot(Callback):
    """What the stream held when each epoch ended (the printer runs before user callbacks)."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream, self.seen = stream, []  # type: ignore[var-annotated]

    def on_epoch_end(self, trainer: object, model: object, record: EpochRecord) -> None:
        self.seen.append(self.stream.getvalue())


def test_finetune_prints_each_epoch_as_it_ends_and_writes_metrics_csv(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=12)
    stream = io.StringIO()
    snapshot = Snapshot(stream)
    with registered_tiny_source("log-tiny"):
        result = finetune(
            "log-tiny:4",
            folder,
            epochs=3,
            out=tmp_path / "m.pt",
            stream=stream,
            callbacks=[snapshot],
            name="m1",
        )
    rows = [s.count("\n[m1]     ") for s in snapshot.seen]  # data rows visible at each epoch's end
    assert [s.count("[m1]     1  ") for s in snapshot.seen] == [1, 1, 1]
    assert rows == sorted(rows) and len(snapshot.seen) == 3
    text = stream.getvalue()
    assert "[m1] epoch  train_loss  val_loss  val_acc        lr   time" in text
    for record in result.history.records:
        assert f"{record.val_loss:.4f}" in text and f"{record.val_accuracy:.4f}" in text
    assert result.test is not None and f"[m1] test: loss {result.test.loss:.4f}" in text
    assert "recipe 'fast'" in text  # what ran is said before it runs
    csv_history = read_metrics_csv(result.files["metrics"])
    assert csv_history.to_dict() == result.history.to_dict()


def test_progress_false_is_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_class_folder(tmp_path / "images", per_class=8)
    with registered_tiny_source("log-tiny"):
        finetune("log-tiny:4", folder, epochs=1, out=tmp_path / "m.pt", progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def samples_loader() -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(16) % 2
    images = torch.randint(0, 90, (16, 3, 16, 16), dtype=torch.uint8, generator=g)
    images[labels == 1, 2] += 150
    return torch.utils.data.DataLoader(list(zip(images, labels, strict=True)), batch_size=8)


def test_csv_is_rewritten_from_the_history_on_resume(tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, progress=False, lr=1e-2)
    state, csv_path = tmp_path / "state.pt", tmp_path / "metrics.csv"
    first = Trainer(TrainConfig(epochs=2, progress=False, lr=1e-2), freeze="none", state_path=state,
                    callbacks=[CSVLogger(csv_path)])  # fmt: skip
    first.fit(make_tiny_model(), samples_loader(), samples_loader())
    assert len(read_metrics_csv(csv_path)) == 2
    resumed = Trainer(config, freeze="none", callbacks=[CSVLogger(csv_path)])
    history = resumed.fit(make_tiny_model(), samples_loader(), samples_loader(), resume=state)
    on_disk = read_metrics_csv(csv_path)
    assert [r.epoch for r in on_disk] == [1, 2, 3]  # not 1, 2, 1, 2, 3
    assert on_disk.to_dict() == history.to_dict()


def test_printer_shows_restored_epochs_on_resume(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    Trainer(TrainConfig(epochs=1, progress=False), freeze="none", state_path=state).fit(
        make_tiny_model(), samples_loader(), samples_loader()
    )
    out = io.StringIO()
    Trainer(TrainConfig(epochs=2, progress=False), freeze="none", callbacks=[ProgressPrinter(out)]).fit(
        make_tiny_model(), samples_loader(), samples_loader(), resume=state
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[1].split()[0] == "1" and lines[2].split()[0] == "2"


def test_tensorboard_logger_writes_scalars_tensorboard_reads_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    history = Trainer(
        TrainConfig(epochs=3, progress=False, lr=1e-2), freeze="none", callbacks=[TensorBoardLogger(logdir)]
    ).fit(make_tiny_model(), samples_loader(), samples_loader())
    events = EventAccumulator(str(logdir))
    events.Reload()
    assert {"loss/train", "loss/val", "accuracy/val", "lr"} <= set(events.Tags()["scalars"])
    for tag, column in (
        ("loss/train", "train_loss"),
        ("loss/val", "val_loss"),
        ("accuracy/val", "val_accuracy"),
    ):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx(history.column(column), rel=1e-6)
