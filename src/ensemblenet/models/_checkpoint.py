"""Model files: self-describing, versioned, digest-checked, atomically written, never code.

A model file is the one file container of ensemblenet (see ``models/_file_format.py``: a
safetensors file whose settings are canonical JSON, with one sha256 over settings and tensors),
holding everything needed to rebuild the exact model offline: backbone name, head name and
settings, class names, input spec, weights, metrics, and for a trainer state the optimizer,
schedule, history and the run's fingerprint. Reading it runs no code: the settings are checked
field by field (:class:`~ensemblenet.models.Fields`), the weights are checked against the
architecture before any memory is allocated for it (the model is first built on PyTorch's
``meta`` device), and a backbone whose source runs code (``hub:``) is only rebuilt with
``trust_code=True``.

Settings (``format_version`` 2)::

    {"format": "ensemblenet.model", "format_version": 2, "ensemblenet_version": "...",
     "torch_version": "...", "created": "ISO-8601 UTC", "config": {...ModelConfig...},
     "state_dict": {...tensors...}, "metrics": {...}, "train_state": {...} | absent}

``format_version`` 1 files (ensemblenet 0.1, ``torch.save`` archives with a digest of the tensors
only) are still read, through ``torch.load(weights_only=True)`` and the same checks, until 0.3.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..errors import CheckpointError, EnsembleNetError
from ..spec import INTERPOLATIONS, InputSpec
from ._backbones import SOURCES, code_origin
from ._file_format import read_document, write_document
from ._heads import HEADS, resolve_head
from ._schema import MAX_INPUT_SIDE, Fields
from ._transfer import ModelConfig, TransferModel, rebuild_model

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LEGACY_FORMAT_VERSION",
    "check_header",
    "config_from_file",
    "file_header",
    "load_checkpoint",
    "load_model",
    "model_from_state",
    "save_model",
    "tensors_sha256",
]

log = logging.getLogger("ensemblenet.models")

FORMAT = "ensemblenet.model"
FORMAT_VERSION = 2
#: ensemblenet 0.1's ``torch.save`` archives; read (with ``weights_only=True``) until 0.3
LEGACY_FORMAT_VERSION = 1
_HEADER_FIELDS = ("format", "format_version", "ensemblenet_version", "torch_version", "created")
_CONFIG_FIELDS = ("backbone", "head", "classes", "spec", "num_features", "weights", "weights_source", "extra")
_TRAIN_STATE_FIELDS = ("epoch", "optimizer", "scheduler", "history", "config", "policy", "fingerprint")


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A digest over names, dtypes, shapes and bytes of every tensor, in sorted key order (the
    digest 0.1 files carry; also handy to compare two runs' weights)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_header(fmt: str, version: int) -> dict[str, Any]:
    """The fields every ensemblenet file starts with: format, version, library versions, time."""
    return {
        "format": fmt,
        "format_version": version,
        "ensemblenet_version": __version__,
        "torch_version": str(torch.__version__),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def check_header(fields: Fields, fmt: str, *, legacy: bool, what: str) -> None:
    """The format tag (another ensemblenet kind is named), then the version: an int, not newer
    than this library reads, and the one that matches how the file is stored."""
    found = fields.data.get("format")
    if found != fmt:
        hint = {
            "ensemblenet.model": " It is one model: use load_model() (several: Ensemble.from_checkpoints).",
            "ensemblenet.ensemble": " It is an ensemble file: use Ensemble.load() (command line: -m FILE).",
        }.get(str(found), "")
        if found is None and legacy:
            hint = (
                " It is a torch file without ensemblenet settings (a state dict?): for backbone "
                "weights use load_backbone(name, weights=path)."
            )
        raise CheckpointError(f"{fields.where} is not an ensemblenet {what} (format {found!r}).{hint}")
    version = fields.data.get("format_version")
    if not isinstance(version, bool) and isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{fields.where} has format_version {version}; this ensemblenet ({__version__}) reads up to "
            f"{FORMAT_VERSION}. Upgrade ensemblenet to load it."
        )
    expected = LEGACY_FORMAT_VERSION if legacy else FORMAT_VERSION
    if isinstance(version, bool) or version != expected:
        stored = "a torch.save archive (0.1)" if legacy else "a safetensors file"
        raise fields.error(
            "format_version", f"must be the whole number {expected} in {stored}, got {version!r}"
        )
    for key in _HEADER_FIELDS[2:]:
        fields.str_(key, optional=legacy, max_length=200)


def config_from_file(data: Any, where: str, prefix: str = "config") -> ModelConfig:
    """Check a stored model config field by field and make it a :class:`ModelConfig` (nothing is
    imported or built; whether its source and head are registered is checked when it is built).

    Raises:
        CheckpointError: naming the field: a missing or unknown field, a wrong type, class names
            that are not unique non-empty strings, an input side over 4096 px.
    """
    f = Fields(data, where, prefix)
    f.only(_CONFIG_FIELDS)
    backbone = f.str_("backbone")
    assert backbone is not None  # not optional
    source, sep, model_name = backbone.partition(":")
    if not sep or not source or not model_name:
        raise f.error("backbone", f"must be 'source:name' (e.g. 'torchvision:resnet18'), got {backbone!r}")
    head = f.mapping("head")
    assert head is not None
    head.str_("name", max_length=200)
    for key, value in head.data.items():
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise head.error(
                key, f"must be a plain setting (number, string, true/false, null), got {value!r:.60}"
            )
    spec = f.mapping("spec")
    assert spec is not None
    spec.only(("size", "mean", "std", "interpolation"))
    size = spec.int_list("size", length=2, low=1, high=MAX_INPUT_SIDE)
    mean = spec.float_list("mean", length=3)
    std = spec.float_list("std", length=3, positive=True)
    interpolation = spec.choice("interpolation", INTERPOLATIONS)
    extra = f.mapping("extra", optional=True)
    config = ModelConfig(
        backbone=backbone,
        head={"name": head.data["name"], **head.data},  # the name first, as head_config writes it
        classes=tuple(f.names("classes", low=2)),
        spec=InputSpec(
            size=(size[0], size[1]),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            interpolation=interpolation,
        ),
        num_features=f.int_("num_features", low=1, high=1_000_000),
        weights=f.str_("weights", optional=True, max_length=4096),
        extra=dict(extra.data) if extra is not None else {},
        weights_source=f.str_("weights_source", optional=True, max_length=4096),
    )
    return config


def _check_buildable(config: ModelConfig, where: str, prefix: str) -> None:
    """The backbone source and the head are registered here, and the head accepts its settings.

    Checked when a model is rebuilt, not when a file is only read: a trainer state of a model
    built by hand (an unregistered source) can still be resumed into that model.
    """
    fields = Fields(config.to_dict(), where, prefix)
    source = config.backbone.partition(":")[0]
    if source not in SOURCES:
        raise CheckpointError(
            f"{where} needs the backbone source {source!r} ({fields.name('backbone')} = "
            f"{config.backbone!r}), which is not registered here (registered: {', '.join(SOURCES.names())}). "
            "If it is your own, import the module that calls register_source() before loading; a file "
            "never imports code itself"
        )
    head = fields.mapping("head")
    assert head is not None  # to_dict always has it
    head.registered("name", HEADS, "@register_head('name')")
    try:
        resolve_head(config.head)
    except (EnsembleNetError, TypeError, ValueError) as exc:  # a head's own checks may raise either
        raise head.error("", f"holds settings the {config.head['name']!r} head refuses ({exc})") from None


def _check_train_state(f: Fields) -> None:
    state = f.mapping("train_state", optional=True)
    if state is None:
        return
    state.only(_TRAIN_STATE_FIELDS)
    state.int_("epoch", low=0, high=1_000_000)
    for key in ("optimizer", "scheduler", "history", "config"):
        state.mapping(key)
    policy = state.mapping("policy")
    assert policy is not None
    policy.str_("name", max_length=200)  # the trainer compares it; nothing is rebuilt from it
    state.mapping("fingerprint", optional=True)


def save_model(
    model: TransferModel,
    path: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any] | None = None,
    train_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and optional plain-data ``metrics`` / resumable ``train_state``) atomically.

    Raises:
        OSError: the file cannot be written (the message names it and why; nothing is changed).
        ConfigError: ``metrics`` or ``train_state`` hold something that is not plain data.
    """
    document: dict[str, Any] = {
        **file_header(FORMAT, FORMAT_VERSION),
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
    }
    if train_state is not None:
        document["train_state"] = dict(train_state)
    return write_document(document, path)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    expected_sha256: str | None = None,
) -> dict[str, Any]:
    """Read and check a model file without building the model: format, version, digest, every field.

    Returns the settings with the tensors in place (``"config"``, ``"state_dict"``,
    ``"metrics"``, ``"train_state"`` when it is a trainer state).
    """
    contents = read_document(
        path, what="model file", expected_sha256=expected_sha256, map_location=map_location
    )
    document = dict(contents.document)
    f = Fields(document, f"model file {os.fspath(path)!r}")
    check_header(f, FORMAT, legacy=contents.legacy, what="model file")
    allowed = (*_HEADER_FIELDS, "config", "state_dict", "metrics", "train_state")
    f.only((*allowed, "tensors_sha256") if contents.legacy else allowed)
    state = f.tensors("state_dict")
    if contents.legacy:
        recorded = document.pop("tensors_sha256", None)
        if recorded != tensors_sha256(state):
            raise CheckpointError(
                f"{f.where} is corrupted or was modified: its tensors' sha256 is "
                f"{tensors_sha256(state)[:16]}..., the file records {str(recorded)[:16]}.... Re-create it "
                "or restore a good copy"
            )
        log.warning(
            "%s is a 0.1 file (torch archive, digest of the tensors only); ensemblenet reads those until "
            "0.3: re-save it with save_model(load_model(path), path) for the checked 0.2 format",
            f.where,
        )
    config_from_file(f.get("config"), f.where)
    f.mapping("metrics", optional=True)
    _check_train_state(f)
    return document


def load_model(
    path: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    trust_code: bool = False,
    expected_sha256: str | None = None,
) -> TransferModel:
    """Rebuild the exact model saved by :func:`save_model`, offline, and load its weights strictly.

    Args:
        path: the model file.
        map_location: where the file's tensors are read to.
        trust_code: allow rebuilding a backbone whose source runs code (``hub:`` runs the
            repository's ``hubconf.py``). Off by default: such a file is refused with a message
            naming the repository or folder. Only set it for files and repositories you trust.
        expected_sha256: the sha256 of the whole file as its publisher gave it (``sha256sum``);
            checked before anything in the file is read. The file's own digest proves only that
            the file is intact, not who made it; this proves it is the file that was published.

    Returns:
        The model in eval mode; ``model.metrics`` holds the metrics stored with it.

    Raises:
        CheckpointError: one line naming the problem: not a regular file, not an ensemblenet file
            (it says what it is), another sha256, a modified file, an invalid field, weights that
            do not fit, or a backbone that would run code without ``trust_code``.
    """
    payload = load_checkpoint(path, map_location=map_location, expected_sha256=expected_sha256)
    where = f"model file {os.fspath(path)!r}"
    model = model_from_state(payload["config"], payload["state_dict"], where=where, trust_code=trust_code)
    model.metrics = dict(payload.get("metrics") or {})
    return model


def model_from_state(
    config: Mapping[str, Any] | ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    where: str,
    trust_code: bool = False,
    prefix: str = "config",
) -> TransferModel:
    """Rebuild a model from its stored config and load ``state_dict`` strictly; eval mode.

    The config is checked first (:func:`config_from_file`), then consent for a backbone that runs
    code, then the architecture is built on the ``meta`` device (no memory, no weights) and its
    tensor names and shapes compared with ``state_dict``; only then is it built for real. ``where``
    names the file (and member) in the errors, ``prefix`` the config's place in the file.
    """
    model_config = config if isinstance(config, ModelConfig) else config_from_file(config, where, prefix)
    _check_buildable(model_config, where, prefix)
    origin = code_origin(model_config.backbone)
    if origin is not None and not trust_code:
        raise CheckpointError(
            f"refused to rebuild {model_config.backbone!r} from {where}: that backbone runs code from "
            f"{origin}, and loading a file never runs code without your consent. If you trust it, load "
            "with trust_code=True (load_model, Ensemble.load) or pass --trust-code on the command line"
        )
    try:
        with torch.device("meta"):
            skeleton = rebuild_model(model_config)
        _check_fit(skeleton.state_dict(), state_dict, where, model_config.backbone)
        model = rebuild_model(model_config)
    except CheckpointError:
        raise
    except (EnsembleNetError, TypeError, ValueError, RuntimeError) as exc:  # settings a builder refuses
        raise CheckpointError(f"cannot rebuild the model of {where}: {' '.join(str(exc).split())}") from None
    model.load_state_dict(dict(state_dict), strict=True)
    return model.eval()


def _check_fit(
    expected: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor], where: str, backbone: str
) -> None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [
        f"{k} {tuple(stored[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(stored))
        if tuple(stored[k].shape) != tuple(expected[k].shape)
    ]
    problems = [
        f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''} ({len(items)})"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape (file vs model)", shapes),
        )
        if items
    ]
    if problems:
        raise CheckpointError(
            f"weights in {where} do not fit the model rebuilt from its own config ({backbone}): "
            + "; ".join(problems)
        )
