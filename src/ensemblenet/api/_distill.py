"""``distill``: an ensemble's knowledge in one model, at one model's inference cost.

The teacher :class:`~ensemblenet.Ensemble` labels every training image with its (combined, TTA'd)
probabilities once; the student backbone's frozen prefix is run once per image and view (the
frozen-feature cache); then only the student's trainable part (its head, or its last stages with
``freeze=FreezeStages(k)``) learns from the teacher's soft probabilities with a
:class:`~ensemblenet.training.DistillationLoss`. The best epoch by validation log-loss (against the
true labels) is saved as an ordinary model file: :func:`~ensemblenet.load_model`, ``ensemblenet
predict`` and ``Ensemble.from_checkpoints`` read it like any other.

>>> result = distill("runs/ensemble.ens", "../shared/data/dogs-vs-cats-200px")  # doctest: +SKIP
>>> print(result.table())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..ensemble import Ensemble, combine_probas, load_ensemble, readable_rows
from ..errors import ClassMismatchError, ConfigError
from ..models import FreezePolicy, Head, TransferModel, create_model, save_model
from ..scoring import ModelScore, accuracy, mcnemar_exact, score_model
from ..strategies import strategy_name
from ..training import (
    CSVLogger,
    DistillationLoss,
    EarlyStopping,
    History,
    ModelCheckpoint,
    ProgressPrinter,
    TrainConfig,
    Trainer,
    fit_with_feature_cache,
    is_main_process,
    resolve_device,
)
from ._finetune import file_stem, run_files
from ._recipes import Recipe, get_recipe
from ._splits import resolve_splits

__all__ = ["TIMED_IMAGES", "DistillResult", "distill"]

#: Images of the scored split on which :func:`distill` times the ensemble and the student: enough for
#: a steady rate, few enough that timing does not repeat a whole test pass per model.
TIMED_IMAGES = 500

log = logging.getLogger("ensemblenet")


@dataclass
class DistillResult:
    """What :func:`distill` returns.

    Attributes:
        model: the student, best epoch's weights, in eval mode.
        history: per-epoch training loss (distillation loss) and validation loss/accuracy (true labels).
        path: the saved student.
        best_epoch: the epoch whose weights were saved (None: no epoch improved).
        scored_on: the split the scores are on (``"test"`` when there is one, else ``"val"``).
        scores: on that split: the ensemble, each member, then the student.
        agreement: share of its images where the student picks the ensemble's class.
        mcnemar_p: exact McNemar p-value, student vs ensemble, on the same images.
        seconds: wall-clock seconds to predict the same :data:`TIMED_IMAGES` images of that split
            (all of it when smaller), ``{"ensemble": ..., "student": ...}``: decoding included,
            the ensemble with its test-time augmentation, measured one after the other in this
            process after an untimed warm-up on 8 images (one-off graph exports are not counted).
        timed: how many images :attr:`seconds` timed.
        n: images scored.
        splits: the Samples used, by name.
    """

    model: TransferModel
    history: History
    path: Path
    best_epoch: int | None = None
    scored_on: str | None = None
    scores: tuple[ModelScore, ...] = ()
    agreement: float | None = None
    mcnemar_p: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    timed: int = 0
    n: int = 0
    splits: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float | None:
        """Ensemble seconds / student seconds on the scored split."""
        if not self.seconds.get("student"):
            return None
        return self.seconds["ensemble"] / self.seconds["student"]

    def table(self) -> str:
        """The scores as a Markdown table, with the agreement and the speed-up below it."""
        if not self.scores:
            return "(no validation or test split was scored)"
        lines = [
            f"| model ({self.scored_on}, n={self.n}) | kind | accuracy | log-loss |",
            "|---|---|---:|---:|",
        ]
        lines += [f"| {s.name} | {s.kind} | {s.accuracy:.4f} | {s.log_loss:.4f} |" for s in self.scores]
        notes = [f"student agrees with the ensemble on {self.agreement:.4f} of the images"]
        if self.mcnemar_p is not None:
            notes.append(f"McNemar p (student vs ensemble) = {self.mcnemar_p:.3g}")
        if self.speedup is not None:
            notes.append(
                f"prediction time of {self.timed} images {self.seconds['ensemble']:.1f} s (ensemble) vs "
                f"{self.seconds['student']:.1f} s (student): {self.speedup:.2f}x"
            )
        return "\n".join(lines) + "\n\n" + "; ".join(notes)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``report.json``-style output (no model, no Samples)."""
        return {
            "path": str(self.path),
            "best_epoch": self.best_epoch,
            "scored_on": self.scored_on,
            "n": self.n,
            "scores": [s.to_dict() for s in self.scores],
            "agreement": self.agreement,
            "mcnemar_p": self.mcnemar_p,
            "seconds": dict(self.seconds),
            "timed_images": self.timed,
            "speedup": self.speedup,
            "history": [r.to_dict() for r in self.history.records],
        }


def default_student_path(student: str) -> Path:
    """Where :func:`distill` saves when not told: ``runs/<student>.student.pt``."""
    return Path("runs") / (file_stem(student) + ".student.pt")


def distill(
    teacher: Ensemble | str | os.PathLike[str],
    data: Any,
    *,
    student: str = "timm:tf_efficientnet_lite0",
    weights: str | os.PathLike[str] | None = "DEFAULT",
    recipe: str | Recipe | None = None,
    head: str | Head | Mapping[str, Any] | None = None,
    freeze: str | FreezePolicy = "head_only",
    temperature: float = 2.0,
    hard_weight: float = 0.0,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    weight_decay: float | None = None,
    flips: bool = True,
    patience: int | None = 3,
    monitor: str = "val_loss",
    split: Sequence[float] = (),
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    feature_store: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: str = "auto",
    trust_code: bool = False,
) -> DistillResult:
    """Train one student model on ``teacher``'s probabilities over ``data``'s training images.

    Args:
        teacher: an :class:`~ensemblenet.Ensemble` (fitted, if its strategy needs fitting) or the
            path of an ensemble file.
        data: the members' :class:`~ensemblenet.api.Splits` (``train_ensemble(...).splits``, or
            :func:`~ensemblenet.data.load_split` of their ``split.json``), so that the student learns
            only from the members' training images; or anything :func:`~ensemblenet.finetune` takes
            (a folder cut with ``split`` and ``seed``: use the members' own).
        student: the student's backbone, e.g. ``"timm:tf_efficientnet_lite0"``.
        weights: the student's starting weights, as in :func:`~ensemblenet.finetune`.
        recipe: where the student's head and training settings come from (its head, optimizer,
            learning rate, batch size, schedule, weight decay, epochs with the recipe's floor on
            optimizer steps; not its freeze policy, which must keep a prefix cached): a name or a
            :class:`~ensemblenet.Recipe`; default ``"fast"`` (MLP head, Adam 1e-3, 10 epochs,
            cosine). Give the members' recipe (``"strong"``: a linear head after dropout 0.2,
            AdamW with weight decay 0.01) for a student that does not memorize cached features.
        head, epochs, lr, batch_size, weight_decay: override the recipe's (None keeps it).
        freeze: what stays frozen; must keep a backbone prefix frozen in eval mode (``"head_only"``,
            or ``FreezeStages(k)`` to adapt the last stages too), since the prefix is cached.
        temperature, hard_weight: of the :class:`~ensemblenet.training.DistillationLoss`.
        seed, progress: the training seed, and progress bars and epoch lines. ``config``: a full
            :class:`~ensemblenet.TrainConfig` to start from instead of the recipe's (its optimizer,
            schedule, weight decay, device...); ``epochs``, ``lr``, ``batch_size``, ``seed`` and
            ``flips`` given here are applied on top of it.
        flips: cache the features of mirrored images too and train on a random view per image
            (each view learns its image's teacher probabilities).
        feature_store: a folder that keeps the student's frozen features between runs
            (:class:`~ensemblenet.training.FeatureStore`); a student whose backbone and weights
            are a head-only member's reads that member's features when it used the same folder.
        patience: stop when ``monitor`` has not improved for this many epochs (None: never).
        monitor: which epoch is kept: ``"val_loss"`` (log-loss against the true labels on the
            validation split: the student that classifies best; the default) or ``"train_loss"``
            (the distillation loss: the student closest to the teacher).
        out: where to save the student; default ``runs/<student>.student.pt``.
        device: where to train and score (``"auto"``: CUDA when present).
        trust_code: passed to :func:`~ensemblenet.load_ensemble` when ``teacher`` is a path.

    Returns:
        A :class:`DistillResult`: the student, its history and path, and, on the test split (or the
        validation split when there is no test split), the scores of the ensemble, its members and
        the student, their agreement, and the prediction time of each.
    """
    if monitor not in ("val_loss", "train_loss"):  # before any image is read
        raise ConfigError(f"monitor must be 'val_loss' or 'train_loss', got {monitor!r}")
    if not isinstance(teacher, Ensemble):
        teacher = load_ensemble(teacher, trust_code=trust_code)
    chosen = get_recipe(recipe).replace(head=head, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
    base = config or chosen.train_config(progress=progress, device=device)
    given: dict[str, Any] = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "weight_decay": weight_decay,
    }
    cfg = dataclasses.replace(
        base, **{k: v for k, v in given.items() if v is not None}, seed=seed, augment=flips
    )
    if feature_store is not None:
        cfg = dataclasses.replace(cfg, feature_store=str(feature_store))
    parts = resolve_splits(data, split=split, seed=cfg.seed)
    if epochs is None and config is None:  # the recipe's floor on optimizer steps, as finetune applies it
        cfg = dataclasses.replace(cfg, epochs=chosen.epochs_for(len(parts["train"])))
    if parts["train"].classes != teacher.classes:
        raise ClassMismatchError(
            f"the data's classes {list(parts['train'].classes)} differ from the teacher ensemble's "
            f"{list(teacher.classes)}; distil on data with the classes the ensemble was trained on"
        )
    log.info("teacher probabilities for %d training images", len(parts["train"]))
    # Without the teacher's test-time augmentation: the student sees mirrored images as its own
    # augmentation (flips), and TTA would double the teacher's pass over the largest split.
    tta, teacher.tta = teacher.tta, None
    try:
        soft = teacher.predict_proba(parts["train"], progress=progress, device=resolve_device(cfg.device))
    finally:
        teacher.tta = tta
    soft = soft.float()
    if not torch.isfinite(soft).any():
        raise ConfigError("the teacher could not read any training image, so there is nothing to learn from")
    torch.manual_seed(cfg.seed)  # the new head's initial weights
    model = create_model(student, teacher.classes, head=chosen.head, weights=weights)
    path = Path(out) if out is not None else default_student_path(student)
    files = run_files(path)
    if is_main_process():
        parts.save(files["split"])  # beside the student, like every model: its held-out images
    saver = ModelCheckpoint(path, monitor=monitor)
    stopper = [EarlyStopping(monitor=monitor, patience=patience)] if patience is not None else []
    printer = [ProgressPrinter(label=f"student {student}")] if cfg.progress else []
    trainer = Trainer(
        cfg,
        freeze=freeze,
        callbacks=[saver, CSVLogger(files["metrics"]), *stopper, *printer],
        criterion=DistillationLoss(temperature=temperature, hard_weight=hard_weight),
    )
    history = fit_with_feature_cache(trainer, model, parts["train"], parts.get("val"), soft_targets=soft)
    if saver.best_epoch is None and is_main_process():
        save_model(model, path, metrics=history.records[-1].to_dict() if history.records else {})
    model.eval()
    result = DistillResult(
        model=model, history=history, path=path, best_epoch=saver.best_epoch, splits=dict(parts.parts)
    )
    scored_on = "test" if "test" in parts else "val" if "val" in parts else None
    if scored_on is not None:
        _score(result, teacher, parts[scored_on], scored_on, progress, trainer.device)
    return result


def _score(
    result: DistillResult, teacher: Ensemble, samples: Any, name: str, progress: bool, device: torch.device
) -> None:
    """Fill ``result``'s scores on ``samples``: ensemble, members, student, agreement, time."""
    student = Ensemble([result.model])
    timed = samples.limit(TIMED_IMAGES, seed=0) if len(samples) > TIMED_IMAGES else samples
    if len(samples) > 8:
        # Untimed warm-up: a first call may export and load engine graphs (seconds, once per model),
        # which would be charged to whichever side runs first otherwise.
        warm = samples.limit(8, seed=1)
        teacher.member_probas(warm, progress=False, device=device)
        student.member_probas(warm, progress=False, device=device)
    started = time.perf_counter()
    combine_probas(teacher.strategy, teacher.member_probas(timed, progress=False, device=device, reuse=False))
    ensemble_seconds = time.perf_counter() - started
    started = time.perf_counter()
    student.member_probas(timed, progress=False, device=device)
    student_seconds = time.perf_counter() - started
    # The scores on the whole split (a teacher that keeps its predictions has them from its report).
    member_probs = teacher.member_probas(samples, progress=progress, device=device)
    ensemble_probs = combine_probas(teacher.strategy, member_probs)
    student_probs = student.member_probas(samples, progress=progress, device=device)
    valid = readable_rows(member_probs) & readable_rows(student_probs)  # images all of them read
    labels = torch.as_tensor(samples.labels)[valid]
    ensemble_probs, member_probs, student_probs = (
        ensemble_probs[valid],
        member_probs[:, valid],
        student_probs[0, valid],
    )
    scores = [
        score_model(f"ensemble ({strategy_name(teacher.strategy)})", ensemble_probs, labels, kind="ensemble")
    ]
    scores += [
        score_model(member, probs, labels)
        for member, probs in zip(teacher.member_names, member_probs, strict=True)
    ]
    scores.append(
        score_model(f"student {result.model.config.backbone}", student_probs, labels, kind="student")
    )
    ensemble_right = ensemble_probs.argmax(1) == labels
    student_right = student_probs.argmax(1) == labels
    result.scored_on, result.scores, result.n = name, tuple(scores), int(labels.numel())
    result.agreement = accuracy(student_probs, ensemble_probs.argmax(1))
    result.mcnemar_p = mcnemar_exact(student_right, ensemble_right).p_value
    result.seconds = {"ensemble": ensemble_seconds, "student": student_seconds}
    result.timed = len(timed)
    log.info("distillation on %s:\n%s", name, result.table())
