"""``finetune``: one call from a folder of images to a trained, saved model."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import DEFAULT_SPLIT, Samples, scan_folder, split_samples
from ..errors import ClassMismatchError, ConfigError
from ..models import FreezePolicy, Head, TransferModel, create_model, save_model
from ..scoring import Evaluation
from ..spec import InputSpec
from ..training import (
    Callback,
    EarlyStopping,
    History,
    ModelCheckpoint,
    TrainConfig,
    Trainer,
    is_main_process,
)

__all__ = ["FinetuneResult", "default_model_path", "file_stem", "finetune"]

log = logging.getLogger("ensemblenet")


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns."""

    model: TransferModel
    history: History
    path: Path
    test: Evaluation | None = None
    splits: dict[str, Any] = field(default_factory=dict)  # name -> Samples used
    best_epoch: int | None = None  # the epoch whose weights were saved (None: no epoch improved)


def file_stem(backbone: str) -> str:
    """``backbone`` as a file name: runs of other characters than letters, digits, ``_.-``
    become one ``_`` (``"torchvision:mobilenet_v2"`` -> ``"torchvision_mobilenet_v2"``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone).strip("_")


def default_model_path(backbone: str) -> Path:
    """Where :func:`finetune` saves when not told: ``runs/<backbone>.pt`` (see :func:`file_stem`)."""
    return Path("runs") / (file_stem(backbone) + ".pt")


def _resolve_data(data: Any, split: Sequence[float], seed: int) -> dict[str, Any]:
    if isinstance(data, (str, os.PathLike)):
        data = scan_folder(data)
    if isinstance(data, Samples):
        fractions = tuple(split) if split else DEFAULT_SPLIT
        parts = split_samples(data, fractions, seed=seed)
        names = ("train", "val", "test")[: len(parts)]
        return dict(zip(names, parts, strict=True))
    if isinstance(data, Mapping):
        parts_map = {k: scan_folder(v) if isinstance(v, (str, os.PathLike)) else v for k, v in data.items()}
    elif isinstance(data, Sequence) and 2 <= len(data) <= 3:
        names = ("train", "val", "test")[: len(data)]
        parts_map = {
            k: scan_folder(v) if isinstance(v, (str, os.PathLike)) else v
            for k, v in zip(names, data, strict=True)
        }
    else:
        raise ConfigError(
            "data must be a folder path, a Samples, a (train, val[, test]) tuple of folders or Samples, "
            f"or a mapping with 'train'/'val'/'test'; got {type(data).__name__}"
        )
    if "train" not in parts_map:
        raise ConfigError(f"data needs a 'train' split; got {sorted(parts_map)}")
    classes = parts_map["train"].classes
    for name, part in parts_map.items():
        if part.classes != classes:
            raise ClassMismatchError(
                f"split {name!r} has classes {list(part.classes)} but 'train' has {list(classes)}; "
                "every split must have the same class folders"
            )
    return parts_map


def finetune(
    backbone: str,
    data: Any,
    *,
    weights: str | os.PathLike[str] | None = "DEFAULT",
    head: str | Head | Mapping[str, Any] = "mlp",
    freeze: str | FreezePolicy = "bn_only",
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    split: Sequence[float] = (),
    seed: int | None = None,
    out: str | os.PathLike[str] | None = None,
    input_spec: InputSpec | None = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    input_size: int | tuple[int, int] | None = None,
    patience: int | None = None,
    state_path: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
) -> FinetuneResult:
    """Fine-tune a pretrained backbone on a folder of images and save the best model.

    The defaults are the reference recipe: BatchNorm-only fine-tuning, ``Linear(n, 512) → Linear(512, C)``
    head, Adam at 1e-3 for 2 epochs, batch 32, images resized to the backbone's input size.

    Args:
        backbone: e.g. ``"torchvision:mobilenet_v2"`` or ``"timm:tf_efficientnet_lite0"``.
        data: a folder (class-per-folder or Kaggle's flat ``cat.1.jpg`` layout), split deterministically
            into train/val/test with ``split`` (default 16,000/4,500/4,500 of 25,000); or explicit
            ``(train, val[, test])`` folders / :class:`~ensemblenet.Samples`.
        weights: starting weights: ``"DEFAULT"``, another weights name, a local file, or None (random).
        head, freeze: names or objects (see :mod:`ensemblenet.models`, :mod:`ensemblenet.models`).
        epochs, lr, batch_size, seed, progress: shortcuts overriding the same :class:`TrainConfig`
            fields (defaults: 2, 1e-3, 32, 0, True).
        out: where to save the best model (by validation loss); default ``runs/<backbone>.pt``.
        config: a full :class:`TrainConfig`; the shortcut arguments override it.
        callbacks: extra callbacks (a best-model :class:`ModelCheckpoint` is always added).
        input_size: train and predict at this size (one int for a square) instead of the
            backbone's, keeping its normalization and interpolation.
        patience: stop early when the validation loss has not improved for this many epochs.
        state_path: keep a resumable training state here after every epoch (see
            :class:`~ensemblenet.Trainer`).
        resume: continue from a state file written through ``state_path``.

    Returns:
        A :class:`FinetuneResult` with the model (best weights restored), history, path and the
        test-split evaluation when there is one.
    """
    shortcuts: dict[str, Any] = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "progress": progress,
    }
    cfg = dataclasses.replace(
        config or TrainConfig(), **{k: v for k, v in shortcuts.items() if v is not None}
    )
    parts = _resolve_data(data, split, cfg.seed)
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    model = create_model(backbone, parts["train"].classes, head=head, weights=weights, input_spec=input_spec)
    if input_size is not None:
        model = _resized(model, input_size)
    path = Path(out) if out is not None else default_model_path(backbone)
    monitor = "val_loss" if "val" in parts else "train_loss"
    saver = ModelCheckpoint(path, monitor=monitor)
    stopper = [EarlyStopping(monitor=monitor, patience=patience)] if patience is not None else []
    trainer = Trainer(cfg, freeze=freeze, callbacks=[saver, *stopper, *callbacks], state_path=state_path)
    history = trainer.fit(model, parts["train"], parts.get("val"), resume=resume)
    # e.g. every validation loss was NaN: still save what we have (one writer under torchrun)
    if saver.best_epoch is None and is_main_process():
        save_model(model, path, metrics=history.records[-1].to_dict() if history.records else {})
    test = trainer.evaluate(model, parts["test"]) if "test" in parts else None
    if test is not None:
        log.info("test: loss %.4f  accuracy %.4f  (n=%d)", test.loss, test.accuracy, test.n)
    return FinetuneResult(
        model=model.eval(), history=history, path=path, test=test, splits=parts, best_epoch=saver.best_epoch
    )


def _resized(model: TransferModel, size: int | tuple[int, int]) -> TransferModel:
    """``model`` taking images of ``size`` (its normalization and interpolation kept)."""
    height, width = (size, size) if isinstance(size, int) else size
    spec = dataclasses.replace(model.spec, size=(int(height), int(width)))
    return TransferModel(model.backbone, model.head, dataclasses.replace(model.config, spec=spec))
