"""Self-describing, versioned, atomically written checkpoints.

A model file holds plain data only (strings, numbers, lists, dicts and tensors), so it loads with
``torch.load(weights_only=True)`` — no code is ever unpickled — and carries everything needed to
rebuild the exact model offline: backbone name, head name and settings, class names, input spec.
The head you load is, by construction, the head you trained.

Layout (``format_version`` 1)::

    {"format": "ensemblenet.model", "format_version": 1, "ensemblenet_version": "...",
     "torch_version": "...", "created": "ISO-8601 UTC", "config": {...ModelConfig...},
     "state_dict": {...}, "tensors_sha256": "...", "metrics": {...}, "train_state": {...} | absent}
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import pickle
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import CheckpointError
from ._transfer import ModelConfig, TransferModel, rebuild_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_save",
    "check_format_version",
    "file_header",
    "load_checkpoint",
    "load_model",
    "model_from_state",
    "read_plain_data",
    "save_model",
    "tensors_sha256",
]

FORMAT = "ensemblenet.model"
FORMAT_VERSION = 1


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A digest over names, dtypes, shapes and bytes of every tensor, in sorted key order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(target.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target


def file_header(fmt: str, version: int) -> dict[str, Any]:
    """The fields every ensemblenet file starts with: format, version, library versions, time."""
    return {
        "format": fmt,
        "format_version": version,
        "ensemblenet_version": __version__,
        "torch_version": str(torch.__version__),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def read_plain_data(path: Path, *, what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with ensemblenet's errors: a missing file, pickled code
    (refused), a truncated or foreign file. ``what`` names the kind of file in the messages."""
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist or is not a file")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol note; the error below says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refused to load {str(path)!r}: it contains pickled objects other than plain data and tensors "
            f"(possibly code). ensemblenet files never do; only load files you trust. "
            f"({str(exc).splitlines()[-1][:300]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read {what} {str(path)!r}: truncated or not a torch file ({exc})"
        ) from None


def check_format_version(payload: Mapping[str, Any], path: Path, supported: int) -> None:
    """Refuse a file written in a newer format than this version of ensemblenet reads."""
    version = payload.get("format_version")
    if not isinstance(version, int) or version > supported:
        raise CheckpointError(
            f"{str(path)!r} has format_version {version!r}; this ensemblenet ({__version__}) reads up to "
            f"{supported}. Upgrade ensemblenet to load it."
        )


def save_model(
    model: TransferModel,
    path: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any] | None = None,
    train_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and optional plain-data ``metrics`` / resumable ``train_state``) atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        **file_header(FORMAT, FORMAT_VERSION),
        "config": model.config.to_dict(),
        "state_dict": state,
        "tensors_sha256": tensors_sha256(state),
        "metrics": dict(metrics or {}),
    }
    if train_state is not None:
        payload["train_state"] = dict(train_state)
    return atomic_save(payload, path)


def load_checkpoint(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read and validate a model file without building the model (format, version, integrity)."""
    path = Path(path)
    payload = read_plain_data(path, what="checkpoint", map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an ensemblenet model file (no 'format': {FORMAT!r}). For a plain "
            "state dict use load_backbone(name, weights=path) instead."
        )
    check_format_version(payload, path, FORMAT_VERSION)
    expected = payload.get("tensors_sha256")
    actual = tensors_sha256(payload["state_dict"])
    if expected != actual:
        raise CheckpointError(
            f"{str(path)!r} is corrupted or was modified: its tensors' sha256 is {actual[:16]}..., "
            f"the file records {str(expected)[:16]}.... Re-create it or restore a good copy."
        )
    return payload  # type: ignore[no-any-return]


def load_model(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> TransferModel:
    """Rebuild the exact model saved by :func:`save_model`, offline, and load its weights strictly.

    The model is returned in eval mode. ``model.metrics`` holds the metrics stored with it.
    """
    payload = load_checkpoint(path, map_location=map_location)
    model = model_from_state(payload["config"], payload["state_dict"], where=repr(str(path)))
    model.metrics = dict(payload.get("metrics", {}))
    return model


def model_from_state(
    config: Mapping[str, Any], state_dict: Mapping[str, Any], *, where: str
) -> TransferModel:
    """Rebuild a model from its stored config and load ``state_dict`` strictly; eval mode.

    ``where`` names the file (and member) in the error when the weights do not fit.
    """
    model_config = ModelConfig.from_dict(config)
    model = rebuild_model(model_config)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {where} do not fit the model rebuilt from its own config "
            f"({model_config.backbone}): {exc}"
        ) from None
    return model.eval()
