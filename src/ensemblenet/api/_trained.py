"""What :func:`~ensemblenet.train_ensemble` returns: the members, their split and recipe, and the
two steps after training (combine on validation, report on test) as methods."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ensemble import TTA, Ensemble, FlipChoice
from ..errors import ConfigError
from ..scoring import EnsembleReport
from ..strategies import StrategyChoice
from ..training import History
from ._recipes import Recipe
from ._splits import Splits

__all__ = ["MemberResult", "TrainedEnsemble"]

log = logging.getLogger("ensemblenet.api")


@dataclass(frozen=True)
class MemberResult:
    """One trained member: where its best model is, and how training went.

    Attributes:
        name: the member's name (from its backbone, made unique).
        path: its best checkpoint (load with :func:`~ensemblenet.load_model`, or pass all paths to
            :meth:`~ensemblenet.Ensemble.from_checkpoints`).
        history: per-epoch records.
        test: the test-split evaluation, when the data has a test split.
        device: where it trained.
        seconds: wall time of its training, process start-up excluded.
        feature_seconds: the part of it spent computing cached features.
        backbone, weights, weights_source: what it started from (``weights_source``: the file or
            release ``"DEFAULT"`` really was here).
        best_epoch: the epoch whose weights were saved.
        refit_path: the member refitted on train + validation (the recipe's ``refit``), or None.
    """

    name: str
    path: Path
    history: History
    test: Any
    device: str
    seconds: float
    feature_seconds: float = 0.0
    backbone: str = ""
    weights: str | None = None
    weights_source: str | None = None
    best_epoch: int | None = None
    refit_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data, e.g. for a report's ``members`` (``EnsembleReport.save(meta=...)``)."""
        return {
            "name": self.name,
            "backbone": self.backbone,
            "weights": self.weights,
            "weights_source": self.weights_source,
            "checkpoint": str(self.path),
            "device": self.device,
            "train_seconds": round(self.seconds, 3),
            "feature_seconds": round(self.feature_seconds, 3),
            "best_epoch": self.best_epoch,
            "refit_checkpoint": None if self.refit_path is None else str(self.refit_path),
            "history": self.history.to_dict()["records"],
            "test": None if self.test is None else self.test.to_dict(),
        }


def short_names(backbones: Iterable[str]) -> list[str]:
    """``"torchvision:mobilenet_v2"`` -> ``"mobilenet_v2"``, with ``#2``... where names repeat."""
    names = [b.rpartition(":")[2] or b for b in backbones]
    counts, seen = Counter(names), Counter[str]()
    out = []
    for name in names:
        seen[name] += 1
        out.append(f"{name}#{seen[name]}" if counts[name] > 1 else name)
    return out


class TrainedEnsemble(list[MemberResult]):
    """The members :func:`~ensemblenet.train_ensemble` trained (a list of :class:`MemberResult`),
    with the split they share and the recipe they followed.

    .. code-block:: python

       run = train_ensemble(["torchvision:mobilenet_v2", "timm:tf_efficientnet_lite0"], "images/")
       ensemble = run.ensemble()      # the recipe's combination, fitted on the validation split
       report = run.report(ensemble)  # members and ensemble on the test split
       report.save("runs/report", meta=run.meta())

    Attributes:
        splits: the train/val/test :class:`~ensemblenet.api.Splits` every member used (also in
            ``out_dir/split.json``).
        recipe: the recipe, with the overrides given to ``train_ensemble``.
        out_dir: where the models went.
        choice: how :meth:`ensemble` combined the members (None before it is called).
        flip_choice: whether :meth:`ensemble` kept flip test-time augmentation, decided on the
            validation split (None unless the recipe's ``tta`` is ``"auto"``).
    """

    def __init__(
        self, results: Iterable[MemberResult], *, splits: Splits, recipe: Recipe, out_dir: Path
    ) -> None:
        super().__init__(results)
        self.splits = splits
        self.recipe = recipe
        self.out_dir = out_dir
        self.choice: StrategyChoice | None = None
        self.flip_choice: FlipChoice | None = None
        self._tta: TTA | None = None

    @property
    def paths(self) -> list[Path]:
        """Each member's best model file."""
        return [m.path for m in self]

    @property
    def names(self) -> list[str]:
        """Short member names for reports (``"mobilenet_v2"``)."""
        return short_names(m.backbone or m.name for m in self)

    @property
    def histories(self) -> dict[str, History]:
        """Training histories by :attr:`names` (for learning curves)."""
        return dict(zip(self.names, (m.history for m in self), strict=True))

    def ensemble(
        self, combine: str | None = None, *, seed: int = 0, tta: str | None = None, **kwargs: Any
    ) -> Ensemble:
        """The members as an :class:`~ensemblenet.Ensemble`, combined as the recipe says (or as
        ``combine`` says: ``"mean"``, ``"weighted"``, ``"calibrated"`` or ``"auto"``), fitted on the
        validation split (:meth:`Ensemble.fit_combination <ensemblenet.Ensemble.fit_combination>`).
        Flip test-time augmentation follows the recipe's ``tta`` (or ``tta``: ``"none"``, ``"flip"``,
        ``"auto"``: decided on the validation split, see :attr:`Ensemble.flip_choice
        <ensemblenet.Ensemble.flip_choice>`). The ensemble keeps its members' predictions
        (:meth:`~ensemblenet.Ensemble.reuse_predictions`), so the report and a distillation on the
        same test split run each member over it once.
        Keyword arguments (``progress``, ``device``, ``batch_size``) go to the members' forward passes.
        """
        ensemble = Ensemble.from_checkpoints(self.paths).reuse_predictions()
        tta = tta or self.recipe.tta
        self.choice = ensemble.fit_combination(
            self.splits["val"],
            combine or self.recipe.combine,
            seed=seed,
            tta=None if tta == "none" else tta,
            **kwargs,
        )
        self.flip_choice = ensemble.flip_choice
        self._tta = ensemble.tta
        log.info("%s", self.choice)
        if self.flip_choice is not None:
            log.info("%s", self.flip_choice)
        return ensemble

    def refit_ensemble(self) -> Ensemble:
        """The members refitted on train + validation (the recipe's ``refit``), combined exactly as
        :meth:`ensemble` combined the validation-chosen members (the same fitted strategy and
        test-time augmentation: validation has no unseen images left to fit a combination on).

        Raises:
            ConfigError: :meth:`ensemble` was not called yet, or the members were not refitted.
        """
        if self.choice is None:
            raise ConfigError(
                "call ensemble() first: the combination of refitted members is the one fitted on the "
                "validation predictions of the members trained on the training split alone"
            )
        missing = [m.name for m in self if m.refit_path is None]
        if missing:
            raise ConfigError(
                f"members {missing} were not refitted on train + validation; train with a recipe with "
                "refit=True (e.g. train_ensemble(..., refit=True))"
            )
        strategy = copy.deepcopy(self.choice.strategy)
        refitted = Ensemble.from_checkpoints(
            [m.refit_path for m in self if m.refit_path is not None], strategy
        )
        refitted.tta = self._tta
        return refitted.reuse_predictions()

    def report(self, ensemble: Ensemble | None = None, data: Any = None, **kwargs: Any) -> EnsembleReport:
        """:meth:`Ensemble.report <ensemblenet.Ensemble.report>` on the test split (or ``data``), with a
        row for every candidate combination fitted on validation, the members' short names and their
        learning curves.

        Raises:
            ConfigError: no test split and no ``data``.
        """
        if ensemble is None:
            ensemble = self.ensemble(progress=kwargs.get("progress", True))
        if data is None:
            if "test" not in self.splits:
                raise ConfigError(
                    "these members have no test split: pass data= (a labelled folder or Samples)"
                )
            data = self.splits["test"]
        fitted = self.choice.fitted if self.choice is not None else {}
        strategies = {f"ensemble ({name})": strategy for name, strategy in fitted.items()}
        return ensemble.report(
            data, strategies=strategies, histories=self.histories, names=self.names, **kwargs
        )

    def meta(self) -> dict[str, Any]:
        """Plain data about the run for :meth:`EnsembleReport.save <ensemblenet.EnsembleReport.save>`:
        split sizes, recipe, members (training times, histories, starting weights), the choice of
        combination and the seed."""
        return {
            "split": {name: len(part) for name, part in self.splits.parts.items()},
            "recipe": self.recipe.to_dict(),
            "recipe_summary": str(self.recipe),
            "members": [m.to_dict() for m in self],
            "choice": None if self.choice is None else self.choice.to_dict(),
            "fitted": {} if self.choice is None else {k: repr(v) for k, v in self.choice.fitted.items()},
            "flip_tta": None if self.flip_choice is None else self.flip_choice.to_dict(),
            "seed": self.splits.seed,
        }
