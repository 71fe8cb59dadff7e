"""Test-time augmentation: average a member's probabilities over flipped (and cropped) views.

Cost, stated: a member runs ``TTA.passes`` forward passes per image instead of one —
``(1 + crops) * (2 if flip else 1)``: 2 for the default horizontal flip, 12 with five crops and
flips. An ensemble multiplies that by its number of members.

Crops are taken from the image at the member's input size: the four corners and the centre, each
``crop_scale`` of the height and width, enlarged back (bilinear) to the member's size.

>>> import torch
>>> from ensemblenet.ensemble import TTA
>>> TTA().passes, TTA(crops=5).passes, TTA(flip=False, crops=5).passes
(2, 12, 6)
>>> len(TTA(crops=5).views(torch.zeros(1, 3, 32, 32)))
12
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["TTA", "MirrorOnly", "member_probs", "resolve_tta"]


@dataclass(frozen=True)
class TTA:
    """Which views to average.

    Args:
        flip: add the horizontally flipped image (and flipped crops).
        crops: 0 (none) or 5 (four corners + centre).
        crop_scale: side of each crop as a fraction of the member's input size.
    """

    flip: bool = True
    crops: int = 0
    crop_scale: float = 0.875

    def __post_init__(self) -> None:
        if self.crops not in (0, 5):
            raise ConfigError(f"TTA crops must be 0 or 5 (four corners + centre), got {self.crops!r}")
        if not 0.0 < self.crop_scale < 1.0:
            raise ConfigError(f"TTA crop_scale must be in (0, 1), e.g. 0.875, got {self.crop_scale!r}")

    @property
    def passes(self) -> int:
        """Forward passes per image and member."""
        return (1 + self.crops) * (2 if self.flip else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The augmented copies of ``images`` ``(N, 3, H, W)``, same size and dtype convention."""
        base = [images]
        if self.crops:
            h, w = int(images.shape[-2]), int(images.shape[-1])  # plain ints, also when traced for ONNX
            ch, cw = max(1, round(h * self.crop_scale)), max(1, round(w * self.crop_scale))
            x = images.float().div(255.0) if images.dtype == torch.uint8 else images
            corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
            for top, left in corners:
                crop = x[..., top : top + ch, left : left + cw]
                # Crops are only ever enlarged, where antialiasing does nothing; plain bilinear also
                # exports to ONNX.
                base.append(
                    F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
                )
        if self.flip:
            base += [torch.flip(v, dims=(-1,)) for v in base]
        return base


@dataclass(frozen=True)
class MirrorOnly(TTA):
    """Only the mirrored image (one pass): with the plain pass, the two halves of ``TTA()``, so
    both can be scored on validation at the cost of ``TTA()`` alone. Never stored in a file."""

    @property
    def passes(self) -> int:
        return 1

    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [torch.flip(images, dims=(-1,))]


def resolve_tta(tta: TTA | bool | str | None) -> TTA | None:
    """``None``/``False`` (off), ``True``/``"flip"`` (flip), ``"flip+crops"`` or a :class:`TTA`."""
    if tta is None or tta is False:
        return None
    if tta is True or tta == "flip":
        return TTA()
    if tta == "flip+crops":
        return TTA(crops=5)
    if isinstance(tta, TTA):
        return tta
    raise ConfigError(f"tta must be None, True, 'flip', 'flip+crops' or a TTA(...), got {tta!r}")


def member_probs(
    member: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tta: TTA | None = None
) -> torch.Tensor:
    """``member``'s softmax probabilities (float32 ``(N, C)``), averaged over ``tta``'s views.

    ``member`` is a model or anything called like one (an engine's runner)."""
    if tta is None:
        return torch.softmax(member(images).float(), dim=1)
    views = tta.views(images)
    total = torch.softmax(member(views[0]).float(), dim=1)
    for view in views[1:]:
        total = total + torch.softmax(member(view).float(), dim=1)
    return total / len(views)
