"""Frozen-feature cache: compute a frozen backbone prefix once per image, train only the rest.

When a freeze policy keeps a *prefix* of the backbone frozen **in eval mode** (``head_only``: the
whole backbone; ``freeze_stages``: its first ``k`` stages), that prefix is a pure function of the
image: its weights do not change and its BatchNorm layers use their running statistics, which do
not change either. So its output can be computed once and reused every epoch, and an epoch costs
only the trainable rest. (fastai's old ``precompute=True`` cached features while its BatchNorm
layers were meant to be training; here the policy and the cache agree by construction, because the
cache asks the policy which prefix is frozen.)

Stages are defined per backbone family in :mod:`ensemblenet.models` (``split_backbone``).

>>> trainer = Trainer(TrainConfig(epochs=5), freeze="head_only")  # doctest: +SKIP
>>> history = fit_with_feature_cache(trainer, model, train, val)  # doctest: +SKIP

With ``augment=True`` (``"flip"``) the features of both the image and its left-right mirror are
cached (twice the one-off cost), and each epoch picks one per image with the same coin as the
image path. With ``"light"`` or ``"strong"`` a fixed number of augmented views per image
(``views``, drawn once with a seeded generator) are cached beside the plain one, and each epoch
picks one of them per image at random: ``1 + views`` times the one-off cost, then free epochs.
The cache is kept in memory, ``float16`` by default (half the memory; logits agree with the uncached
path to about 1e-3, see ``tests/test_features.py``); pass ``dtype=torch.float32`` for agreement
to float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import Samples, make_loader, prefetch, resolve_augment
from ..engine import (
    Engine,
    EngineLike,
    OnnxRuntimeEngine,
    Runner,
    TorchEngine,
    prefix_runner,
    resolve_engine,
)
from ..errors import ConfigError
from ..models import FreezePolicy, FreezeStages, HeadOnly, TransferModel, split_backbone
from ._distillation import pack_targets
from ._feature_store import STORED_VIEWS, FeatureStore, prefix_digest
from ._features import FeatureCache
from ._history import History
from ._trainer import Trainer

__all__ = ["DEFAULT_VIEWS", "FeatureCache", "compute_features", "fit_with_feature_cache", "frozen_stages"]

#: Augmented views cached per image for ``"light"``/``"strong"`` when ``views`` is not given.
DEFAULT_VIEWS = 4

log = logging.getLogger("ensemblenet.training")


def frozen_stages(policy: FreezePolicy, model: TransferModel) -> int | None:
    """How much of the backbone ``policy`` keeps frozen in eval mode for the whole run: a stage count,
    or None for the whole backbone (``head_only``).

    Raises:
        ConfigError: for policies that train (or update statistics of) the whole backbone.
    """
    if isinstance(policy, HeadOnly):
        return None
    if isinstance(policy, FreezeStages):
        split_backbone(model.backbone, policy.stages)  # validates the count for this backbone
        return policy.stages
    raise ConfigError(
        f"the feature cache needs a freeze policy that keeps a backbone prefix frozen in eval mode "
        f"('head_only' or FreezeStages(k) / 'freeze_stages'); got {type(policy).__name__}, which trains or "
        "updates BatchNorm statistics in every stage, so no backbone output stays fixed"
    )


def compute_features(
    model: TransferModel,
    samples: Any,
    stages: int | None,
    *,
    dtype: torch.dtype = torch.float16,
    flips: bool = False,
    batch_size: int = 64,
    cache_dir: str | None = None,
    device: torch.device | str = "cpu",
    augment: str | None = None,
    views: int = 0,
    seed: int = 0,
    engine: EngineLike = "auto",
    store: FeatureStore | None = None,
) -> FeatureCache:
    """Run the frozen prefix (``stages``; None = whole backbone) in eval mode over ``samples`` once.

    ``flips`` adds the mirrored images' features; ``augment`` (a preset name such as ``"light"``)
    with ``views`` adds that many augmented views per image, drawn from a generator seeded with
    ``seed`` (the same views for the same seed).

    ``store`` (a :class:`~ensemblenet.training.FeatureStore`) reads the plain and mirrored
    features of images it already holds for this exact prefix and adds the ones computed here;
    the result is the same cache, row for row.

    ``engine`` runs the prefix (see :mod:`ensemblenet.engine`): ``"auto"`` is ONNX Runtime on a
    CPU when it is installed, else PyTorch. ``"onnxruntime-int8"`` needs an engine object with
    ``calibration=`` training images here (:func:`fit_with_feature_cache` passes its training
    images itself).
    """
    chosen = resolve_engine(engine, device=device)
    was_training = model.training
    # Outside inference_mode: converting parameters inside it would turn them into inference
    # tensors, and the ONNX exporter cannot trace them.
    model.eval().to(device)
    if isinstance(chosen, TorchEngine):
        model.to(memory_format=torch.channels_last)  # same arithmetic, faster eager convolutions on CPU
    runner = prefix_runner(model, stages, chosen).prepare()  # export or find the graph outside inference_mode
    # Randomly augmented views and int8 calibration depend on more than one image: never stored.
    storable = isinstance(samples, Samples) and not getattr(chosen, "int8", False)
    with torch.inference_mode():
        if store is not None and storable:
            cache = store.read_or_compute(
                prefix_digest(model, stages, dtype, chosen.name),
                samples,
                STORED_VIEWS[: 2 if flips else 1],
                lambda missing, require: _run_prefix(
                    runner, model, missing, dtype, flips, batch_size, cache_dir, device, chosen,
                    require_images=require,
                ),
            )  # fmt: skip
        else:
            cache = _run_prefix(runner, model, samples, dtype, flips, batch_size, cache_dir, device, chosen)
        if augment is not None and views > 0:
            extra = [
                _augmented_view(
                    runner, model, samples, dtype, batch_size, cache_dir, device, chosen, augment, seed, v
                )
                for v in range(1, views + 1)
            ]
            for view in extra:
                if not torch.equal(view.indices, cache.indices):  # the same files, in the same order
                    raise ConfigError("an augmented view read other images than the plain one")
            cache.features = torch.cat([cache.features, *(v.features for v in extra)])
    model.train(was_training)
    return cache


def _augmented_view(
    runner: Runner,
    model: TransferModel,
    samples: Any,
    dtype: torch.dtype,
    batch_size: int,
    cache_dir: str | None,
    device: torch.device | str,
    engine: Engine,
    augment: str,
    seed: int,
    view: int,
) -> FeatureCache:
    # Drawn from the global generator in this process (num_workers=0), reseeded per view inside
    # fork_rng, so the caller's random state is untouched and the views depend on (seed, view) only.
    # (With prefetch the draws happen on the decoding thread, still one after another in order.)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + 7919 * view)
        return _run_prefix(
            runner, model, samples, dtype, False, batch_size, cache_dir, device, engine, augment
        )


def _run_prefix(
    runner: Runner,
    model: TransferModel,
    samples: Any,
    dtype: torch.dtype,
    flips: bool,
    batch_size: int,
    cache_dir: str | None,
    device: torch.device | str,
    engine: Engine,
    augment: str | None = None,
    *,
    require_images: bool = True,
) -> FeatureCache:
    chunks: list[list[torch.Tensor]] = [[] for _ in range(2 if flips else 1)]
    labels, indices, skipped = [], [], []
    loader = make_loader(samples, model.spec, batch_size=batch_size, cache_dir=cache_dir, augment=augment)
    # The next batch is decoded on a second thread while the engine runs this one (the
    # performance page measures how much of the decode that hides).
    layout = torch.channels_last if isinstance(engine, TorchEngine) else torch.contiguous_format
    for batch in prefetch(loader) if engine.prefetch else loader:
        skipped += batch.skipped
        if len(batch) == 0:
            continue
        images = batch.images[0].to(device, memory_format=layout)
        for f, chunk in enumerate(chunks):
            x = images.flip(-1) if f == 1 else images
            chunk.append(runner(x).to("cpu", dtype))
        labels.append(batch.labels)
        indices.append(batch.indices)
    if not labels:
        if require_images:
            raise ConfigError(
                f"none of the {len(samples)} images could be decoded, so there are no features to cache"
            )
        return FeatureCache(torch.empty(len(chunks), 0), torch.empty(0, dtype=torch.int64),
                            torch.empty(0, dtype=torch.int64), skipped)  # fmt: skip
    return FeatureCache(
        features=torch.stack([torch.cat(chunk) for chunk in chunks]),
        labels=torch.cat(labels),
        indices=torch.cat(indices),
        skipped=skipped,
    )


class _FeatureDataset(Dataset[tuple[torch.Tensor, Any]]):
    def __init__(
        self,
        cache: FeatureCache,
        augment: bool,
        samples: Samples | None = None,
        targets: torch.Tensor | None = None,
    ) -> None:
        self.cache, self.views = cache, cache.features.shape[0] if augment else 1
        self.samples = samples  # the images behind the features: a resumed run checks they are the same
        self.targets = targets  # one row per cached image (e.g. packed distillation targets)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Any]:
        if self.views == 2:  # the same coin as the image path (one torch.rand), so flips follow the seed
            view = int(bool(torch.rand(()) < 0.5))
        else:  # one of the cached views (the plain one included), uniformly
            view = int(torch.randint(self.views, ())) if self.views > 2 else 0
        target = self.targets[i] if self.targets is not None else int(self.cache.labels[i])
        return self.cache.features[view, i], target


def _cached_targets(cache: FeatureCache, soft_targets: torch.Tensor, n_samples: int | None) -> torch.Tensor:
    """``soft_targets`` (one row per training sample) as packed targets, one row per cached image.
    ``n_samples``: the number of training samples, when known (None: ``train`` was a cache)."""
    rows = soft_targets.shape[0] if soft_targets.dim() == 2 else -1
    fits = rows == n_samples if n_samples is not None else rows > int(cache.indices.max())
    if not fits:
        expected = n_samples if n_samples is not None else f">{int(cache.indices.max())}"
        raise ConfigError(
            f"soft_targets must have one row of class probabilities per training sample, shape "
            f"({expected}, C); got {tuple(soft_targets.shape)}"
        )
    return pack_targets(soft_targets[cache.indices], cache.labels)


@contextlib.contextmanager
def _forward_from_features(model: TransferModel, rest: nn.Module) -> Iterator[None]:
    # An instance attribute shadows TransferModel.forward for this fit only: the model keeps its
    # modules and state_dict keys, so checkpoint callbacks save the real model mid-training.
    model.forward = lambda features: model.head(rest(features.float()))  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        del model.forward


def _calibrated_on(engine: Engine, train: Any) -> Engine:
    """int8 without calibration images calibrates on the training images (and serves val too)."""
    if isinstance(engine, OnnxRuntimeEngine) and engine.int8 and engine.calibration is None:
        return dataclasses.replace(engine, calibration=train) if isinstance(train, Samples) else engine
    return engine


def fit_with_feature_cache(
    trainer: Trainer,
    model: TransferModel,
    train: Any,
    val: Any = None,
    *,
    dtype: torch.dtype = torch.float16,
    views: int | None = None,
    resume: str | os.PathLike[str] | None = None,
    engine: EngineLike = "auto",
    soft_targets: torch.Tensor | None = None,
) -> History:
    """``trainer.fit(model, train, val)``, with the frozen prefix computed once instead of every epoch.

    ``train`` and ``val`` are :class:`~ensemblenet.Samples`, or :class:`FeatureCache` objects from
    :func:`compute_features` with the same stage count (to reuse features across runs, e.g. a
    learning-rate sweep; ``dtype`` is then ignored). The trainer's policy must keep a prefix
    frozen in eval mode (``head_only`` or ``freeze_stages``; see :func:`frozen_stages`). With
    ``trainer.config.augment`` ``"flip"`` (or True) the features of mirrored images are cached too;
    with ``"light"`` or ``"strong"``, ``views`` augmented views per image (default
    :data:`DEFAULT_VIEWS`). Training runs through ``trainer.fit`` (same optimizer, schedule,
    seeding, callbacks, ``resume``); during it ``model``'s forward takes cached features,
    afterwards it takes images again.

    ``engine`` computes the features (see :mod:`ensemblenet.engine`; default ``"auto"``: ONNX
    Runtime on a CPU when installed). With ``trainer.config.feature_store`` set, features of
    images already computed for the same prefix by an earlier run are read from that folder
    (:class:`~ensemblenet.training.FeatureStore`). With ``"onnxruntime-int8"`` the int8 prefix is calibrated
    on ``train`` (when it is a Samples) and used for ``val`` too.

    ``soft_targets`` (``(len(train), C)`` probabilities, rows in ``train``'s sample order, e.g. a
    teacher ensemble's :meth:`~ensemblenet.Ensemble.predict_proba`) replace the labels as training
    targets: each batch then carries :func:`pack_targets` rows (probabilities and label), which the
    trainer's ``criterion`` must read (e.g. :class:`DistillationLoss`; :func:`ensemblenet.distill`
    sets this up). Every view of an image gets its image's probabilities. Validation still scores
    cross-entropy against the labels.
    """
    kinds = (Samples, FeatureCache)
    if not isinstance(train, kinds) or not (val is None or isinstance(val, kinds)):
        raise ConfigError(
            "fit_with_feature_cache needs train (and val) as ensemblenet.Samples or FeatureCache, "
            f"not {type(train).__name__} / {type(val).__name__}"
        )
    if soft_targets is not None and trainer.criterion is None:
        raise ConfigError(
            "soft_targets need a trainer whose criterion reads packed (probabilities, label) targets, "
            "e.g. Trainer(..., criterion=DistillationLoss(temperature=2.0)); the default cross-entropy "
            "reads labels only"
        )
    stages = frozen_stages(trainer.policy, model)
    cfg = trainer.config
    device = trainer.device
    _, rest = split_backbone(model.backbone, stages)
    augmentation = resolve_augment(cfg.augment)
    if views is not None and (isinstance(views, bool) or not isinstance(views, int) or views < 0):
        raise ConfigError(f"views must be an int >= 0 (augmented feature views per image), got {views!r}")
    chosen = _calibrated_on(resolve_engine(engine, device=device), train)
    store = FeatureStore(cfg.feature_store) if cfg.feature_store else None
    if isinstance(train, FeatureCache):
        train_cache = train
    elif augmentation is None or augmentation.only_flips:
        train_cache = compute_features(
            model, train, stages, dtype=dtype, flips=augmentation is not None, cache_dir=cfg.cache_dir,
            device=device, engine=chosen, store=store,
        )  # fmt: skip
    else:
        train_cache = compute_features(
            model, train, stages, dtype=dtype, cache_dir=cfg.cache_dir, device=device,
            augment=augmentation.name, views=DEFAULT_VIEWS if views is None else views, seed=cfg.seed,
            engine=chosen, store=store,
        )  # fmt: skip
    log.info(
        "cached features %s of %d training images", tuple(train_cache.features.shape[2:]), len(train_cache)
    )
    generator = torch.Generator().manual_seed(cfg.seed)  # re-seeded per epoch by the trainer
    n_train = len(train) if isinstance(train, Samples) else None
    targets = None if soft_targets is None else _cached_targets(train_cache, soft_targets, n_train)
    train_loader = DataLoader(
        _FeatureDataset(
            train_cache, augmentation is not None, train if isinstance(train, Samples) else None, targets
        ),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=generator,
    )
    val_loader = None
    if val is not None:
        val_cache = (
            val
            if isinstance(val, FeatureCache)
            else compute_features(
                model,
                val,
                stages,
                dtype=dtype,
                cache_dir=cfg.cache_dir,
                device=device,
                engine=chosen,
                store=store,
            )
        )
        val_loader = DataLoader(
            _FeatureDataset(val_cache, False, val if isinstance(val, Samples) else None),
            batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        )
    with _forward_from_features(model, rest):
        history: History = trainer.fit(model, train_loader, val_loader, resume=resume)
    return history
