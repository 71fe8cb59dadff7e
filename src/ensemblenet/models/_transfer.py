"""``TransferModel``: a backbone, a head, the backbone's input spec and the class names, as one module.

The model normalizes its own input, so callers feed it images as ``uint8`` (0..255) or float
(0..1) tensors of shape ``(N, 3, H, W)`` at ``model.spec.size``; the mean/std live in buffers and
in the checkpoint. That is what lets ensemble members with different preprocessing share one
decoded batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, UnknownNameError
from ..spec import InputSpec
from ._backbones import SOURCES, load_backbone
from ._heads import Head, head_config, resolve_head
from ._source_module import backbone_from_module

__all__ = ["ModelConfig", "TransferModel", "create_model", "rebuild_model"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`TransferModel` offline (its weights aside)."""

    backbone: str
    head: dict[str, Any]
    classes: tuple[str, ...]
    spec: InputSpec
    num_features: int
    weights: str | None = None  # the backbone's starting weights as asked for (informational)
    extra: dict[str, Any] = field(default_factory=dict)
    #: what those weights really were (``Backbone.weights_source``): "DEFAULT" differs by machine
    weights_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "head": dict(self.head),
            "classes": list(self.classes),
            "spec": self.spec.to_dict(),
            "num_features": self.num_features,
            "weights": self.weights,
            "weights_source": self.weights_source,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        return cls(
            backbone=str(data["backbone"]),
            head=dict(data["head"]),
            classes=tuple(str(c) for c in data["classes"]),
            spec=InputSpec.from_dict(data["spec"]),
            num_features=int(data["num_features"]),
            weights=data.get("weights"),
            extra=dict(data.get("extra", {})),
            weights_source=data.get("weights_source"),
        )


class TransferModel(nn.Module):
    """Backbone + head with built-in normalization. ``forward`` returns logits ``(N, C)``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: nn.Module, head: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = config
        # Buffers, not constants: they move with .to(device) and are exported to ONNX.
        self.register_buffer("mean", torch.tensor(config.spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.spec.std).view(1, 3, 1, 1), persistent=False)
        self.metrics: dict[str, Any] = {}  # filled by load_model from the checkpoint

    @property
    def spec(self) -> InputSpec:
        return self.config.spec

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 0..255 or float 0..1 images -> the backbone's normalized float input."""
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0)
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features ``(N, num_features)``."""
        return self.backbone(self.normalize(images))  # type: ignore[no-any-return]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # type: ignore[no-any-return]

    def extra_repr(self) -> str:
        return f"backbone={self.config.backbone!r}, classes={list(self.classes)}, spec={self.spec}"


def create_model(
    backbone: str | nn.Module,
    classes: Sequence[str],
    *,
    head: str | Head | Mapping[str, Any] = "mlp",
    weights: str | os.PathLike[str] | None = "DEFAULT",
    input_spec: InputSpec | None = None,
    num_features: int | None = None,
    name: str | None = None,
) -> TransferModel:
    """Load ``backbone`` (see :func:`ensemblenet.load_backbone`) and put a new head on it.

    Args:
        backbone: ``"torchvision:resnet18"``, ``"timm:tf_efficientnet_lite0"``, ``"hub:owner/repo:entry"``;
            or a module object: a timm model, or any ``nn.Module`` mapping normalized images to pooled
            features, with ``num_features`` (see :mod:`ensemblenet.models`, "bring your own backbone").
        classes: class names, in label order.
        head: ``"linear"``, ``"mlp"``, a mapping ``{"name": ..., **settings}`` or a head object.
        weights: ``"DEFAULT"`` (the backbone's ImageNet weights, as :func:`~ensemblenet.finetune`
            uses), another weights name, a local file path, or None (random init). For a module
            object: ``"DEFAULT"``/None keep its own weights, a file is loaded into it.
        input_spec: overrides the backbone's input size / normalization (a plain module object
            without one gets ImageNet's at 224 px).
        num_features: a plain module object's feature width.
        name: a module object's ``"source:name"`` in the model file (default ``timm:<architecture>``
            or ``module:<ClassName>``); loading the file needs that source registered.
    """
    classes = tuple(str(c) for c in classes)
    if len(classes) < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {list(classes)}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"class names must be unique, got {list(classes)}")
    head_obj = resolve_head(head)
    if isinstance(backbone, nn.Module):
        loaded, backbone_name = backbone_from_module(
            backbone, num_features=num_features, input_spec=input_spec, weights=weights, name=name
        )
        extra = {"module_class": f"{type(backbone).__module__}.{type(backbone).__qualname__}"}
        weights = None  # recorded in weights_source instead: a name would not rebuild the object
    else:
        if num_features is not None or name is not None:
            raise ConfigError(
                "num_features= and name= are for a backbone object; a 'source:name' backbone states its own"
            )
        loaded, backbone_name, extra = (
            load_backbone(backbone, weights=weights, input_spec=input_spec),
            backbone,
            {},
        )
    config = ModelConfig(
        backbone=backbone_name,
        head=head_config(head_obj),
        classes=classes,
        spec=loaded.spec,
        num_features=loaded.num_features,
        weights=None if weights is None else str(weights),
        weights_source=loaded.weights_source,
        extra=extra,
    )
    return TransferModel(loaded.module, head_obj.build(loaded.num_features, len(classes)), config)


def rebuild_model(config: ModelConfig) -> TransferModel:
    """Build the architecture described by ``config`` with random weights (no download, no network)."""
    head_obj = resolve_head(config.head)
    try:
        loaded = load_backbone(config.backbone, weights=None, input_spec=config.spec)
    except UnknownNameError:
        source = config.backbone.partition(":")[0]
        made_from = config.extra.get("module_class")
        if made_from is None or source in SOURCES:
            raise
        raise CheckpointError(
            f"this model's backbone was a {made_from} object, saved as {config.backbone!r}; to load the "
            f"file, register a source that builds it: register_source({source!r}, lambda name, weights: "
            f"Backbone(<a new {made_from.rpartition('.')[2]}>, {config.num_features}, spec))"
        ) from None
    if loaded.num_features != config.num_features:
        raise ConfigError(
            f"backbone {config.backbone!r} now gives {loaded.num_features} features, the config says "
            f"{config.num_features}; the installed library version builds a different architecture."
        )
    return TransferModel(loaded.module, head_obj.build(loaded.num_features, len(config.classes)), config)
