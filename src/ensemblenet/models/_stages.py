"""A backbone as a sequence of stages, so a frozen prefix can be split from the trainable rest.

Stages, per backbone family (``stages=k`` freezes the first ``k``):

* torchvision MobileNetV2: the 19 blocks of ``features``;
* torchvision ResNet: the stem (conv1, bn1, relu, maxpool), then ``layer1`` ... ``layer4`` (5);
* timm EfficientNet (``tf_efficientnet_lite0``...): the stem (conv_stem, bn1), then each of ``blocks`` (8);
* any ``nn.Sequential``: its children.

:class:`~ensemblenet.FreezeStages` freezes such a prefix; the frozen-feature cache
(:func:`~ensemblenet.fit_with_feature_cache`) computes it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["backbone_stages", "split_backbone"]


class _Call(nn.Module):
    """A function as a module (pooling, flatten, timm's ``forward_head``)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class _Steps(nn.Module):
    """Modules applied in order. Holds references to the backbone's own modules (shared weights)."""

    def __init__(self, steps: list[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


def backbone_stages(backbone: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """``(stages, tail)``: applying the stages, then the tail, in order equals ``backbone(x)``.

    Raises:
        ConfigError: for a backbone whose stages are not known (see the module docstring).
    """
    kind = type(backbone).__name__
    b: Any = backbone  # attribute access by family, checked by the conditions
    if kind == "MobileNetV2" and isinstance(getattr(backbone, "features", None), nn.Sequential):
        # torchvision's MobileNetV2.forward: features -> adaptive_avg_pool2d -> flatten -> classifier
        pool = _Call(lambda x: nn.functional.adaptive_avg_pool2d(x, (1, 1)).flatten(1), "avgpool+flatten")
        return list(b.features), [pool, b.classifier]
    if kind == "ResNet" and hasattr(backbone, "layer4"):
        stem = nn.Sequential(b.conv1, b.bn1, b.relu, b.maxpool)
        return [stem, b.layer1, b.layer2, b.layer3, b.layer4], [b.avgpool, nn.Flatten(1), b.fc]
    if kind == "EfficientNet" and hasattr(backbone, "conv_stem") and hasattr(backbone, "forward_head"):
        return [nn.Sequential(b.conv_stem, b.bn1), *b.blocks], [
            b.conv_head,
            b.bn2,
            _Call(b.forward_head, "head"),
        ]
    if isinstance(backbone, nn.Sequential):
        return list(backbone), []
    raise ConfigError(
        f"the feature cache and freeze_stages know the stages of torchvision MobileNetV2 and ResNet, timm "
        f"EfficientNet and nn.Sequential backbones, not {kind}; use freeze='head_only' (whole backbone) "
        "or train without the feature cache"
    )


def split_backbone(backbone: nn.Module, stages: int | None) -> tuple[nn.Module, nn.Module]:
    """``(prefix, rest)`` with ``rest(prefix(x)) == backbone(x)``; ``stages=None``: all in the prefix
    (any backbone: the whole module is the prefix, so no stage table is needed). A negative
    ``stages`` counts from the end, as in slicing: ``-1`` puts every stage but the last in the
    prefix, whatever the backbone's number of stages."""
    if stages is None:
        return backbone, _Steps([])
    blocks, tail = backbone_stages(backbone)
    n = len(blocks)
    if isinstance(stages, bool) or not isinstance(stages, int) or not -n <= stages <= n:
        raise ConfigError(
            f"stages={stages!r}: {type(backbone).__name__} has {n} stages, so stages must be an int in "
            f"-{n}..{n} (k: the first k stages; -k: all but the last k)"
        )
    cut = stages if stages >= 0 else n + stages
    return _Steps(blocks[:cut]), _Steps(blocks[cut:] + tail)
