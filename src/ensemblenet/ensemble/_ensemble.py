"""``Ensemble``: several fine-tuned models, one prediction.

Members may use different backbones with different input sizes and normalization: images are
decoded once per batch, resized once per distinct view (size + interpolation), and each member
normalizes its own input. A strategy (see :mod:`ensemblenet.strategies`) turns the members'
probabilities into the ensemble's.

>>> from ensemblenet import Ensemble
>>> ensemble = Ensemble.from_checkpoints(["resnet18.pt", "resnet34.pt"])  # doctest: +SKIP
>>> print(ensemble.evaluate("../shared/data/dogs-vs-cats-200px"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import load_image
from ..engine import EngineLike
from ..errors import ClassMismatchError, ConfigError
from ..models import TransferModel, load_model
from ..scoring import Curves, EnsembleEvaluation, EnsembleReport, build_report, score_model
from ..strategies import (
    COMBINATIONS,
    DEFAULT_CANDIDATES,
    CalibratedStrategy,
    Strategy,
    StrategyChoice,
    StrategyLike,
    choose_strategy,
    fittable_strategy,
    resolve_strategy,
    strategy_name,
)
from ._combination import FlipChoice, choose_combination, fit_combination_and_flip
from ._files import read_ensemble, save_ensemble
from ._inputs import Data, labelled_probas, run_members, to_inputs
from ._members import check_fitted, check_members, combine_probas
from ._memo import ProbaMemo
from ._onnx import export_onnx
from ._predictions import Predictions
from ._tta import TTA, resolve_tta

__all__ = ["Ensemble", "load_ensemble"]

logger = logging.getLogger("ensemblenet.ensemble")


class Ensemble:
    """Combine fine-tuned :class:`~ensemblenet.TransferModel` members with a strategy.

    Args:
        members: models predicting the same class names in the same order.
        strategy: ``"mean"`` (soft vote), ``"vote"`` (hard vote), ``"weighted"``, a registered
            name, a strategy object or a function ``probs (M, N, C) -> probs (N, C)``.
        weights: one weight per member for a weighted soft vote; allowed with ``"weighted"`` and
            with the default ``"mean"`` (a weighted mean is then what is asked for).
        tta: test-time augmentation for every member: None (off), ``"flip"``, ``"flip+crops"``
            or a :class:`~ensemblenet.ensemble.TTA` (each multiplies the forward passes; see
            :mod:`ensemblenet.ensemble`).
        engine: what runs the members when predicting, evaluating, fitting and reporting (see
            :mod:`ensemblenet.engine`): ``"auto"`` (ONNX Runtime on a CPU when installed, else
            PyTorch), ``"torch"``, ``"onnxruntime"``, or an engine object such as
            ``OnnxRuntimeEngine(int8=True, calibration=train)``. The :attr:`engine` attribute
            can be changed later; each call may also pass ``engine=``.

    Raises:
        ClassMismatchError: members whose class names or their order differ.
        ConfigError: no members, non-model members, or weights with a strategy that takes none.
    """

    def __init__(
        self,
        members: Sequence[TransferModel],
        strategy: StrategyLike = "mean",
        weights: Sequence[float] | None = None,
        tta: TTA | bool | str | None = None,
        engine: EngineLike = "auto",
    ) -> None:
        self.tta: TTA | None = resolve_tta(tta)
        self.engine: EngineLike = engine
        self.members: tuple[TransferModel, ...] = tuple(members)
        self.classes: tuple[str, ...] = check_members(self.members)
        self.strategy: Strategy = resolve_strategy(strategy, weights=weights, members=len(self.members))
        #: flip TTA decided on validation by ``fit_combination(..., tta="auto")`` (None: not decided)
        self.flip_choice: FlipChoice | None = None
        self._memo: ProbaMemo | None = None

    def reuse_predictions(self, on: bool = True) -> Ensemble:
        """Keep every member's probabilities per list of image files and answer a repeated call
        (the same files, views, engine and weights) from memory: combining on validation, then
        reporting and distilling on test, run each member once per split. Off by default; files
        must not change on disk meanwhile (see :class:`~ensemblenet.ensemble.ProbaMemo`).
        Returns the ensemble."""
        self._memo = ProbaMemo() if on else None
        return self

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        strategy: StrategyLike = "mean",
        weights: Sequence[float] | None = None,
        map_location: str | torch.device = "cpu",
        trust_code: bool = False,
    ) -> Ensemble:
        """Load each model file with :func:`~ensemblenet.load_model` and ensemble them
        (``trust_code`` as there)."""
        if isinstance(paths, (str, os.PathLike)) or not paths:
            raise ConfigError(f"from_checkpoints needs a list of model files, got {paths!r}")
        members = [load_model(p, map_location=map_location, trust_code=trust_code) for p in paths]
        try:
            return cls(members, strategy=strategy, weights=weights)
        except ClassMismatchError as exc:
            files = ", ".join(f"{i}: {os.fspath(p)!r}" for i, p in enumerate(paths))
            raise ClassMismatchError(f"{exc} (members by file: {files})") from None

    @property
    def member_names(self) -> tuple[str, ...]:
        """Backbone names, with ``#1``, ``#2``... added where several members share a backbone."""
        names = [m.config.backbone for m in self.members]
        counts, seen = Counter(names), Counter[str]()
        unique = []
        for name in names:
            seen[name] += 1
            unique.append(f"{name}#{seen[name]}" if counts[name] > 1 else name)
        return tuple(unique)

    def member_probas(
        self,
        data: Data,
        *,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        progress: bool = True,
        engine: EngineLike | None = None,
        reuse: bool = True,
    ) -> torch.Tensor:
        """Every member's class probabilities, float32 ``(M, N, C)``, rows in input order.

        Args:
            data: a :class:`~ensemblenet.Samples`; an image folder (scanned with
                :func:`~ensemblenet.scan_folder`); a list of image files; or images as a tensor
                ``(N, 3, H, W)``, uint8 0..255 or float 0..1 (resized with antialiasing to each
                member's size where it differs).
            batch_size: images per forward pass.
            device: where to run; ``"cuda"`` when available by default. Members are moved there
                for the call and back afterwards, and their train/eval modes are restored.
            progress: show a tqdm progress bar.
            engine: overrides :attr:`engine` for this call.
            reuse: answer from the kept predictions when :meth:`reuse_predictions` is on (False:
                run the members, e.g. to time them).

        Rows of images that cannot be decoded are NaN (a WARNING says how many), so the output
        stays aligned with the input.
        """
        return run_members(
            self.members,
            to_inputs(data, self.classes),
            self.tta,
            batch_size,
            device,
            progress,
            engine=self.engine if engine is None else engine,
            memo=self._memo if reuse else None,
        )

    def _engine_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # Calls that score labelled data run the members like member_probas: this ensemble's engine
        # unless the call names one, and its memo of earlier results when it keeps one.
        given = {"memo": self._memo, **kwargs}
        return {"engine": self.engine, **given} if kwargs.get("engine") is None else given

    def predict_proba(self, data: Data, **kwargs: Any) -> torch.Tensor:
        """Ensemble probabilities, float64 ``(N, C)``; NaN rows for unreadable images.

        float64 keeps the vote strategy's tie-break visible. Keyword arguments as in
        :meth:`member_probas`.
        """
        check_fitted(self.strategy)
        return combine_probas(self.strategy, self.member_probas(data, **kwargs))

    def predict(self, data: Data, **kwargs: Any) -> Predictions:
        """Class names with probabilities, one :class:`~ensemblenet.ensemble.Prediction` per image.

        ``predict(data).labels`` are the names, ``.indices`` the class indices as an int64 tensor
        (-1 for unreadable images), ``.probs`` :meth:`predict_proba`'s tensor. Keyword arguments
        as in :meth:`member_probas`.
        """
        check_fitted(self.strategy)
        inputs = to_inputs(data, self.classes)
        probs = combine_probas(self.strategy, self.member_probas(inputs, **kwargs))
        return Predictions(probs, self.classes, sources=inputs.sources)

    def evaluate(self, data: Data, **kwargs: Any) -> EnsembleEvaluation:
        """Accuracy and log-loss of the ensemble and of each member on labelled ``data``."""
        check_fitted(self.strategy)
        probs, labels, valid, rejected = labelled_probas(
            self.members, self.tta, data, "evaluate", **self._engine_kwargs(kwargs)
        )
        probs, labels = probs[:, valid], labels[valid]
        combined = combine_probas(self.strategy, probs)
        members = tuple(
            score_model(name, p, labels) for name, p in zip(self.member_names, probs, strict=True)
        )
        ensemble = score_model(strategy_name(self.strategy), combined, labels, kind="ensemble")
        return EnsembleEvaluation(
            accuracy=ensemble.accuracy,
            log_loss=ensemble.log_loss,
            members=members,
            n=int(labels.numel()),
            n_skipped=int((~valid).sum()) + rejected,
            strategy=ensemble.name,
            ece=ensemble.ece,
            brier=ensemble.brier,
        )

    def fit_weights(self, data: Data, **kwargs: Any) -> torch.Tensor:
        """Fit the strategy on labelled validation ``data``; return its weights (float64 ``(M,)``).

        A ``"mean"`` ensemble becomes ``"weighted"`` (fitted weights are never worse than uniform
        on ``data``). A strategy with its own ``fit`` is fitted; one without weights returns an
        empty tensor.

        Raises:
            ConfigError: the strategy has nothing to fit (e.g. ``"vote"``), or ``data`` has no labels.
        """
        fittable = fittable_strategy(self.strategy)
        if fittable is None:
            raise ConfigError(
                f"strategy {strategy_name(self.strategy)!r} has nothing to fit; use strategy='weighted' "
                "to learn member weights on validation data."
            )
        probs, labels, valid, _ = labelled_probas(
            self.members, self.tta, data, "fit_weights", **self._engine_kwargs(kwargs)
        )
        fittable.fit(probs[:, valid].double(), labels[valid])  # type: ignore[attr-defined]
        self.strategy = fittable
        weights = getattr(self.strategy, "weights", None)
        logger.info("fitted %s: weights %s", strategy_name(self.strategy), weights)
        return torch.empty(0, dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()

    def calibrate(
        self, data: Data, *, members: bool = True, refit: bool = True, **kwargs: Any
    ) -> CalibratedStrategy:
        """Temperature-scale each member (``members=True``) and the ensemble on labelled validation data.

        Wraps the current strategy in a :class:`~ensemblenet.CalibratedStrategy` and
        returns it. With ``refit=True`` a strategy that can be fitted is re-fitted on the scaled
        probabilities (pass ``refit=False`` to keep weights you gave); one that still needs
        fitting always is.
        """
        inner = self.strategy.inner if isinstance(self.strategy, CalibratedStrategy) else self.strategy
        calibrated = CalibratedStrategy(inner, members=members, refit_inner=refit)
        probs, labels, valid, _ = labelled_probas(
            self.members, self.tta, data, "calibrate", **self._engine_kwargs(kwargs)
        )
        calibrated.fit(probs[:, valid].double(), labels[valid])
        self.strategy = calibrated
        return calibrated

    def choose_strategy(
        self,
        data: Data,
        candidates: Any = DEFAULT_CANDIDATES,
        *,
        metric: str = "log_loss",
        folds: int = 5,
        seed: int = 0,
        **kwargs: Any,
    ) -> StrategyChoice:
        """Pick the combination on labelled validation ``data`` by cross-fitting, and use it.

        Each candidate (``"mean"``, ``"weighted"`` and ``"calibrated"`` by default) is scored on
        out-of-fold predictions, so a fitted strategy cannot win by overfitting the split; the
        winner is refitted on all of ``data`` and becomes :attr:`strategy`. See
        :func:`ensemblenet.choose_strategy`.
        """
        probs, labels, valid, _ = labelled_probas(
            self.members, self.tta, data, "choose_strategy", **self._engine_kwargs(kwargs)
        )
        choice = choose_strategy(
            probs[:, valid].double(), labels[valid], candidates, metric=metric, folds=folds, seed=seed
        )
        self.strategy = choice.strategy
        return choice

    def fit_combination(
        self,
        data: Data,
        combine: str = "auto",
        *,
        candidates: Any = COMBINATIONS,
        metric: str = "log_loss",
        folds: int = 5,
        seed: int = 0,
        tta: Any = "keep",
        **kwargs: Any,
    ) -> StrategyChoice:
        """Set the combination on labelled validation ``data``: one of ``candidates`` by name, or
        ``"auto"`` to choose among them by cross-fitting (:meth:`choose_strategy`).

        The members run on ``data`` once. Every candidate is fitted on all of it and kept in the
        returned choice's ``fitted`` (to show each one in a report:
        ``ensemble.report(test, strategies=choice.fitted)``). The default candidates are what a
        recipe's ``combine`` names: ``"mean"``, ``"weighted"`` and ``"calibrated"``
        (temperatures around fitted weights), see :data:`~ensemblenet.strategies.COMBINATIONS`.

        ``tta``: ``"keep"`` uses :attr:`tta` as it is; ``"auto"`` also decides flip TTA on ``data``
        (kept when it lowers the chosen combination's cross-fitted score; the decision is in
        :attr:`flip_choice`); anything :class:`Ensemble` takes as ``tta`` sets it first.
        """
        kwargs = self._engine_kwargs(kwargs)
        if isinstance(tta, str) and tta == "auto":
            choice, self.flip_choice = fit_combination_and_flip(
                self.members, data, combine, candidates, metric, folds, seed, **kwargs
            )
            self.tta = TTA() if self.flip_choice.flip else None
            self.strategy = choice.strategy
            return choice
        if not (isinstance(tta, str) and tta == "keep"):
            self.tta = resolve_tta(tta)
        probs, labels, valid, _ = labelled_probas(self.members, self.tta, data, "fit_combination", **kwargs)
        probs, labels = probs[:, valid].double(), labels[valid]
        choice = choose_combination(probs, labels, combine, candidates, metric, folds, seed)
        self.strategy = choice.strategy
        return choice

    def report(
        self,
        data: Data,
        *,
        strategies: dict[str, Strategy] | None = None,
        histories: Mapping[str, Curves] | None = None,
        names: Sequence[str] | None = None,
        best_member: int | None = None,
        n_bins: int = 15,
        n_resamples: int = 10_000,
        seed: int = 0,
        level: float = 0.95,
        **kwargs: Any,
    ) -> EnsembleReport:
        """Scores, diversity, significance and per-class numbers on labelled ``data``.

        Returns an :class:`~ensemblenet.EnsembleReport`; ``report.save(folder)`` writes
        ``report.md``, ``report.json`` and the figures. The first ensemble row uses
        :attr:`strategy`; ``strategies`` adds rows for other (already fitted) strategies on the same
        member probabilities, computed once (a row already there is not repeated). ``histories``
        (training histories by member name) add learning curves to the saved figures; ``names``
        replaces :attr:`member_names` in the report (e.g. ``["mobilenet_v2", "lite0"]``). Keyword
        arguments as in :meth:`member_probas`.
        """
        check_fitted(self.strategy)
        inputs = to_inputs(data, self.classes)
        probs, labels, valid, rejected = labelled_probas(
            self.members, self.tta, inputs, "report", **self._engine_kwargs(kwargs)
        )
        probs, labels = probs[:, valid].double(), labels[valid]
        combos: dict[str, Strategy] = {f"ensemble ({strategy_name(self.strategy)})": self.strategy}
        for name, strategy in (strategies or {}).items():
            combos.setdefault(name, strategy)
        items = inputs.items()
        kept = None if items is None else [item for item, ok in zip(items, valid.tolist(), strict=True) if ok]
        return build_report(
            probs,
            labels,
            {name: s.combine(probs).double() for name, s in combos.items()},
            member_names=tuple(names) if names is not None else self.member_names,
            classes=self.classes,
            best_member=best_member,
            n_bins=n_bins,
            n_resamples=n_resamples,
            seed=seed,
            level=level,
            n_skipped=int((~valid).sum()) + rejected,
            tta_passes=self.tta.passes if self.tta else 1,
            images=kept,
            load=load_image if inputs.samples is not None else None,
            histories=histories,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the whole ensemble to one file (see :func:`~ensemblenet.save_ensemble`)."""
        return save_ensemble(self, path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        map_location: str | torch.device = "cpu",
        trust_code: bool = False,
        expected_sha256: str | None = None,
    ) -> Ensemble:
        """Read a file written by :meth:`save` (see :func:`~ensemblenet.load_ensemble`)."""
        members, strategy, tta = read_ensemble(
            path, map_location=map_location, trust_code=trust_code, expected_sha256=expected_sha256
        )
        return cls(members, strategy=strategy, tta=tta)

    def export_onnx(self, path: str | os.PathLike[str], **kwargs: Any) -> Path:
        """One ONNX graph of all members and the combination (see :func:`~ensemblenet.export_onnx`)."""
        return export_onnx(self, path, **kwargs)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        members, classes = list(self.member_names), list(self.classes)
        return f"Ensemble(members={members}, classes={classes}, strategy={self.strategy!r})"


def load_ensemble(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    trust_code: bool = False,
    expected_sha256: str | None = None,
) -> Ensemble:
    """Rebuild the ensemble saved by :func:`~ensemblenet.save_ensemble`, offline; members in eval mode.

    Args:
        path: the ensemble file.
        map_location: where the file's tensors are read to.
        trust_code: allow members whose backbone source runs code (``hub:``); see
            :func:`~ensemblenet.load_model`.
        expected_sha256: the published sha256 of the whole file, checked before it is parsed.

    Raises:
        CheckpointError: missing, not a regular file, unreadable, foreign (it says what the file
            is), newer-format, modified or invalid file, or a backbone that runs code without
            ``trust_code``.
    """
    return Ensemble.load(
        path, map_location=map_location, trust_code=trust_code, expected_sha256=expected_sha256
    )
