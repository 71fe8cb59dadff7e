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

import contextlib
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import calibration as _calibration
from . import choice as _choice
from . import selection as _selection  # noqa: F401  (registers "greedy" and "stacking")
from .calibration import brier_score as brier
from .calibration import expected_calibration_error as ece
from .checkpoint import load_model
from .data import Samples, View, describe_skipped, list_image_files, make_loader, scan_folder
from .errors import ClassMismatchError, ConfigError, DataError
from .metrics import accuracy, log_loss
from .model import TransferModel
from .strategies import MeanStrategy, Strategy, WeightedStrategy, resolve_strategy, strategy_name
from .tta import TTA, member_probs, resolve_tta

if TYPE_CHECKING:
    from .report import EnsembleReport

__all__ = ["Ensemble", "EnsembleEvaluation", "MemberEvaluation"]

logger = logging.getLogger("ensemblenet.ensemble")

#: What the prediction methods accept (see :meth:`Ensemble.member_probas`).
Data: TypeAlias = "Samples | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | torch.Tensor"

# F.interpolate has no Lanczos; antialiased bicubic is its closest kernel.
_TORCH_MODES = {
    "nearest": "nearest-exact",
    "bilinear": "bilinear",
    "bicubic": "bicubic",
    "lanczos": "bicubic",
}


@dataclass(frozen=True)
class MemberEvaluation:
    """One member's scores on the images every member could read."""

    name: str
    accuracy: float
    log_loss: float
    ece: float = math.nan  # top-label, 15 equal-width bins (ensemblenet.calibration)
    brier: float = math.nan


@dataclass(frozen=True)
class EnsembleEvaluation:
    """The ensemble's and each member's accuracy and log-loss on ``n`` images.

    ``n_skipped`` images could not be used and are excluded from every number: files that failed
    to decode, plus those a :class:`~ensemblenet.Samples` lists as rejected by its scan.
    """

    accuracy: float
    log_loss: float
    members: tuple[MemberEvaluation, ...]
    n: int
    n_skipped: int
    strategy: str
    ece: float = math.nan  # top-label, 15 equal-width bins (ensemblenet.calibration)
    brier: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serializable types."""
        return asdict(self) | {"members": [asdict(m) for m in self.members]}

    def __str__(self) -> str:
        label = f"ensemble ({self.strategy})"
        rows = [(m.name, m.accuracy, m.log_loss, m.ece, m.brier) for m in self.members] + [
            (label, self.accuracy, self.log_loss, self.ece, self.brier)
        ]
        width = max(len("model"), *(len(r[0]) for r in rows))
        lines = [f"{'model':<{width}}  {'accuracy':>8}  {'log_loss':>8}  {'ECE':>6}  {'Brier':>6}"]
        lines += [f"{r[0]:<{width}}  {r[1]:>8.4f}  {r[2]:>8.4f}  {r[3]:>6.4f}  {r[4]:>6.4f}" for r in rows]
        lines.append(f"n={self.n} images, {self.n_skipped} skipped (unreadable)")
        return "\n".join(lines)


class _Inputs(NamedTuple):
    samples: Samples | None  # decoded from files...
    images: torch.Tensor | None  # ...or given as a tensor
    labels: torch.Tensor | None  # in the ensemble's class order; None when unknown

    def __len__(self) -> int:
        return len(self.samples) if self.samples is not None else len(self.images)  # type: ignore[arg-type]


class Ensemble:
    """Combine fine-tuned :class:`~ensemblenet.TransferModel` members with a strategy.

    Args:
        members: models predicting the same class names in the same order.
        strategy: ``"mean"`` (soft vote), ``"vote"`` (hard vote), ``"weighted"``, a registered
            name, a strategy object or a function ``probs (M, N, C) -> probs (N, C)``.
        weights: one weight per member for a weighted soft vote; allowed with ``"weighted"`` and
            with the default ``"mean"`` (a weighted mean is then what is asked for).
        tta: test-time augmentation for every member: None (off), ``"flip"``, ``"flip+crops"``
            or a :class:`~ensemblenet.tta.TTA` (each multiplies the forward passes; see
            :mod:`ensemblenet.tta`).

    Raises:
        ClassMismatchError: members whose class names or their order differ.
        ConfigError: no members, non-model members, or weights with a strategy that takes none.
    """

    def __init__(
        self,
        members: Sequence[TransferModel],
        strategy: str | Strategy | Callable[[torch.Tensor], torch.Tensor] = "mean",
        weights: Sequence[float] | None = None,
        tta: TTA | bool | str | None = None,
    ) -> None:
        self.tta: TTA | None = resolve_tta(tta)
        self.members: tuple[TransferModel, ...] = tuple(members)
        if not self.members:
            raise ConfigError("an Ensemble needs at least one member model")
        for i, member in enumerate(self.members):
            if not isinstance(member, TransferModel):
                raise ConfigError(
                    f"ensemble member {i} is a {type(member).__name__}, not an ensemblenet TransferModel; "
                    "build members with create_model() or load them with load_model()."
                )
        self.classes: tuple[str, ...] = self.members[0].classes
        for i, member in enumerate(self.members[1:], start=1):
            if member.classes != self.classes:
                how = (
                    "in a different order" if set(member.classes) == set(self.classes) else "different names"
                )
                raise ClassMismatchError(
                    f"ensemble member {i} ({member.config.backbone}) predicts classes "
                    f"{list(member.classes)} but member 0 ({self.members[0].config.backbone}) predicts "
                    f"{list(self.classes)} ({how}); "
                    "every member must predict the same class names in the same order. Retrain member "
                    f"{i} with classes={list(self.classes)}, or reorder the members' class folders to match."
                )
        if weights is not None:
            if not (strategy in ("weighted", "mean") or isinstance(strategy, WeightedStrategy)):
                raise ConfigError(
                    f"weights={list(weights)!r} only apply to strategy='weighted', not {strategy!r}; pass "
                    "strategy='weighted' or drop the weights."
                )
            strategy = WeightedStrategy(weights)
        self.strategy: Strategy = resolve_strategy(strategy)
        known = getattr(self.strategy, "weights", None)
        if (
            isinstance(self.strategy, WeightedStrategy)
            and known is not None
            and len(known) != len(self.members)
        ):
            raise ConfigError(
                f"{len(known)} weights given for {len(self.members)} members; "
                "pass exactly one weight per member."
            )

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | os.PathLike[str]],
        strategy: str | Strategy | Callable[[torch.Tensor], torch.Tensor] = "mean",
        weights: Sequence[float] | None = None,
        map_location: str | torch.device = "cpu",
    ) -> Ensemble:
        """Load each model file with :func:`~ensemblenet.load_model` and ensemble them."""
        if isinstance(paths, (str, os.PathLike)) or not paths:
            raise ConfigError(f"from_checkpoints needs a list of model files, got {paths!r}")
        members = [load_model(p, map_location=map_location) for p in paths]
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

        Rows of images that cannot be decoded are NaN (a WARNING says how many), so the output
        stays aligned with the input.
        """
        return self._member_probas(self._inputs(data), batch_size, device, progress)

    def predict_proba(self, data: Data, **kwargs: Any) -> torch.Tensor:
        """Ensemble probabilities, float64 ``(N, C)``; NaN rows for unreadable images.

        float64 keeps the vote strategy's tie-break visible. Keyword arguments as in
        :meth:`member_probas`.
        """
        self._check_fitted()
        return self._combine(self.member_probas(data, **kwargs))

    def predict(self, data: Data, **kwargs: Any) -> torch.Tensor:
        """Predicted class indices, int64 ``(N,)`` into :attr:`classes`; -1 for unreadable images."""
        probs = self.predict_proba(data, **kwargs)
        preds = probs.argmax(dim=1)
        preds[torch.isnan(probs).any(dim=1)] = -1
        return preds

    def evaluate(self, data: Data, **kwargs: Any) -> EnsembleEvaluation:
        """Accuracy and log-loss of the ensemble and of each member on labelled ``data``."""
        self._check_fitted()
        probs, labels, valid, rejected = self._labelled_probas(data, "evaluate", **kwargs)
        probs, labels = probs[:, valid], labels[valid]
        combined = self._combine(probs)
        members = tuple(
            MemberEvaluation(name, accuracy(p, labels), log_loss(p, labels), ece(p, labels), brier(p, labels))
            for name, p in zip(self.member_names, probs, strict=True)
        )
        return EnsembleEvaluation(
            accuracy=accuracy(combined, labels),
            log_loss=log_loss(combined, labels),
            members=members,
            n=int(labels.numel()),
            n_skipped=int((~valid).sum()) + rejected,
            strategy=strategy_name(self.strategy),
            ece=ece(combined, labels),
            brier=brier(combined, labels),
        )

    def fit_weights(self, data: Data, **kwargs: Any) -> torch.Tensor:
        """Fit the strategy on labelled validation ``data``; return its weights (float64 ``(M,)``).

        A ``"mean"`` ensemble becomes ``"weighted"`` (fitted weights are never worse than uniform
        on ``data``). A strategy with its own ``fit`` is fitted; one without weights returns an
        empty tensor.

        Raises:
            ConfigError: the strategy has nothing to fit (e.g. ``"vote"``), or ``data`` has no labels.
        """
        fit = getattr(self.strategy, "fit", None)
        if fit is None and isinstance(self.strategy, MeanStrategy):
            self.strategy = WeightedStrategy()
            fit = self.strategy.fit
        if not callable(fit):
            raise ConfigError(
                f"strategy {strategy_name(self.strategy)!r} has nothing to fit; use strategy='weighted' "
                "to learn member weights on validation data."
            )
        probs, labels, valid, _ = self._labelled_probas(data, "fit_weights", **kwargs)
        fit(probs[:, valid].double(), labels[valid])
        weights = getattr(self.strategy, "weights", None)
        logger.info("fitted %s: weights %s", strategy_name(self.strategy), weights)
        return torch.empty(0, dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()

    def calibrate(
        self, data: Data, *, members: bool = True, refit: bool = True, **kwargs: Any
    ) -> _calibration.CalibratedStrategy:
        """Temperature-scale each member (``members=True``) and the ensemble on labelled validation data.

        Wraps the current strategy in a :class:`~ensemblenet.calibration.CalibratedStrategy` and
        returns it. With ``refit=True`` a strategy that can be fitted is re-fitted on the scaled
        probabilities (pass ``refit=False`` to keep weights you gave); one that still needs
        fitting always is.
        """
        inner = (
            self.strategy.inner
            if isinstance(self.strategy, _calibration.CalibratedStrategy)
            else self.strategy
        )
        calibrated = _calibration.CalibratedStrategy(inner, members=members, refit_inner=refit)
        probs, labels, valid, _ = self._labelled_probas(data, "calibrate", **kwargs)
        calibrated.fit(probs[:, valid].double(), labels[valid])
        self.strategy = calibrated
        return calibrated

    def choose_strategy(
        self,
        data: Data,
        candidates: Any = _choice.DEFAULT_CANDIDATES,
        *,
        metric: str = "log_loss",
        folds: int = 5,
        seed: int = 0,
        **kwargs: Any,
    ) -> _choice.StrategyChoice:
        """Pick the combination on labelled validation ``data`` by cross-fitting, and use it.

        Each candidate (``"mean"``, ``"weighted"`` and ``"calibrated"`` by default) is scored on
        out-of-fold predictions, so a fitted strategy cannot win by overfitting the split; the
        winner is refitted on all of ``data`` and becomes :attr:`strategy`. See
        :func:`ensemblenet.choice.choose_strategy`.
        """
        probs, labels, valid, _ = self._labelled_probas(data, "choose_strategy", **kwargs)
        choice = _choice.choose_strategy(
            probs[:, valid].double(), labels[valid], candidates, metric=metric, folds=folds, seed=seed
        )
        self.strategy = choice.strategy
        return choice

    def report(
        self,
        data: Data,
        *,
        strategies: dict[str, Strategy] | None = None,
        best_member: int | None = None,
        n_bins: int = 15,
        n_resamples: int = 10_000,
        seed: int = 0,
        level: float = 0.95,
        **kwargs: Any,
    ) -> EnsembleReport:
        """Scores, diversity and significance on labelled ``data`` (see :mod:`ensemblenet.report`).

        The ensemble row uses :attr:`strategy`; ``strategies`` adds rows for other (already
        fitted) strategies on the same member probabilities, computed once. Keyword arguments as
        in :meth:`member_probas`.
        """
        from .report import build_report

        self._check_fitted()
        probs, labels, valid, rejected = self._labelled_probas(data, "report", **kwargs)
        probs, labels = probs[:, valid].double(), labels[valid]
        combos = {f"ensemble ({strategy_name(self.strategy)})": self.strategy} | dict(strategies or {})
        return build_report(
            probs,
            labels,
            {name: s.combine(probs).double() for name, s in combos.items()},
            member_names=self.member_names,
            classes=self.classes,
            best_member=best_member,
            n_bins=n_bins,
            n_resamples=n_resamples,
            seed=seed,
            level=level,
            n_skipped=int((~valid).sum()) + rejected,
            tta_passes=self.tta.passes if self.tta else 1,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the whole ensemble to one file (see :func:`~ensemblenet.ensemble_io.save_ensemble`)."""
        from .ensemble_io import save_ensemble

        return save_ensemble(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> Ensemble:
        """Read a file written by :meth:`save` (see :func:`~ensemblenet.ensemble_io.load_ensemble`)."""
        from .ensemble_io import load_ensemble

        return load_ensemble(path, map_location=map_location)

    def export_onnx(self, path: str | os.PathLike[str], **kwargs: Any) -> Path:
        """One ONNX graph of all members and the combination (see :func:`~ensemblenet.export.export_onnx`)."""
        from .export import export_onnx

        return export_onnx(self, path, **kwargs)

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        members, classes = list(self.member_names), list(self.classes)
        return f"Ensemble(members={members}, classes={classes}, strategy={self.strategy!r})"

    # --- internals ------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if getattr(self.strategy, "needs_fit", False):
            raise ConfigError(
                f"strategy {strategy_name(self.strategy)!r} must be fitted first: call "
                "Ensemble.fit_weights(val) on labelled validation data, or pass weights=[...]."
            )

    def _labelled_probas(
        self, data: Data, what: str, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Member probabilities, labels, mask of readable rows, and files rejected at scan time."""
        inputs = self._inputs(data)
        if inputs.labels is None:
            raise ConfigError(
                f"{what} needs labelled images: pass a class folder or a Samples, not a tensor or a "
                "list of files"
            )
        probs = self._member_probas(inputs, **kwargs)
        valid = ~torch.isnan(probs).any(dim=2).any(dim=0)
        if not valid.any():
            raise DataError(f"none of the {len(inputs)} images could be read, so there is nothing to {what}")
        rejected = len(inputs.samples.skipped) if inputs.samples is not None else 0
        return probs, inputs.labels, valid, rejected

    def _combine(self, probs: torch.Tensor) -> torch.Tensor:
        n, c = probs.shape[1], probs.shape[2]
        out = torch.full((n, c), math.nan, dtype=torch.float64)
        valid = ~torch.isnan(probs).any(dim=2).any(dim=0)
        if valid.any():
            combined = self.strategy.combine(probs[:, valid].double())
            if not isinstance(combined, torch.Tensor) or tuple(combined.shape) != (int(valid.sum()), c):
                shape = (
                    tuple(combined.shape) if isinstance(combined, torch.Tensor) else type(combined).__name__
                )
                raise ConfigError(
                    f"strategy {strategy_name(self.strategy)!r} returned {shape}; combine(probs) must map "
                    f"(members, images, classes) to (images, classes) = ({int(valid.sum())}, {c})"
                )
            out[valid] = combined.double().cpu()
        return out

    def _inputs(self, data: Data) -> _Inputs:
        if isinstance(data, torch.Tensor):
            return _Inputs(None, _check_images(data), None)
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if path.is_dir():
                # No scan-time check: every image file gets a row (NaN when it cannot be decoded),
                # in the order scan_folder(path, verify=False) lists them, and no file is read twice.
                try:
                    data = scan_folder(path, verify=False)
                except DataError:
                    # Not laid out by class (e.g. a folder of new photos): predict on its images,
                    # unlabelled, in list_image_files order; evaluate() will ask for labels.
                    data = list_image_files(path)
                    if not data:
                        raise
                    logger.info("%s is not laid out by class: predicting on its %d images", path, len(data))
            elif path.is_file():
                data = [path]
            else:
                raise DataError(f"{os.fspath(path)!r} is neither an image folder nor an image file")
        if isinstance(data, Samples):
            return _Inputs(data, None, self._remap_labels(data))
        if isinstance(data, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in data):
            if not data:
                raise DataError("the list of image files is empty")
            files = tuple(Path(p) for p in data)
            return _Inputs(Samples(paths=files, labels=(0,) * len(files), classes=self.classes), None, None)
        raise ConfigError(
            f"cannot predict on {type(data).__name__}; pass a Samples, an image folder, a list of image "
            "files, or a (N, 3, H, W) image tensor"
        )

    def _remap_labels(self, samples: Samples) -> torch.Tensor:
        labels = torch.as_tensor(samples.labels, dtype=torch.int64)
        if tuple(samples.classes) == self.classes:
            return labels
        unknown = [c for c in samples.classes if c not in self.classes]
        if unknown:
            raise ClassMismatchError(
                f"the data has classes {unknown} that the ensemble does not predict (its classes: "
                f"{list(self.classes)}); evaluate on folders named after the ensemble's classes."
            )
        # Same names in another order (or a subset): translate label indices by name.
        mapping = torch.tensor([self.classes.index(c) for c in samples.classes], dtype=torch.int64)
        return mapping[labels]

    def _member_probas(
        self,
        inputs: _Inputs,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> torch.Tensor:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
        dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        n = len(inputs)
        out = torch.full((len(self.members), n, len(self.classes)), math.nan, dtype=torch.float32)
        views = [View.of(m.spec) for m in self.members]
        skipped: list[int] = []
        with _evaluating(self.members, dev), torch.inference_mode():
            bar = tqdm(total=n, unit="img", desc="ensemble", disable=not progress)
            with bar:
                for indices, images, dropped in self._batches(inputs, views, batch_size, dev):
                    skipped += dropped
                    for i, (member, x) in enumerate(zip(self.members, images, strict=True)):
                        out[i, indices] = member_probs(member, x.to(dev, non_blocking=True), self.tta).cpu()
                    bar.update(len(indices) + len(dropped))
        if skipped and inputs.samples is not None:
            logger.warning(
                "%d of %d images could not be read; their rows are NaN. %s",
                len(skipped),
                n,
                describe_skipped(inputs.samples, skipped),
            )
        return out

    def _batches(
        self, inputs: _Inputs, views: list[View], batch_size: int, dev: torch.device
    ) -> Iterator[tuple[torch.Tensor, list[torch.Tensor], list[int]]]:
        """Yield (row indices, one image tensor per member, skipped row indices) per batch."""
        if inputs.samples is not None:
            loader = make_loader(inputs.samples, views, batch_size=batch_size, shuffle=False)
            dataset = loader.dataset
            slots = [dataset.view_index(v) for v in views]  # type: ignore[attr-defined]
            for batch in loader:
                yield batch.indices, [batch.images[s] for s in slots], list(batch.skipped)
            return
        images = inputs.images if inputs.images is not None else torch.empty(0, 3, 1, 1)
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(dev)
            resized = {v: _resize(chunk, v) for v in dict.fromkeys(views)}  # once per distinct view
            yield torch.arange(start, start + chunk.shape[0]), [resized[v] for v in views], []


def _check_images(images: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        hint = " (one image? use images.unsqueeze(0))" if images.dim() == 3 else ""
        raise ConfigError(
            f"image tensors must have shape (N, 3, H, W) with N >= 1, got {tuple(images.shape)}{hint}"
        )
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ConfigError(f"image tensors must be uint8 (0..255) or float (0..1), got dtype {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1e-6 or hi > 1 + 1e-6 or math.isnan(lo) or math.isnan(hi):
        raise ConfigError(
            f"float images must lie in [0, 1] (unnormalized; each member normalizes itself), got values in "
            f"[{lo:.3g}, {hi:.3g}]; pass uint8 images or divide by 255."
        )
    return images.float()  # members compute in float32


def _resize(images: torch.Tensor, view: View) -> torch.Tensor:
    if tuple(images.shape[-2:]) == view.size:
        return images
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images
    mode = _TORCH_MODES[view.interpolation]
    smooth = mode != "nearest-exact"
    resized = F.interpolate(
        x, size=view.size, mode=mode, antialias=smooth, align_corners=False if smooth else None
    )
    return resized.clamp_(0.0, 1.0)  # bicubic overshoots


@contextlib.contextmanager
def _evaluating(members: Sequence[TransferModel], device: torch.device) -> Iterator[None]:
    """Put members in eval mode on ``device``; restore every submodule's mode and the device after."""
    modes = [[(mod, mod.training) for mod in m.modules()] for m in members]
    homes = [next(m.parameters(), torch.empty(0)).device for m in members]
    try:
        for member in members:
            member.eval().to(device)
        yield
    finally:
        for member, home, saved in zip(members, homes, modes, strict=True):
            member.to(home)
            for mod, training in saved:
                mod.training = training
