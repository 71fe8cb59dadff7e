"""Frozen-prefix features kept on disk, so that a later run over the same images reads them.

The frozen-feature cache (:func:`~ensemblenet.training.compute_features`) runs a frozen backbone
prefix once per image per run. Many runs repeat that pass exactly: a rerun of an example, the
refit on train + validation (the same images, one more time), a distilled student whose backbone
is one of the members', a sweep over heads or learning rates. A :class:`FeatureStore` keeps each
image's features under two keys, so any of those runs reads them instead of running the backbone:

* the **prefix**: a digest of everything that decides the output: backbone name, stage count,
  input spec (size, resize, normalization), the prefix's weights and BatchNorm statistics (every
  tensor's bytes), the engine that runs it (ONNX Runtime and PyTorch differ in the last bits) and
  the stored dtype. A model whose weights changed by one bit gets another digest.
* the **image**: its resolved path, size in bytes and modification time (as ``make`` does), so an
  edited or replaced file is read again.

Only the plain and mirrored views are stored: they are a function of the image alone. Randomly
augmented views depend on the order of the whole list and are computed every time; so are int8
engines' features (their calibration depends on the training images).

Each store call writes one shard, ``<folder>/<prefix>/<view>/<n>.safetensors`` (written to a temporary
file and renamed, so a crash never leaves a torn shard), holding the features and the image keys.
Nothing is ever evicted: delete the folder (or one prefix's folder) to reclaim the space.

>>> cache = compute_features(model, train, None, store=FeatureStore("runs/features"))  # doctest: +SKIP
>>> trainer = Trainer(TrainConfig(feature_store="runs/features"), freeze="head_only")  # doctest: +SKIP
>>> fit_with_feature_cache(trainer, model, train, val)  # train and val through the store  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..data import Samples
from ..models import TransferModel, atomic_write, split_backbone
from ._features import FeatureCache

__all__ = ["FeatureStore", "prefix_digest"]

log = logging.getLogger("ensemblenet.training")

#: The views a store keeps: each a pure function of one image.
STORED_VIEWS = ("plain", "flip")


def prefix_digest(model: TransferModel, stages: int | None, dtype: torch.dtype, engine_name: str) -> str:
    """A hex digest of everything that decides the frozen prefix's output for one image."""
    prefix: nn.Module = split_backbone(model.backbone, stages)[0]
    h = hashlib.sha256()
    settings = {
        "backbone": model.config.backbone,
        "stages": stages,
        "spec": model.spec.to_dict(),
        "dtype": str(dtype),
        "engine": engine_name,
    }
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in prefix.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


class FeatureStore:
    """Frozen-prefix features on disk, by prefix digest, view and image (see the module docs).

    Args:
        folder: where the shards go (created on the first write).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.folder)!r})"

    @staticmethod
    def image_key(path: str | os.PathLike[str]) -> str | None:
        """``"<resolved path>|<bytes>|<mtime ns>"``, or None for a file that cannot be read (never stored)."""
        try:
            resolved = Path(path).resolve()
            stat = resolved.stat()
        except OSError:
            return None
        return f"{resolved}|{stat.st_size}|{stat.st_mtime_ns}"

    def lookup(self, prefix: str, view: str, keys: Sequence[str | None]) -> dict[int, torch.Tensor]:
        """The stored feature rows of ``keys``, by position in ``keys`` (absent keys are left out)."""
        wanted = {key: i for i, key in enumerate(keys) if key is not None}
        found: dict[int, torch.Tensor] = {}
        for shard in sorted(self._view_folder(prefix, view).glob("*.safetensors")):
            if not wanted:
                break
            try:
                with safe_open(str(shard), framework="pt") as f:
                    shard_keys = json.loads((f.metadata() or {}).get("keys", "[]"))
                    rows = [(wanted[k], r) for r, k in enumerate(shard_keys) if k in wanted]
                    if rows:
                        features = f.get_tensor("features")
            except (
                OSError,
                ValueError,
                RuntimeError,
                SafetensorError,
            ) as error:  # an unreadable shard is skipped, not fatal
                log.warning("feature store: skipping unreadable shard %s (%s)", shard, error)
                continue
            for position, row in rows:
                found[position] = features[row]
                wanted.pop(keys[position], None)  # type: ignore[arg-type]
        return found

    def add(self, prefix: str, view: str, keys: Sequence[str | None], features: torch.Tensor) -> Path | None:
        """Store one row of ``features`` per key (rows whose key is None are left out); returns the shard."""
        rows = [r for r, key in enumerate(keys) if key is not None]
        if not rows:
            return None
        folder = self._view_folder(prefix, view)
        folder.mkdir(parents=True, exist_ok=True)
        kept = features[rows].contiguous() if len(rows) < len(keys) else features.contiguous()
        payload = safetensors_bytes(
            {"features": kept}, metadata={"keys": json.dumps([keys[r] for r in rows])}
        )
        # A unique name per write: two processes storing the same prefix never overwrite each other.
        return atomic_write(folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.safetensors", payload)

    def read_or_compute(
        self,
        prefix: str,
        samples: Samples,
        views: Sequence[str],
        compute: Callable[[Samples, bool], FeatureCache],
    ) -> FeatureCache:
        """The cache of ``samples`` for ``views``: rows of images stored under ``prefix`` read, the
        rest computed by ``compute(missing_samples, require_images)`` (one row per view, in
        ``views`` order) and added; merged in sample order, as one computation would give them."""
        keys = [self.image_key(path) for path in samples.paths]
        found = [self.lookup(prefix, view, keys) for view in views]
        stored = set(found[0]).intersection(*found[1:])  # an image counts as stored when every view is
        missing = [i for i in range(len(samples)) if i not in stored]
        rows: dict[int, list[torch.Tensor]] = {i: [f[i] for f in found] for i in stored}
        skipped: list[int] = []
        if missing:
            computed = compute(samples.subset(missing), not stored)
            original = [missing[int(i)] for i in computed.indices]
            skipped = [missing[i] for i in computed.skipped]
            for v, view in enumerate(views):
                self.add(prefix, view, [keys[i] for i in original], computed.features[v])
            for r, i in enumerate(original):
                rows[i] = [computed.features[v, r] for v in range(len(views))]
        log.info("feature store: %d of %d images read, %d computed", len(stored), len(samples), len(missing))
        order = sorted(rows)
        return FeatureCache(
            features=torch.stack([torch.stack([rows[i][v] for i in order]) for v in range(len(views))]),
            labels=torch.tensor([samples.labels[i] for i in order], dtype=torch.int64),
            indices=torch.tensor(order, dtype=torch.int64),
            skipped=skipped,
        )

    def _view_folder(self, prefix: str, view: str) -> Path:
        return self.folder / prefix / view
