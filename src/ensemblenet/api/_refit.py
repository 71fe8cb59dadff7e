"""Refit on train + validation: once validation has chosen the epochs, train again on both.

Validation images chose the recipe's settings and the best epoch; afterwards they are also
labelled training data. A refit trains a fresh model (the same initial head: the same seed) on
train + validation for the chosen number of epochs, with no validation left to pick an epoch,
and saves it beside the validation-chosen model as ``<stem>.refit.pt``. Both are kept: the
validation-chosen model is what validation numbers describe (and what an ensemble's combination
is fitted on); the refit model is usually a little better on new images, and only the test split
can say by how much.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from ..data import Samples
from ..models import TransferModel, save_model
from ..training import CSVLogger, TrainConfig, Trainer, fit_with_feature_cache, is_main_process
from ._recipes import Recipe
from ._splits import Splits

__all__ = ["refit_path", "refit_train_and_val"]

log = logging.getLogger("ensemblenet.api")


def refit_path(model_path: Path) -> Path:
    """Where a refit model goes: ``X.pt`` -> ``X.refit.pt``."""
    return model_path.with_name(model_path.stem + ".refit.pt")


def train_and_val(splits: Splits) -> Samples:
    """The training and validation images as one :class:`~ensemblenet.Samples`."""
    train, val = splits["train"], splits["val"]
    return Samples(train.paths + val.paths, train.labels + val.labels, train.classes)


def refit_train_and_val(
    build: Callable[[], TransferModel],
    splits: Splits,
    recipe: Recipe,
    config: TrainConfig,
    epochs: int,
    path: Path,
    *,
    use_cache: bool,
) -> Path:
    """Train ``build()`` on train + validation for ``epochs`` epochs and save it to
    :func:`refit_path` of ``path`` (with its split and metrics files). Returns that path."""
    target = refit_path(path)
    merged = train_and_val(splits)
    torch.manual_seed(config.seed)  # the same initial head as the validation-chosen model
    model = build()
    cfg = dataclasses.replace(config, epochs=epochs)
    metrics = target.with_name(target.stem + ".metrics.csv")
    trainer = Trainer(cfg, freeze=recipe.freeze, callbacks=[CSVLogger(metrics)])
    log.info("refit on %d train + validation images for %d epochs", len(merged), epochs)
    if use_cache:
        history = fit_with_feature_cache(trainer, model, merged, None, views=recipe.feature_views)
    else:
        history = trainer.fit(model, merged, None)
    if is_main_process():
        parts = {"train": merged, **({"test": splits["test"]} if "test" in splits else {})}
        dataclasses.replace(splits, parts=parts).save(target.with_name(target.stem + ".split.json"))
        last = history.records[-1].to_dict() if history.records else {}
        save_model(model.eval(), target, metrics={**last, "refit": True})
    return target
