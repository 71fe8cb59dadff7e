"""One backbone's view of a decoded image: a plain resize to ``(height, width)``, without cropping.

The resize table below is the only place that says what an interpolation name means, for a PIL
image (decoded files) and for a tensor batch (images given as tensors, and the ONNX graph), so
an ensemble member sees the same kind of resize whichever way its images arrive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError, close_matches
from ..spec import INTERPOLATIONS, InputSpec

__all__ = ["View"]

# name -> (PIL resampling filter, F.interpolate mode, F.interpolate mode that exports to ONNX).
# F.interpolate has no Lanczos; bicubic is its closest kernel. "nearest-exact" is PIL's nearest
# (pixel centres), which torch's plain "nearest" is not, but only "nearest" exports (opset 17).
_RESIZE: dict[str, tuple[Image.Resampling, str, str]] = {
    "nearest": (Image.Resampling.NEAREST, "nearest-exact", "nearest"),
    "bilinear": (Image.Resampling.BILINEAR, "bilinear", "bilinear"),
    "bicubic": (Image.Resampling.BICUBIC, "bicubic", "bicubic"),
    "lanczos": (Image.Resampling.LANCZOS, "bicubic", "bicubic"),
}


@dataclass(frozen=True)
class View:
    """One preprocessing of a decoded image: a resize to ``size`` = (height, width), no crop.

    Ensemble members that share a view share the resized tensor.

    >>> View.of(InputSpec(size=(240, 240), interpolation="bicubic"))
    View(size=(240, 240), interpolation='bicubic')
    """

    size: tuple[int, int]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        size: Any = self.size
        if isinstance(size, int):
            size = (size, size)
        try:
            size = tuple(int(s) for s in size)
        except (TypeError, ValueError):
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"View.size must be (height, width) with positive ints, got {self.size!r}")
        object.__setattr__(self, "size", size)
        if self.interpolation not in _RESIZE:
            near = close_matches(str(self.interpolation), INTERPOLATIONS)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"unknown interpolation {self.interpolation!r}.{hint} "
                f"Valid values: {', '.join(INTERPOLATIONS)}."
            )

    @classmethod
    def of(cls, spec: InputSpec | View) -> View:
        """The view a backbone with input spec ``spec`` needs (a View is returned unchanged)."""
        if isinstance(spec, View):
            return spec
        if not isinstance(spec, InputSpec):
            raise ConfigError(f"expected an InputSpec or a View, got {type(spec).__name__}: {spec!r}")
        return cls(size=spec.size, interpolation=spec.interpolation)

    def apply(self, image: Image.Image) -> torch.Tensor:
        """Resize an RGB image to this view and return it as a ``uint8`` tensor ``(3, H, W)``."""
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), _RESIZE[self.interpolation][0])
        # HWC -> CHW in numpy: torch's own .contiguous() of this small tensor goes through its
        # intra-op thread pool, which on a busy 2-core machine cost 13 ms per image, about 7 times
        # the JPEG decode and the resize together. np.array always copies, so the tensor never
        # shares PIL's read-only buffer (np.ascontiguousarray returns it as is when the transpose
        # is already contiguous, e.g. a 1-pixel-wide image, and torch then warns).
        pixels = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(np.array(pixels.transpose(2, 0, 1), order="C"))

    def resize_batch(self, images: torch.Tensor, *, exportable: bool = False) -> torch.Tensor:
        """Resize a batch ``(N, 3, H, W)`` (uint8 0..255 or float 0..1) to this view, as float 0..1.

        A batch already at this size is returned unchanged. ``exportable=True`` is for graphs that
        are exported to ONNX, which has neither an antialiased resize (shrinking then aliases a
        little) nor torch's ``nearest-exact``.
        """
        if tuple(images.shape[-2:]) == self.size:
            return images
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images
        _, eager_mode, export_mode = _RESIZE[self.interpolation]
        mode = export_mode if exportable else eager_mode
        smooth = not mode.startswith("nearest")
        resized = F.interpolate(
            x,
            size=self.size,
            mode=mode,
            antialias=smooth and not exportable,
            align_corners=False if smooth else None,
        )
        return resized.clamp(0.0, 1.0)  # bicubic overshoots
