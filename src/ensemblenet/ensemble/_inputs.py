"""Turn what :class:`~ensemblenet.Ensemble` is given into its members' inputs and run them.

Data may be a :class:`~ensemblenet.Samples`, an image folder, a list of image files, an image
tensor, PIL images, or a DataLoader (see :data:`Data`). Files are decoded once per batch and
resized once per distinct view (size + interpolation); PIL images are resized like decoded files;
tensors (and a DataLoader's batches, read once into memory) are resized here, with
antialiasing. Each member normalizes its own input. Rows of images that cannot be decoded stay
NaN, so the output is aligned with the input.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import Samples, View, describe_skipped, list_image_files, make_loader, prefetch, scan_folder
from ..engine import EngineLike, model_runner, resolve_engine
from ..errors import ClassMismatchError, ConfigError, DataError
from ..models import TransferModel
from ..training import resolve_device
from ._memo import ProbaMemo
from ._tta import TTA, member_probs

__all__ = ["Data", "MemberInputs", "labelled_probas", "readable_rows", "run_members", "to_inputs"]

# The messages here are about Ensemble calls; users filter them under the ensemble's logger name.
logger = logging.getLogger("ensemblenet.ensemble")

#: What the prediction methods accept (see :meth:`Ensemble.member_probas
#: <ensemblenet.Ensemble.member_probas>`).
Data: TypeAlias = (
    "Samples | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | torch.Tensor | Image.Image "
    "| Sequence[Image.Image] | DataLoader[Any] | MemberInputs"
)


class MemberInputs(NamedTuple):
    """The images to run the members on, and their labels when known."""

    samples: Samples | None  # decoded from files...
    images: torch.Tensor | None  # ...or given as a tensor...
    labels: torch.Tensor | None  # in the ensemble's class order; None when unknown
    pictures: tuple[Image.Image, ...] | None = None  # ...or as PIL images
    #: why a folder gave no labels (its scan's error), for evaluate()'s message
    unlabelled: str | None = None

    def __len__(self) -> int:
        if self.samples is not None:
            return len(self.samples)
        if self.pictures is not None:
            return len(self.pictures)
        return len(self.images)  # type: ignore[arg-type]

    @property
    def sources(self) -> list[Path] | None:
        """The image files, when the input was files."""
        return list(self.samples.paths) if self.samples is not None else None

    def items(self) -> Sequence[Any] | None:
        """One drawable entry per image (paths, PIL images or ``(3, H, W)`` tensors), for figures."""
        if self.samples is not None:
            return list(self.samples.paths)
        if self.pictures is not None:
            return list(self.pictures)
        return list(self.images) if self.images is not None else None


def to_inputs(data: Data, classes: tuple[str, ...]) -> MemberInputs:
    """Resolve ``data`` into images (files or a tensor) and labels in the order of ``classes``.

    Raises:
        ConfigError: an unsupported type, or a malformed image tensor.
        DataError: a path that is neither an image folder nor a file, or no images.
        ClassMismatchError: labelled data with classes the ensemble does not predict.
    """
    if isinstance(data, MemberInputs):
        return data
    if isinstance(data, torch.Tensor):
        return MemberInputs(None, _check_images(data), None)
    if isinstance(data, DataLoader):
        return _from_loader(data, classes)
    pictures = [data] if isinstance(data, Image.Image) else data
    if isinstance(pictures, Sequence) and pictures and all(isinstance(p, Image.Image) for p in pictures):
        return MemberInputs(None, None, None, tuple(p.convert("RGB") for p in pictures))  # type: ignore[union-attr]
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            # No scan-time check: every image file gets a row (NaN when it cannot be decoded),
            # in the order scan_folder(path, verify=False) lists them, and no file is read twice.
            try:
                data = scan_folder(path, verify=False)
            except DataError as exc:
                # Not laid out by class (e.g. a folder of new photos): predict on its images,
                # unlabelled, in list_image_files order; evaluate() will ask for labels.
                files = list_image_files(path)
                if not files:
                    raise
                logger.info("%s is not laid out by class: predicting on its %d images", path, len(files))
                return _unlabelled(files, classes, f"{os.fspath(path)!r} is not a labelled folder: {exc}")
        elif path.is_file():
            data = [path]
        else:
            raise DataError(f"{os.fspath(path)!r} is neither an image folder nor an image file")
    if isinstance(data, Samples):
        return MemberInputs(
            data, None, _remap_labels(data.classes, classes, torch.as_tensor(data.labels, dtype=torch.int64))
        )
    if isinstance(data, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in data):
        if not data:
            raise DataError("the list of image files is empty")
        return _unlabelled(data, classes, None)  # type: ignore[arg-type]  # checked just above
    raise ConfigError(
        f"cannot predict on {type(data).__name__}; pass a Samples, an image folder, a list of image "
        "files, a (N, 3, H, W) image tensor, PIL images, or a DataLoader of (images, labels) batches"
    )


def _from_loader(loader: DataLoader[Any], classes: tuple[str, ...]) -> MemberInputs:
    """A DataLoader's batches, read once: images ``(N, 3, H, W)`` and labels when it yields them.

    A batch is an ensemblenet :class:`~ensemblenet.data.Batch`, an ``(images, labels, ...)``
    tuple, or an image tensor. Labels are mapped by class name when the dataset names its classes
    (``dataset.classes``, as torchvision's ``ImageFolder`` and ensemblenet's datasets do).
    """
    images, labels = [], []
    for batch in loader:
        if hasattr(batch, "images") and hasattr(batch, "labels"):
            x, y = batch.images[0], batch.labels
        elif isinstance(batch, (tuple, list)):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            x, y = batch, None
        if not isinstance(x, torch.Tensor):
            raise ConfigError(
                f"the DataLoader yielded {type(x).__name__} images; it must yield image tensors"
            )
        images.append(_check_images(x))
        if y is not None:
            labels.append(torch.as_tensor(y, dtype=torch.int64))
    if not images:
        raise DataError("the DataLoader yielded no batches")
    if len({tuple(t.shape[1:]) for t in images}) > 1 or len({t.dtype for t in images}) > 1:
        raise ConfigError(
            "the DataLoader's batches differ in image size or dtype; give it one size and dtype"
        )
    known: torch.Tensor | None = None
    if labels and len(labels) == len(images):
        known = torch.cat(labels)
        dataset = loader.dataset
        names = getattr(getattr(dataset, "samples", None), "classes", None) or getattr(
            dataset, "classes", None
        )
        if names is not None:
            known = _remap_labels(tuple(str(n) for n in names), classes, known)
    return MemberInputs(None, torch.cat(images), known)


def _unlabelled(
    paths: Sequence[str | os.PathLike[str]], classes: tuple[str, ...], why: str | None
) -> MemberInputs:
    files = tuple(Path(p) for p in paths)
    return MemberInputs(
        Samples(paths=files, labels=(0,) * len(files), classes=classes), None, None, unlabelled=why
    )


def run_members(
    members: Sequence[TransferModel],
    inputs: MemberInputs,
    tta: TTA | None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    progress: bool = True,
    engine: EngineLike = "auto",
    memo: ProbaMemo | None = None,
) -> torch.Tensor:
    """Every member's probabilities, float32 ``(M, N, C)``; NaN rows for unreadable images.

    Members predict the same classes (the ensemble checks). They run in eval mode on ``device``
    and are put back afterwards, through ``engine`` (see :mod:`ensemblenet.engine`; ``"auto"``:
    ONNX Runtime on a CPU when installed, else PyTorch). With a ``memo``, a call that every
    member has already answered for these files is answered from it (see :class:`ProbaMemo`).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    dev = resolve_device(device if device is not None else "auto")  # a missing GPU fails here, clearly
    chosen = resolve_engine(engine, device=dev)
    keys = [ProbaMemo.key(m, inputs.sources, tta, chosen.name) for m in members] if memo is not None else []
    stored = [memo.get(k) for k in keys] if memo is not None else []
    if stored and all(p is not None for p in stored):
        return torch.stack(stored)  # type: ignore[arg-type]
    n = len(inputs)
    out = torch.full((len(members), n, len(members[0].classes)), math.nan, dtype=torch.float32)
    views = [View.of(m.spec) for m in members]
    skipped: list[int] = []
    with _evaluating(members, dev):
        # Built (or found in the engine cache) outside inference_mode, which the exporter cannot trace.
        runners = [model_runner(m, chosen).prepare() for m in members]
        with torch.inference_mode(), tqdm(total=n, unit="img", desc="ensemble", disable=not progress) as bar:
            for indices, images, dropped in _batches(inputs, views, batch_size, dev, chosen.prefetch):
                skipped += dropped
                for i, (runner, x) in enumerate(zip(runners, images, strict=True)):
                    out[i, indices] = member_probs(runner, x.to(dev, non_blocking=True), tta).cpu()
                bar.update(len(indices) + len(dropped))
    if skipped and inputs.samples is not None:
        logger.warning(
            "%d of %d images could not be read; their rows are NaN. %s",
            len(skipped),
            n,
            describe_skipped(inputs.samples, skipped),
        )
    for key, probs in zip(keys, out, strict=False):
        memo.put(key, probs)  # type: ignore[union-attr]
    return out


def readable_rows(probs: torch.Tensor) -> torch.Tensor:
    """Mask ``(N,)`` of the images every member could read: :func:`run_members` leaves the others NaN."""
    return ~torch.isnan(probs).any(dim=2).any(dim=0)


def labelled_probas(
    members: Sequence[TransferModel], tta: TTA | None, data: Data, what: str, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Member probabilities, labels, mask of readable rows, and files rejected at scan time.

    ``what`` names the caller in the errors; keyword arguments as in :func:`run_members`.

    Raises:
        ConfigError: ``data`` has no labels (a tensor or a list of files).
        DataError: no image could be read.
    """
    inputs = to_inputs(data, members[0].classes)
    if inputs.labels is None and inputs.unlabelled is not None:
        raise DataError(f"{what} needs labelled images, and {inputs.unlabelled}")
    if inputs.labels is None:
        raise ConfigError(
            f"{what} needs labelled images: pass a class folder or a Samples, not a tensor or a list of files"
        )
    probs = run_members(members, inputs, tta, **kwargs)
    valid = readable_rows(probs)
    if not valid.any():
        raise DataError(f"none of the {len(inputs)} images could be read, so there is nothing to {what}")
    rejected = len(inputs.samples.skipped) if inputs.samples is not None else 0
    return probs, inputs.labels, valid, rejected


def _remap_labels(names: Sequence[str], classes: tuple[str, ...], labels: torch.Tensor) -> torch.Tensor:
    """``labels`` (indices into ``names``, the data's classes) as indices into ``classes``, by name."""
    if tuple(names) == classes:
        return labels
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise ClassMismatchError(
            f"the data has classes {unknown} that the ensemble does not predict (its classes: "
            f"{list(classes)}); evaluate on folders named after the ensemble's classes."
        )
    # Same names in another order (or a subset): translate label indices by name.
    mapping = torch.tensor([classes.index(c) for c in names], dtype=torch.int64)
    return mapping[labels]


def _batches(
    inputs: MemberInputs, views: list[View], batch_size: int, dev: torch.device, decode_ahead: bool
) -> Iterator[tuple[torch.Tensor, list[torch.Tensor], list[int]]]:
    """Yield (row indices, one image tensor per member, skipped row indices) per batch;
    ``decode_ahead``: decode the next batch on a second thread meanwhile."""
    if inputs.samples is not None:
        loader = make_loader(inputs.samples, views, batch_size=batch_size, shuffle=False)
        dataset = loader.dataset
        slots = [dataset.view_index(v) for v in views]  # type: ignore[attr-defined]
        for batch in prefetch(loader) if decode_ahead else loader:
            yield batch.indices, [batch.images[s] for s in slots], list(batch.skipped)
        return
    if inputs.pictures is not None:
        for start in range(0, len(inputs.pictures), batch_size):
            some = inputs.pictures[start : start + batch_size]
            per_view = {v: torch.stack([v.apply(p) for p in some]) for v in dict.fromkeys(views)}
            yield torch.arange(start, start + len(some)), [per_view[v] for v in views], []
        return
    images = inputs.images if inputs.images is not None else torch.empty(0, 3, 1, 1)
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(dev)
        resized = {v: v.resize_batch(chunk) for v in dict.fromkeys(views)}  # once per distinct view
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
