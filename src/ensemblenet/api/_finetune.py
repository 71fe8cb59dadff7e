"""``finetune``: one call from a folder of images to a trained, saved model."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from ..ensemble import Ensemble
from ..errors import ConfigError
from ..models import FreezePolicy, Head, TransferModel, create_model, resolve_freeze, save_model
from ..scoring import Evaluation
from ..spec import InputSpec
from ..training import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    ModelCheckpoint,
    ProgressPrinter,
    TensorBoardLogger,
    TrainConfig,
    Trainer,
    fit_with_feature_cache,
    frozen_stages,
    is_main_process,
)
from ._recipes import Recipe, get_recipe
from ._refit import refit_train_and_val
from ._splits import resolve_splits

__all__ = ["FinetuneResult", "default_model_path", "file_stem", "finetune", "run_files"]

log = logging.getLogger("ensemblenet.api")


@dataclass(repr=False)
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        model: the trained model, best epoch's weights restored, in eval mode.
        history: one :class:`~ensemblenet.EpochRecord` per epoch.
        path: the saved best model.
        test: the test split's evaluation, when there is a test split.
        splits: the :class:`~ensemblenet.data.Samples` of each part (``"train"``, ``"val"``, ``"test"``).
        best_epoch: the epoch whose weights were saved (None: no epoch improved).
        recipe: the recipe as run (overrides applied).
        seconds: wall time of the whole call; ``feature_seconds`` of it computing cached features.
        files: what was written beside the model: ``"split"`` (``split.json``), ``"metrics"``
            (``metrics.csv``).
        skipped_files: files the folder scans rejected (unreadable or not images), with the reason.
        refit_path: with the recipe's ``refit``, the model trained on train + validation for the
            chosen epochs (``<stem>.refit.pt``); None otherwise.
    """

    model: TransferModel
    history: History
    path: Path
    test: Evaluation | None = None
    splits: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None
    recipe: Recipe | None = None
    seconds: float = 0.0
    feature_seconds: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)
    skipped_files: tuple[tuple[Path, str], ...] = ()
    refit_path: Path | None = None

    def __repr__(self) -> str:  # the default would print the whole module
        test = f", test accuracy {self.test.accuracy:.4f} (n={self.test.n})" if self.test else ""
        recipe = f", recipe {self.recipe.name!r}" if self.recipe else ""
        return (
            f"FinetuneResult({self.model.config.backbone!r}, {len(self.history)} epochs, best epoch "
            f"{self.best_epoch}{test}{recipe}, saved to {str(self.path)!r}, {self.seconds:.0f}s)"
        )


def file_stem(backbone: str) -> str:
    """``backbone`` as a file name: runs of other characters than letters, digits, ``_.-``
    become one ``_`` (``"torchvision:mobilenet_v2"`` -> ``"torchvision_mobilenet_v2"``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", backbone).strip("_")


def default_model_path(backbone: str) -> Path:
    """Where :func:`finetune` saves when not told: ``runs/<backbone>.pt`` (see :func:`file_stem`)."""
    return Path("runs") / (file_stem(backbone) + ".pt")


def run_files(model_path: str | os.PathLike[str]) -> dict[str, Path]:
    """The files :func:`finetune` writes beside a model ``X.pt``: ``X.split.json``, ``X.metrics.csv``."""
    path = Path(model_path)
    return {
        "split": path.with_name(path.stem + ".split.json"),
        "metrics": path.with_name(path.stem + ".metrics.csv"),
    }


def finetune(
    backbone: str | nn.Module,
    data: Any,
    *,
    recipe: str | Recipe | None = None,
    weights: str | os.PathLike[str] | None = "DEFAULT",
    head: str | Head | Mapping[str, Any] | None = None,
    freeze: str | FreezePolicy | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    schedule: str | None = None,
    warmup: float | None = None,
    weight_decay: float | None = None,
    label_smoothing: float | None = None,
    grad_clip: float | None = None,
    augment: bool | str | None = None,
    feature_cache: bool | None = None,
    feature_views: int | None = None,
    min_steps: int | None = None,
    refit: bool | None = None,
    split: Sequence[float] = (),
    limit: int | None = None,
    seed: int | None = None,
    out: str | os.PathLike[str] | None = None,
    input_spec: InputSpec | None = None,
    input_size: int | tuple[int, int] | None = None,
    num_features: int | None = None,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    progress: bool | None = None,
    patience: int | None = None,
    state_path: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    device: str | None = None,
    precision: str | None = None,
    num_workers: int | None = None,
    cache_dir: str | None = None,
    feature_store: str | os.PathLike[str] | None = None,
    tensorboard: str | os.PathLike[str] | None = None,
    name: str | None = None,
    stream: IO[str] | None = None,
) -> FinetuneResult:
    """Fine-tune a pretrained backbone on images with a recipe, and save the best model.

    By default the ``"fast"`` recipe (:data:`~ensemblenet.api.DEFAULT_RECIPE`): the backbone frozen
    in eval mode, its features computed once with augmented views, an MLP head trained for 10
    epochs with a cosine schedule. Any recipe field can be overridden here (``epochs=20``,
    ``freeze="bn_only"``...); ``recipe="reference"`` is the notebook's recipe.

    Args:
        backbone: e.g. ``"torchvision:mobilenet_v2"``, ``"timm:tf_efficientnet_lite0"``, or an
            ``nn.Module`` object (a timm model, or any feature extractor with ``num_features``).
        data: a folder (class-per-folder or Kaggle's flat ``cat.1.jpg`` layout), cut into
            train/val/test (``split``, default 64/18/18 %); ``(train, val[, test])`` folders or
            Samples; ``{"train": ..., "test": ...}`` (validation cut from train); see
            :func:`~ensemblenet.api.resolve_splits`. Validation or test images that are also
            training images (same bytes) are refused.
        recipe: a registered name (:func:`~ensemblenet.list_recipes`) or a :class:`Recipe`.
        weights: starting weights: ``"DEFAULT"``, another weights name, a local file, or None (random).
        head: like every recipe field given here (``freeze``, ``epochs``, ``lr``, ``batch_size``,
            ``optimizer``, ``schedule``, ``warmup``, ``weight_decay``, ``label_smoothing``,
            ``grad_clip``, ``augment``, ``feature_cache``, ``feature_views``, ``min_steps``, ``refit``):
            overrides the recipe's field of the same name; None keeps it.
        split, seed: how a folder is cut, and the seed of the split, head, shuffling, augmentation.
        min_steps: the recipe's floor on optimizer steps: on a small training split its ``epochs``
            are raised to take at least this many steps. An explicit ``epochs=`` is taken as given.
        limit: train on a stratified subsample of this many training images (validation and test
            unchanged).
        out: where to save the best model (by validation loss); default ``runs/<backbone>.pt``.
            Beside it go ``<stem>.split.json`` (the split, with each file's sha256) and
            ``<stem>.metrics.csv`` (one row per epoch).
        input_spec, input_size, num_features: the backbone's input (``input_size``: one int for a
            square, keeping its normalization); a module backbone's feature width.
        config: a full :class:`TrainConfig` instead of the recipe's training fields; the
            arguments above still override it.
        callbacks: extra callbacks (a best-model :class:`ModelCheckpoint` is always added).
        progress: progress bars and the epoch table (default True); False: quiet.
        patience: stop early when the validation loss has not improved for this many epochs.
        state_path, resume: keep a resumable state after every epoch; continue from one.
        device, precision, num_workers, cache_dir: run settings (see :class:`TrainConfig`).
        feature_store: a folder that keeps the frozen-feature cache's features between runs
            (:class:`~ensemblenet.training.FeatureStore`): a rerun, a refit or another head on the
            same images reads them instead of running the frozen backbone again.
        tensorboard: also write TensorBoard scalars to this folder (``ensemblenet[tensorboard]``).
        name: the label of progress bars and epoch lines (``train_ensemble`` passes the member's).
        stream: where the epoch table goes (default ``sys.stdout``).

    Returns:
        A :class:`FinetuneResult` with the model (best weights restored), history, path, the test
        evaluation when there is a test split, and the files written.
    """
    started = time.perf_counter()
    training: dict[str, Any] = {
        "epochs": epochs, "lr": lr, "batch_size": batch_size, "optimizer": optimizer, "schedule": schedule,
        "warmup": warmup, "weight_decay": weight_decay, "label_smoothing": label_smoothing,
        "grad_clip": grad_clip, "augment": _augment_name(augment),
    }  # fmt: skip
    chosen = get_recipe(recipe).replace(
        head=head, freeze=freeze, feature_cache=feature_cache, feature_views=feature_views,
        min_steps=min_steps, refit=refit, **training,
    )  # fmt: skip
    run: dict[str, Any] = {"seed": seed, "progress": progress, "device": device, "precision": precision}
    run |= {"num_workers": num_workers, "cache_dir": cache_dir, "label": name}
    run |= {"feature_store": None if feature_store is None else str(feature_store)}
    run = {k: v for k, v in run.items() if v is not None}
    if config is None:
        cfg = chosen.train_config(**run)
    else:  # the caller's full config instead of the recipe's training fields; arguments still win
        cfg = dataclasses.replace(config, **{k: v for k, v in training.items() if v is not None}, **run)
    splits = resolve_splits(data, split=split, seed=cfg.seed, limit=limit)
    floor = chosen.replace(epochs=cfg.epochs, batch_size=cfg.batch_size).epochs_for(len(splits["train"]))
    # On a small training split: the optimizer steps min_steps asks for (an explicit epochs= stays).
    if epochs is None and floor > cfg.epochs:
        log.info("%d epochs instead of %d: at least %d optimizer steps", floor, cfg.epochs, chosen.min_steps)
        cfg = dataclasses.replace(cfg, epochs=floor)

    def build() -> TransferModel:
        built = create_model(
            backbone, splits.classes, head=chosen.head, weights=weights, input_spec=input_spec,
            num_features=num_features,
        )  # fmt: skip
        return _resized(built, input_size) if input_size is not None else built

    torch.manual_seed(cfg.seed)  # the new head's initial weights
    model = build()
    path = Path(out) if out is not None else default_model_path(model.config.backbone)
    files = run_files(path)
    if is_main_process():
        splits.save(files["split"])
    monitor = "val_loss"
    saver = ModelCheckpoint(path, monitor=monitor)
    extra: list[Callback] = [CSVLogger(files["metrics"])]
    if patience is not None:
        extra.append(EarlyStopping(monitor=monitor, patience=patience))
    if cfg.progress:
        extra.append(ProgressPrinter(stream, label=cfg.label))
    if tensorboard is not None:
        extra.append(TensorBoardLogger(tensorboard))
    trainer = Trainer(cfg, freeze=chosen.freeze, callbacks=[saver, *extra, *callbacks], state_path=state_path)
    use_cache = _feature_cache(chosen, trainer, model, explicit=feature_cache)
    if cfg.progress and is_main_process():
        print(
            f"{cfg.label + ': ' if cfg.label else ''}{chosen}; split {splits.describe()}",
            file=stream or sys.stdout,
        )
    fit_started = time.perf_counter()
    if use_cache:
        history = fit_with_feature_cache(
            trainer, model, splits["train"], splits["val"], views=chosen.feature_views, resume=resume
        )
    else:
        history = trainer.fit(model, splits["train"], splits["val"], resume=resume)
    fit_seconds = time.perf_counter() - fit_started
    # e.g. every validation loss was NaN: still save what we have (one writer under torchrun)
    if saver.best_epoch is None and is_main_process():
        save_model(model, path, metrics=history.records[-1].to_dict() if history.records else {})
    test = _evaluate(trainer, model, splits["test"]) if "test" in splits else None
    if test is not None:
        line = f"test: loss {test.loss:.4f}  accuracy {test.accuracy:.4f}  (n={test.n})"
        log.info("%s", line)
        if cfg.progress and is_main_process():
            print(
                f"{'[' + cfg.label + '] ' if cfg.label else ''}{line}", file=stream or sys.stdout, flush=True
            )
    epoch_seconds = sum(r.seconds for r in history.records if not math.isnan(r.seconds))
    refitted = None
    if chosen.refit and "val" in splits:
        epochs_chosen = saver.best_epoch or len(history.records)
        refitted = refit_train_and_val(build, splits, chosen, cfg, epochs_chosen, path, use_cache=use_cache)
    return FinetuneResult(
        model=model.eval(),
        history=history,
        path=path,
        test=test,
        splits=dict(splits.parts),
        best_epoch=saver.best_epoch,
        recipe=chosen,
        seconds=time.perf_counter() - started,
        feature_seconds=max(0.0, fit_seconds - epoch_seconds) if use_cache else 0.0,  # the one-off pass
        files=files,
        skipped_files=splits.skipped,
        refit_path=refitted,
    )


def _evaluate(trainer: Trainer, model: TransferModel, samples: Any) -> Evaluation:
    """Loss and accuracy on ``samples`` through the inference engine (ONNX Runtime on a CPU: several
    times faster than the eager model); under ``torchrun`` the trainer's sharded evaluation."""
    if trainer.dist.enabled:
        return trainer.evaluate(model, samples)
    score = Ensemble([model]).evaluate(samples, progress=trainer.config.progress, device=trainer.device)
    member = score.members[0]
    return Evaluation(loss=member.log_loss, accuracy=member.accuracy, n=score.n, n_skipped=score.n_skipped)


def _augment_name(augment: bool | str | None) -> str | None:
    if augment is None:
        return None
    if augment is True:
        return "flip"
    if augment is False:
        return "none"
    return augment


def _feature_cache(recipe: Recipe, trainer: Trainer, model: TransferModel, *, explicit: bool | None) -> bool:
    """Whether to train on cached features: the recipe asks and the freeze policy allows it."""
    if not recipe.feature_cache:
        return False
    try:
        frozen_stages(resolve_freeze(recipe.freeze), model)
    except ConfigError:
        if explicit:  # asked for by the caller, not just inherited from the recipe: say why not
            raise
        log.info("feature cache off: freeze policy %r trains the backbone", recipe.freeze)
        return False
    if trainer.dist.enabled:
        log.info("feature cache off under torchrun: each rank trains on images")
        return False
    return True


def _resized(model: TransferModel, size: int | tuple[int, int]) -> TransferModel:
    """``model`` taking images of ``size`` (its normalization and interpolation kept)."""
    height, width = (size, size) if isinstance(size, int) else size
    spec = dataclasses.replace(model.spec, size=(int(height), int(width)))
    return TransferModel(model.backbone, model.head, dataclasses.replace(model.config, spec=spec))
