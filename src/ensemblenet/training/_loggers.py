"""Callbacks that make training visible: an epoch table, ``metrics.csv``, TensorBoard.

* :class:`ProgressPrinter` prints one line per epoch as it ends (Keras/fastai style), so a run
  shows its validation numbers while it goes, not only in the returned history;
* :class:`CSVLogger` keeps a ``metrics.csv`` with one row per epoch, rewritten from the restored
  history on resume, flushed after every epoch (``tail -f`` works);
* :class:`TensorBoardLogger` writes the same scalars for TensorBoard (optional dependency:
  ``pip install "ensemblenet[tensorboard]"``).

Under ``torchrun`` only rank 0 prints or writes.

>>> import io
>>> from ensemblenet.training import EpochRecord, History, ProgressPrinter
>>> out = io.StringIO()
>>> printer = ProgressPrinter(stream=out)
>>> class Run:  # what a callback sees of a trainer
...     history = History()
...     should_stop = False
>>> printer.on_fit_start(Run(), None)
>>> printer.on_epoch_end(Run(), None, EpochRecord(1, 0.4321, 0.2, 0.95, lr=1e-3, seconds=12.3))
>>> print(out.getvalue(), end="")
epoch  train_loss  val_loss  val_acc        lr   time
    1      0.4321    0.2000   0.9500  1.00e-03    12s
"""

from __future__ import annotations

import csv
import math
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

from ..errors import MissingDependencyError
from ..models import TransferModel
from ._callbacks import Callback, TrainerState
from ._distributed import is_main_process
from ._history import EpochRecord, History

__all__ = ["CSVLogger", "ProgressPrinter", "TensorBoardLogger"]

_COLUMNS = ("epoch", "train_loss", "val_loss", "val_acc", "lr", "time")


def _cell(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


class ProgressPrinter(Callback):
    """Print a header, then one row per epoch as it ends: epoch, train loss, validation loss and
    accuracy, learning rate, wall time.

    Args:
        stream: where to print (default: ``sys.stdout`` at the time of printing).
        label: a prefix for every line, e.g. the member's name when several train in turn.
    """

    def __init__(self, stream: IO[str] | None = None, *, label: str = "") -> None:
        self.stream = stream
        self.label = label

    def _print(self, text: str) -> None:
        if not is_main_process():
            return
        prefix = f"[{self.label}] " if self.label else ""
        print(prefix + text, file=self.stream or sys.stdout, flush=True)

    def on_fit_start(self, trainer: TrainerState, model: TransferModel) -> None:
        self._print(
            f"{'epoch':>5}  {'train_loss':>10}  {'val_loss':>8}  {'val_acc':>7}  {'lr':>8}  {'time':>5}"
        )
        for record in trainer.history.records:  # a resumed run shows the epochs it restored
            self._row(record)

    def on_epoch_end(self, trainer: TrainerState, model: TransferModel, record: EpochRecord) -> None:
        self._row(record)

    def _row(self, r: EpochRecord) -> None:
        lr = "-" if math.isnan(r.lr) else f"{r.lr:.2e}"
        time = "-" if math.isnan(r.seconds) else f"{r.seconds:.0f}s"
        self._print(
            f"{r.epoch:>5}  {_cell(r.train_loss):>10}  {_cell(r.val_loss):>8}  {_cell(r.val_accuracy):>7}  "
            f"{lr:>8}  {time:>5}"
        )


class CSVLogger(Callback):
    """Write every epoch's record to a CSV file (header = :class:`EpochRecord` fields).

    On resume the file is rewritten from the restored history first, so it never holds the
    epochs of an interrupted attempt twice.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._columns = [f.name for f in fields(EpochRecord)]

    def on_fit_start(self, trainer: TrainerState, model: TransferModel) -> None:
        if not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, self._columns)
            writer.writeheader()
            writer.writerows(r.to_dict() for r in trainer.history.records)

    def on_epoch_end(self, trainer: TrainerState, model: TransferModel, record: EpochRecord) -> None:
        if not is_main_process():
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, self._columns).writerow(record.to_dict())


def read_metrics_csv(path: str | os.PathLike[str]) -> History:
    """A :class:`History` from a file written by :class:`CSVLogger`."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kinds = {f.name: f.type for f in fields(EpochRecord)}
    records = [
        EpochRecord(**{k: (int(v) if kinds[k] in ("int", int) else float(v)) for k, v in row.items()})  # type: ignore[arg-type]
        for row in rows
    ]
    return History(records)


class TensorBoardLogger(Callback):
    """Write each epoch's scalars (``loss/train``, ``loss/val``, ``accuracy/val``, ``lr``,
    ``seconds``) to TensorBoard event files in ``log_dir`` (view with ``tensorboard --logdir``).

    Needs the ``tensorboard`` package (``pip install "ensemblenet[tensorboard]"``), imported when
    training starts.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def on_fit_start(self, trainer: TrainerState, model: TransferModel) -> None:
        if not is_main_process():
            return
        try:  # optional dependency
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise MissingDependencyError(
                'TensorBoardLogger needs the tensorboard package: pip install "ensemblenet[tensorboard]" '
                f"({exc})"
            ) from None
        self._writer = SummaryWriter(log_dir=str(self.log_dir))
        for record in trainer.history.records:
            self._write(record)

    def _write(self, r: EpochRecord) -> None:
        scalars = {
            "loss/train": r.train_loss,
            "loss/val": r.val_loss,
            "accuracy/val": r.val_accuracy,
            "lr": r.lr,
            "seconds": r.seconds,
        }
        for tag, value in scalars.items():
            if not math.isnan(value):
                self._writer.add_scalar(tag, value, global_step=r.epoch)
        self._writer.flush()

    def on_epoch_end(self, trainer: TrainerState, model: TransferModel, record: EpochRecord) -> None:
        if self._writer is not None:
            self._write(record)

    def on_fit_end(self, trainer: TrainerState, model: TransferModel, history: History) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
