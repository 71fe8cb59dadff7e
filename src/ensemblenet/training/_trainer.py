"""The Trainer: one readable loop (after minGPT), configured by a frozen dataclass.

>>> from ensemblenet import Trainer, TrainConfig
>>> trainer = Trainer(TrainConfig(epochs=2, lr=1e-3), freeze="bn_only")  # the reference recipe
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import Samples, make_loader
from ..errors import CheckpointError, ClassMismatchError, ConfigError, TrainingError
from ..models import (
    FreezePolicy,
    TransferModel,
    load_checkpoint,
    policy_config,
    resolve_freeze,
    save_model,
)
from ..scoring import Evaluation
from ._callbacks import Callback
from ._config import TrainConfig, resolve_device
from ._distributed import DistContext
from ._history import EpochRecord, History
from ._resume import differences, files_digest, fingerprint
from ._schedules import lr_factor
from ._sync_batchnorm import convert_sync_batchnorm, revert_sync_batchnorm

__all__ = ["Trainer"]

log = logging.getLogger("ensemblenet.training")


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """A data.Batch (single view) or a plain ``(images, labels)`` pair."""
    if hasattr(batch, "images"):
        return batch.images[0], batch.labels, list(batch.skipped)
    images, labels = batch[0], batch[1]
    return images, labels, []


class Trainer:
    """Fine-tunes a :class:`~ensemblenet.TransferModel` under a freeze policy.

    Args:
        config: a :class:`TrainConfig` (or keyword overrides of the default one).
        freeze: a policy name (``"bn_only"``, ``"head_only"``, ``"none"``, ``"freeze_unfreeze"``) or object.
        callbacks: e.g. :class:`~ensemblenet.ModelCheckpoint`, :class:`~ensemblenet.EarlyStopping`.
        state_path: where :meth:`fit` keeps a resumable state (see :meth:`save_state`): written before
            the first epoch and after every epoch, atomically, so a run killed at any moment (SIGKILL,
            Ctrl-C, power loss) continues with ``fit(..., resume=state_path)`` from its last completed
            epoch and, thanks to per-epoch seeding, reaches the same weights as an uninterrupted run.
        criterion: the training loss, ``criterion(logits, targets)``; default cross-entropy with
            ``config.label_smoothing``. Validation always scores cross-entropy against the labels,
            so a criterion with other targets (e.g. :class:`DistillationLoss`) is still judged by
            the validation log-loss.
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        *,
        freeze: str | FreezePolicy = "bn_only",
        callbacks: Sequence[Callback] = (),
        state_path: str | os.PathLike[str] | None = None,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **overrides: Any,
    ) -> None:
        config = config or TrainConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        self.policy = resolve_freeze(freeze)
        self.callbacks = list(callbacks)
        self.state_path = Path(state_path) if state_path is not None else None
        self.criterion = criterion
        self.device = resolve_device(self.config.device)
        self.dist = DistContext.from_env(self.device)  # one rank unless started by torchrun
        self.device = self.dist.device_for(self.device)
        self._synced_bn: list[tuple[nn.Module, str, nn.Module]] = []
        self.should_stop = False
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.history = History()
        self._fingerprint: dict[str, Any] = {}  # what a resumed run must share with this one

    # ------------------------------------------------------------------ data
    def _loader(self, data: Any, model: TransferModel, *, train: bool) -> DataLoader[Any]:
        if isinstance(data, DataLoader):
            return data
        if not isinstance(data, Samples):
            raise ConfigError(
                f"training data must be ensemblenet.Samples (see scan_folder, split_samples) or a DataLoader "
                f"yielding (images, labels); got {type(data).__name__}"
            )
        if data.classes != model.classes:
            raise ClassMismatchError(
                f"the data's classes {list(data.classes)} differ from the model's {list(model.classes)}; "
                "build the model with create_model(..., classes=samples.classes)"
            )
        cfg = self.config
        return make_loader(
            data,
            model.spec,
            batch_size=cfg.batch_size if train else (cfg.eval_batch_size or 2 * cfg.batch_size),
            shuffle=train,
            augment=train and cfg.augment,
            num_workers=cfg.num_workers,
            seed=cfg.seed,
            cache_dir=cfg.cache_dir,
        )

    def _autocast(self) -> Any:
        bf16 = self.config.precision == "bf16" or (
            self.config.precision == "auto" and self.device.type == "cuda"
        )
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last and images.dim() == 4:
            return images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return images.to(self.device, non_blocking=True)

    def _seed_epoch(self, loader: DataLoader[Any], epoch: int) -> None:
        # Seeding per epoch (not once per run) is what makes a resumed run identical to an
        # uninterrupted one: epoch k's shuffling, flips and dropout depend on (seed, k) only.
        epoch_seed = self.config.seed * 1_000_003 + epoch
        torch.manual_seed(epoch_seed)
        generator = getattr(loader, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(epoch_seed)

    def _build_optimizer(self, model: TransferModel, steps_per_epoch: int) -> None:
        cfg = self.config
        groups = [
            {"params": g["params"], "lr": cfg.lr * g["lr_scale"], "name": g["name"]}
            for g in self.policy.param_groups(model)
            if g["params"]
        ]
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        total = max(1, cfg.epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(cfg.schedule, step, total, cfg.warmup)
        )

    # ------------------------------------------------------------------ the loop
    def fit(
        self,
        model: TransferModel,
        train: Any,
        val: Any = None,
        *,
        resume: str | os.PathLike[str] | None = None,
    ) -> History:
        """Train ``model`` in place; return the per-epoch :class:`~ensemblenet.training.History`.

        Args:
            model: the model to train (moved to the trainer's device).
            train: training :class:`~ensemblenet.Samples` or a DataLoader.
            val: validation data (same kinds), or None to skip validation.
            resume: a state file written by :meth:`save_state` (or ``ModelCheckpoint(last_path=...)``):
                continue from the epoch after it with the saved optimizer, schedule and history.

        Raises:
            KeyboardInterrupt: re-raised after logging where the resumable state is (with ``state_path``
                set, that file holds the last completed epoch, so the interrupted epoch is redone).
        """
        try:
            return self._fit(model, train, val, resume)
        except KeyboardInterrupt:
            if self.state_path is not None and self.state_path.is_file():
                log.warning(
                    "interrupted in epoch %d; %s holds the state after epoch %d: resume with "
                    "fit(..., resume=%r)",
                    len(self.history) + 1,
                    self.state_path,
                    len(self.history),
                    str(self.state_path),
                )
            raise
        finally:
            revert_sync_batchnorm(self._synced_bn)  # the caller gets back the BatchNorm layers it gave
            self._synced_bn = []

    def _fit(
        self, model: TransferModel, train: Any, val: Any, resume: str | os.PathLike[str] | None
    ) -> History:
        cfg = self.config
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_batchnorm and self.dist.enabled:
            if self.device.type == "cpu":
                raise ConfigError(
                    "sync_batchnorm=True needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); on CPU "
                    "leave it off: each rank then normalises with its own share of the batch"
                )
            self._synced_bn = convert_sync_batchnorm(model)
        train_loader = self.dist.train_loader(self._loader(train, model, train=True), cfg.seed)
        val_loader = self._loader(val, model, train=False) if val is not None else None
        self._build_optimizer(model, len(train_loader))
        assert self.optimizer is not None and self.scheduler is not None  # for mypy; built just above
        self.history, start_epoch = History(), 0
        self._fingerprint = fingerprint(
            model.config.to_dict(),
            dataclasses.asdict(cfg),
            policy_config(self.policy),
            files_digest(train),
            files_digest(val),
        )
        if resume is not None:
            start_epoch = self._load_state(model, resume)
        loss_fn = self.criterion or nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.should_stop = False
        for cb in self.callbacks:
            cb.on_fit_start(self, model)
        if self.state_path is not None and (resume is None or Path(resume) != self.state_path):
            self.save_state(model, self.state_path)  # from here on there is always a state to resume

        net: nn.Module = model  # what the steps call: the model, or its DDP wrapper under torchrun
        for epoch in range(start_epoch, cfg.epochs):
            started = time.perf_counter()
            model.train()
            self.policy.on_epoch_start(model, epoch)
            self._seed_epoch(train_loader, epoch)
            self.dist.set_epoch(train_loader, epoch)
            net = self.dist.wrap(model, net)  # after the policy: DDP hooks follow requires_grad
            total_loss, seen, skipped = 0.0, 0, 0
            bar = tqdm(
                train_loader,
                desc=f"{cfg.label + ' ' if cfg.label else ''}epoch {epoch + 1}/{cfg.epochs}",
                disable=not cfg.progress or not self.dist.is_main,
                leave=False,
            )
            for step, batch in enumerate(bar):
                images, labels, dropped = _unpack(batch)
                skipped += len(dropped)
                if len(labels) == 0:
                    continue
                images, labels = self._to_device(images), labels.to(self.device)
                with self._autocast():
                    loss = loss_fn(net(images), labels)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                        "training stopped before applying that step. Lower the learning rate or set "
                        "grad_clip; a ModelCheckpoint keeps the last good model."
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                total_loss += loss.item() * len(labels)
                seen += len(labels)
                bar.set_postfix(loss=f"{total_loss / seen:.4f}")

            loss_sum, seen_sum, skipped_sum = self.dist.sum(total_loss, seen, skipped)  # over all ranks
            total_loss, seen, skipped = loss_sum, int(seen_sum), int(skipped_sum)
            val_eval = self.evaluate(model, val_loader) if val_loader is not None else None
            record = EpochRecord(
                epoch=epoch + 1,
                train_loss=total_loss / max(seen, 1),
                val_loss=val_eval.loss if val_eval else math.nan,
                val_accuracy=val_eval.accuracy if val_eval else math.nan,
                lr=self.optimizer.param_groups[-1]["lr"],
                seconds=time.perf_counter() - started,
                train_images=seen,
                skipped=skipped + (val_eval.n_skipped if val_eval else 0),
            )
            self.history.append(record)
            log.info("%s", record)
            for cb in self.callbacks:
                cb.on_epoch_end(self, model, record)
            if self.state_path is not None:
                self.save_state(model, self.state_path)
            if self.should_stop:
                break

        for cb in self.callbacks:
            cb.on_fit_end(self, model, self.history)
        self.dist.broadcast_model(model)  # e.g. rank 0 restored a best checkpoint other ranks cannot read
        self.dist.barrier()  # no rank returns before rank 0's files are complete
        return self.history

    @torch.inference_mode()
    def evaluate(self, model: TransferModel, data: Any) -> Evaluation:
        """Mean cross-entropy and accuracy of ``model`` on ``data`` (Samples or a DataLoader)."""
        loader = self.dist.eval_loader(self._loader(data, model, train=False))
        was_training = model.training
        model.eval().to(self.device)
        total_loss, correct, n, skipped = 0.0, 0, 0, 0
        desc = f"{self.config.label} evaluate" if self.config.label else "evaluate"
        bar = tqdm(loader, desc=desc, disable=not self.config.progress or not self.dist.is_main, leave=False)
        for batch in bar:
            images, labels, dropped = _unpack(batch)
            skipped += len(dropped)
            if len(labels) == 0:
                continue
            images, labels = self._to_device(images), labels.to(self.device)
            with self._autocast():
                logits = model(images).float()
            total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(1) == labels).sum())
            n += len(labels)
        model.train(was_training)
        sums = self.dist.sum(total_loss, correct, n, skipped)  # each rank saw a disjoint share
        total_loss, correct, n, skipped = sums[0], int(sums[1]), int(sums[2]), int(sums[3])
        if n == 0:
            return Evaluation(loss=math.nan, accuracy=math.nan, n=0, n_skipped=skipped)
        return Evaluation(loss=total_loss / n, accuracy=correct / n, n=n, n_skipped=skipped)

    # ------------------------------------------------------------------ resumable state
    def save_state(self, model: TransferModel, path: str | os.PathLike[str]) -> None:
        """Write model, optimizer, schedule, history and epoch atomically, for ``fit(resume=...)``."""
        if self.optimizer is None or self.scheduler is None:
            raise ConfigError("save_state is only meaningful during or after fit()")
        if not self.dist.is_main:
            return  # under torchrun only rank 0 writes; every rank holds the same state
        save_model(
            model,
            path,
            metrics=self.history.records[-1].to_dict() if self.history.records else {},
            train_state={
                "epoch": len(self.history),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "history": self.history.to_dict(),
                "config": dataclasses.asdict(self.config),
                "policy": policy_config(self.policy),
                "fingerprint": self._fingerprint,
            },
        )

    def _load_state(self, model: TransferModel, path: str | os.PathLike[str]) -> int:
        """Restore a state written by :meth:`save_state`, after checking it is this run's."""
        shown = repr(os.fspath(path))
        payload = load_checkpoint(path)
        state = payload.get("train_state")
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{shown} holds a model but no trainer state; resume needs a file written by "
                "Trainer.save_state or ModelCheckpoint(last_path=...)"
            )
        # A state written before fingerprints existed (0.1) is compared on what it does record.
        saved = state.get("fingerprint") or fingerprint(payload["config"], state["config"], state["policy"])
        mismatch = differences(saved, self._fingerprint)
        if mismatch:
            raise CheckpointError(
                f"cannot resume from {shown}: it was saved by a different run ({'; '.join(mismatch)}). "
                "Resume with that run's settings and data, or start a new run without resume"
            )
        assert self.optimizer is not None and self.scheduler is not None
        try:
            model.load_state_dict(payload["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.history = History.from_dict(state["history"])
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(
                f"cannot resume from {shown}: its state does not fit this model and optimizer "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            ) from None
        if len(self.history) != state["epoch"]:
            raise CheckpointError(
                f"cannot resume from {shown}: it records epoch {state['epoch']} but a "
                f"history of {len(self.history)} epochs"
            )
        log.info("resuming from %s after epoch %d", path, state["epoch"])
        return int(state["epoch"])
