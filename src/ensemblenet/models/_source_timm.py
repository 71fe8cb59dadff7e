"""The ``timm:`` source (optional dependency, imported lazily)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from ..errors import MissingDependencyError, UnknownNameError, WeightsUnavailableError, unknown_name_message
from ..spec import INTERPOLATIONS, InputSpec
from ._source_common import Backbone, WeightsArg, from_catalog, is_network_error, unavailable
from ._weight_files import load_into, read_state_dict

__all__ = ["is_timm_model", "load_timm", "timm_backbone"]

_TIMM_DEFAULT_NAMES = ("DEFAULT", "imagenet")


def _import_timm() -> ModuleType:
    try:
        return importlib.import_module("timm")
    except ImportError as exc:
        raise MissingDependencyError(
            "'timm:' backbones need the timm package: pip install timm (or pip install 'ensemblenet[timm]')."
        ) from exc


def load_timm(name: str, weights: WeightsArg) -> Backbone:
    timm = _import_timm()
    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        raise UnknownNameError(unknown_name_message("timm model", base, timm.list_models()))
    backbone = f"timm:{name}"
    source: str | None = None
    if weights is None:
        model = timm.create_model(name, pretrained=False, num_classes=0)
    elif isinstance(weights, Path):
        source = f"file {weights}"
        model = timm.create_model(name, pretrained=False)
        ignore = _timmclassifier_keys(model)
        load_into(model, read_state_dict(weights), ignore_missing=ignore, source=str(weights))
        model.reset_classifier(0)
    else:
        full_name = _timm_pretrained_name(timm, base, tag, weights)
        found = from_catalog(backbone, (weights,), lambda: timm.create_model(full_name, pretrained=False))
        if found is not None:
            model, source = found
        else:
            source = f"timm {full_name}"
            try:
                model = timm.create_model(full_name, pretrained=True)
            except Exception as exc:
                if is_network_error(exc):
                    raise unavailable(backbone, weights, exc, url=_timm_url(timm, full_name)) from exc
                raise
        model.reset_classifier(0)
    return timm_backbone(model, source)


def is_timm_model(module: nn.Module) -> bool:
    """Whether ``module`` is a model object built by timm (its classifier can be reset)."""
    return type(module).__module__.startswith("timm.") and callable(getattr(module, "reset_classifier", None))


def timm_backbone(model: nn.Module, source: str | None) -> Backbone:
    """A timm model whose classifier is already reset, with the input spec its pretrained config names."""
    timm = _import_timm()
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
    num_features: Any = getattr(model, "head_hidden_size", None) or model.num_features
    return Backbone(model, int(num_features), spec, source)


def _timmclassifier_keys(model: nn.Module) -> list[str]:
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
