"""The ``torchvision:`` source: ``torchvision.models.get_model`` with torchvision's weights enums."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torchvision.models as tvm

from ..errors import UnknownNameError, unknown_name_message
from ..spec import INTERPOLATIONS, InputSpec
from ._source_common import (
    Backbone,
    WeightsArg,
    classifier_keys,
    from_catalog,
    is_network_error,
    strip_classifier,
    unavailable,
)
from ._weight_files import load_into, read_state_dict

__all__ = ["load_torchvision", "tv_member", "tv_spec"]


def tv_spec(weights_enum_member: Any) -> InputSpec:
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


def tv_member(weights_enum: Any, weights: str, backbone: str) -> tuple[str, Any]:
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


def load_torchvision(name: str, weights: WeightsArg) -> Backbone:
    names = tvm.list_models(module=tvm)
    if name not in names:
        fix = "Use another source (e.g. 'timm:') for models torchvision does not have."
        raise UnknownNameError(unknown_name_message("torchvision model", name, names, fix))
    backbone = f"torchvision:{name}"
    weights_enum = tvm.get_model_weights(name)
    source: str | None = None
    if weights is None:
        model, spec = tvm.get_model(name, weights=None), InputSpec()
    elif isinstance(weights, Path):
        source = f"file {weights}"
        model = tvm.get_model(name, weights=None)
        load_into(model, read_state_dict(weights), ignore_missing=classifier_keys(model), source=str(weights))
        # A local file is most often the official one fetched elsewhere: use its preprocessing.
        spec = tv_spec(weights_enum.DEFAULT)
    else:
        key, member = tv_member(weights_enum, weights, backbone)
        spec = tv_spec(member)
        found = from_catalog(backbone, (key, member.name), lambda: tvm.get_model(name, weights=None))
        if found is not None:
            model, source = found
        else:
            source = f"torchvision {member}"  # e.g. MobileNet_V2_Weights.IMAGENET1K_V2
            try:
                model = tvm.get_model(name, weights=member)
            except Exception as exc:
                if is_network_error(exc):
                    raise unavailable(backbone, weights, exc, url=member.url) from exc
                raise
    return Backbone(model, strip_classifier(model), spec, source)
