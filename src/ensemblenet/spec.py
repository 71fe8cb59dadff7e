"""What a backbone expects as input: size, normalization and resampling.

The spec travels with the backbone and is stored in every checkpoint, so each ensemble member
preprocesses its own input (two members with different sizes and statistics work side by side).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "InputSpec"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass(frozen=True)
class InputSpec:
    """Input geometry and statistics of a backbone.

    Images are resized to ``size`` (height, width) without cropping, as the reference notebook
    does, converted to ``[0, 1]`` and normalized with ``mean``/``std`` per RGB channel.

    >>> InputSpec(size=(240, 240), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).size
    (240, 240)
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        raw: Any = self.size
        if isinstance(raw, int):
            raw = (raw, raw)
        size = tuple(int(s) for s in raw)
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"InputSpec.size must be (height, width) with positive ints, got {self.size!r}")
        object.__setattr__(self, "size", size)
        for field in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, field))
            if len(value) != 3:
                raise ConfigError(f"InputSpec.{field} needs 3 values (R, G, B), got {getattr(self, field)!r}")
            object.__setattr__(self, field, value)
        if min(self.std) <= 0:
            raise ConfigError(f"InputSpec.std must be positive, got {self.std!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"InputSpec.interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, floats, str): safe for JSON and ``torch.load(weights_only=True)``."""
        return {
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            size=tuple(data["size"]),  # type: ignore[arg-type]
            mean=tuple(data["mean"]),  # type: ignore[arg-type]
            std=tuple(data["std"]),  # type: ignore[arg-type]
            interpolation=str(data.get("interpolation", "bilinear")),
        )
