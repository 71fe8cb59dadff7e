"""Training settings: :class:`TrainConfig`, a frozen dataclass, and the device it names."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data import resolve_augment
from ..errors import ConfigError
from ._schedules import lr_factor

__all__ = ["OPTIMIZERS", "PRECISIONS", "TrainConfig", "resolve_device"]

OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. The defaults are the reference notebook's recipe (Adam, 1e-3, 2 epochs, batch 32).

    Attributes:
        epochs: passes over the training data.
        lr: base learning rate; a freeze policy's groups scale it (``lr_scale``).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: L2 (adam/sgd) or decoupled (adamw) weight decay.
        schedule: ``"constant"``, ``"cosine"`` or ``"linear"`` decay per step, after ``warmup``.
        warmup: fraction of all steps with a linear warm-up from 0.
        batch_size: training batch size; ``eval_batch_size`` defaults to twice it.
        augment: training-time augmentation: ``"none"`` (the notebook's), ``"flip"``, ``"light"``
            (flip + random resized crop) or ``"strong"`` (+ TrivialAugmentWide); ``True`` means
            ``"flip"`` and ``False`` ``"none"`` (see :mod:`ensemblenet.data`).
        num_workers: DataLoader worker processes (0: decode in the main process; on 2 cores
            workers compete with the model for CPU).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        precision: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"fp32"`` or ``"bf16"``.
        seed: seeds head init (in :func:`~ensemblenet.finetune`), shuffling, augmentation and dropout
            per epoch, so a run is reproducible and a resumed run matches an uninterrupted one.
        grad_clip: max gradient norm, or None.
        label_smoothing: passed to the cross-entropy loss.
        progress: show progress bars.
        channels_last: keep the model's weights and the image batches in channels-last memory
            layout (same arithmetic). On 2 CPU cores it sped MobileNetV2 BatchNorm-only training up
            while the machine was loaded, not when idle; see the performance docs.
        cache_dir: a folder for the decoded-image cache (see :class:`~ensemblenet.DecodedCache`): images are
            decoded and resized once, later epochs read ``uint8`` pixels from it. None: off.
        feature_store: a folder where the frozen-feature cache keeps the frozen prefix's plain and
            mirrored features between runs (see :class:`~ensemblenet.training.FeatureStore`): a later
            run with the same prefix reads them instead of running the backbone. None: off.
        sync_batchnorm: under ``torchrun`` on GPUs, compute BatchNorm batch statistics over the global
            batch (``SyncBatchNorm``) instead of each rank's share; see :class:`~ensemblenet.DistContext`.
        label: a name shown in the progress bars (e.g. the ensemble member being trained).
    """

    epochs: int = 2
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0.0
    batch_size: int = 32
    eval_batch_size: int | None = None
    augment: bool | str = False
    num_workers: int = 0
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    progress: bool = True
    channels_last: bool = True
    cache_dir: str | None = None
    feature_store: str | None = None
    sync_batchnorm: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name}={getattr(self, name)!r}: {rule}")

        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise bad("epochs", "must be an int >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise bad("lr", "must be a positive finite number")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {OPTIMIZERS}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"must be one of {PRECISIONS}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("batch_size", "must be an int >= 1")
        if not 0.0 <= self.warmup < 1.0:
            raise bad("warmup", "must be a fraction in [0, 1)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad("label_smoothing", "must be in [0, 1)")
        lr_factor(self.schedule, 0, 1, self.warmup)  # validates the schedule name
        resolve_augment(self.augment)  # validates the preset name (an unknown one lists the valid ones)
        if self.augment == "none":
            object.__setattr__(self, "augment", False)  # one spelling of "no augmentation"
        if self.weight_decay < 0 or not math.isfinite(self.weight_decay):
            raise bad("weight_decay", "must be a finite number >= 0")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise bad("grad_clip", "must be a positive finite number or None")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other device is checked to exist here.

    Raises:
        ConfigError: an unknown device name, CUDA (or MPS) that this machine or this torch build
            does not have, or a CUDA index beyond the devices present (``cuda:3`` with two GPUs).
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ConfigError(f"device {str(device)!r} is not available: {why}; use 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(
                f"device {str(device)!r} is not available: this machine has {count} CUDA device(s), "
                f"'cuda:0'..'cuda:{count - 1}'"
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r} is not available here (no Apple MPS); use 'cpu' or 'auto'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {str(device)!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return dev
