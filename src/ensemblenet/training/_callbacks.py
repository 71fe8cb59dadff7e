"""Trainer callbacks: keep the best checkpoint, stop early.

The contract (all methods optional; subclass :class:`Callback`)::

    on_fit_start(trainer, model)                 before the first epoch
    on_epoch_end(trainer, model, record)         after validation; set ``trainer.should_stop = True`` to stop
    on_fit_end(trainer, model, history)          after the last epoch (also after early stopping)
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Protocol

from ..errors import CheckpointError, ConfigError
from ..models import TransferModel, load_checkpoint, save_model
from ._distributed import barrier, is_main_process
from ._history import EpochRecord, History

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "TrainerState"]

log = logging.getLogger("ensemblenet.training")

_MODES = ("min", "max")


class TrainerState(Protocol):
    """What a callback sees of the :class:`~ensemblenet.Trainer` running it."""

    history: History
    should_stop: bool

    def save_state(self, model: TransferModel, path: str | os.PathLike[str]) -> None:
        """Write the resumable training state."""
        ...


class Callback:
    """Base class with no-op hooks."""

    def on_fit_start(self, trainer: TrainerState, model: TransferModel) -> None:
        """Called once before the first epoch."""

    def on_epoch_end(self, trainer: TrainerState, model: TransferModel, record: EpochRecord) -> None:
        """Called after each epoch's validation."""

    def on_fit_end(self, trainer: TrainerState, model: TransferModel, history: History) -> None:
        """Called once after training ends."""


def _monitor_mode(monitor: str, mode: str | None) -> str:
    if mode is None:
        mode = "max" if "acc" in monitor else "min"
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}")
    return mode


def _improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class ModelCheckpoint(Callback):
    """Save the model whenever ``monitor`` improves (atomically, see :func:`ensemblenet.save_model`).

    Args:
        path: where the best model goes.
        monitor: an :class:`~ensemblenet.training.EpochRecord` field: ``"val_loss"`` or ``"val_accuracy"``.
        mode: ``"min"`` or ``"max"``; guessed from the name when None.
        restore_best: at the end of training, load the best weights back into the model.
        last_path: also write the latest epoch with the full trainer state here, for ``resume``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        monitor: str = "val_loss",
        mode: str | None = None,
        restore_best: bool = True,
        last_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.monitor = monitor
        self.mode = _monitor_mode(monitor, mode)
        self.restore_best = restore_best
        self.last_path = Path(last_path) if last_path is not None else None
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_fit_start(self, trainer: TrainerState, model: TransferModel) -> None:
        # A resumed run starts with the restored history: remember its best epoch, so an epoch worse
        # than one before the interruption does not overwrite the best file.
        self.best = self.best_epoch = None
        for record in trainer.history.records:
            value = record.get(self.monitor)
            if _improved(value, self.best, self.mode):
                self.best, self.best_epoch = value, record.epoch
        if self.best_epoch is not None and self._saved_epoch() != self.best_epoch:
            # Resumed into another output (or the file was removed): the best epoch's weights are not
            # here and cannot be rebuilt, so this file keeps the best of the epochs still to come.
            log.warning(
                "the best epoch so far (%d) was saved to another file, not %s; %s gets the best of the "
                "epochs trained from now on",
                self.best_epoch,
                self.path,
                self.path,
            )
            self.best = self.best_epoch = None

    def _saved_epoch(self) -> int | None:
        """The epoch the file at ``path`` holds, if it is a readable model file that records one."""
        try:
            epoch = (load_checkpoint(self.path).get("metrics") or {}).get("epoch")
        except CheckpointError:
            return None
        return epoch if isinstance(epoch, int) else None

    def on_epoch_end(self, trainer: TrainerState, model: TransferModel, record: EpochRecord) -> None:
        value = record.get(self.monitor)
        if _improved(value, self.best, self.mode):
            self.best, self.best_epoch = value, record.epoch
            if is_main_process():  # under torchrun only rank 0 writes (every rank has the same record)
                save_model(model, self.path, metrics=record.to_dict())
            log.info("epoch %d: %s improved to %.5f, saved %s", record.epoch, self.monitor, value, self.path)
        if self.last_path is not None:
            trainer.save_state(model, self.last_path)

    def on_fit_end(self, trainer: TrainerState, model: TransferModel, history: History) -> None:
        barrier()  # under torchrun: rank 0's last write is complete before any rank reads it
        if self.restore_best and self.best_epoch is not None and self.path.is_file():
            payload = load_checkpoint(self.path)
            model.load_state_dict(payload["state_dict"])
            log.info("restored the best weights (epoch %d) from %s", self.best_epoch, self.path)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs."""

    def __init__(
        self, *, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0, mode: str | None = None
    ) -> None:
        if patience < 0:
            raise ConfigError(f"patience must be >= 0, got {patience!r}")
        self.monitor = monitor
        self.mode = _monitor_mode(monitor, mode)
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad_epochs = 0

    def on_fit_start(self, trainer: TrainerState, model: TransferModel) -> None:
        # Replay a resumed run's history so patience counts across the interruption.
        self.best, self.bad_epochs = None, 0
        for record in trainer.history.records:
            value = record.get(self.monitor)
            if _improved(value, self.best, self.mode, self.min_delta):
                self.best, self.bad_epochs = value, 0
            else:
                self.bad_epochs += 1

    def on_epoch_end(self, trainer: TrainerState, model: TransferModel, record: EpochRecord) -> None:
        value = record.get(self.monitor)
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            log.info(
                "early stopping at epoch %d: %s has not improved for %d epochs",
                record.epoch,
                self.monitor,
                self.bad_epochs,
            )
            trainer.should_stop = True
