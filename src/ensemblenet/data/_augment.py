"""Training-time augmentation: named presets built on ``torchvision.transforms.v2``.

An augmentation works on the ``uint8`` ``(3, H, W)`` tensors a view produces, *after* resizing
(and after the decoded-image cache, which stores un-augmented pixels), so every epoch draws new
random crops from the same cached pixels. Presets:

* ``"none"``: nothing (``augment=False``).
* ``"flip"``: a left-right flip with probability 0.5 (``augment=True``; one ``torch.rand`` coin per
  image, as in ensemblenet 0.1, so runs made then are reproduced exactly).
* ``"light"``: the flip, then a random resized crop back to the view's size, keeping 35-100 % of
  the image area at aspect ratios 3/4-4/3 (``RandomResizedCrop``'s rule with a gentler lower
  bound than ImageNet training's 8 %: a small data set's objects are often small already), drawn
  in coordinates relative to the image and applied with ``transforms.v2.functional.resized_crop``.
* ``"strong"``: ``"light"``, then ``TrivialAugmentWide`` (one random photometric or geometric
  operation of random strength per image; Müller & Hutter, 2021).

Every random draw comes from torch's global generator (the trainer seeds it per epoch, and
DataLoader workers seed it per worker), so a run is reproduced by its seed. When an image has
several views (ensemble members with different input sizes), each view gets the *same* random
parameters (the crop is drawn relative to the image size), so every member sees the same picture;
only ``TrivialAugmentWide``'s translations are in pixels, as torchvision defines them.

>>> import torch
>>> from ensemblenet.data import resolve_augment
>>> augment = resolve_augment("light")
>>> image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
>>> _ = torch.manual_seed(0)
>>> augment([image])[0].shape
torch.Size([3, 32, 32])
>>> resolve_augment(True).name, resolve_augment(False) is None
('flip', True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch
from torchvision.transforms import v2

from ..errors import ConfigError, UnknownNameError, unknown_name_message

__all__ = ["AUGMENTATIONS", "AugmentLike", "Augmentation", "resolve_augment"]

#: The preset names, weakest first.
AUGMENTATIONS: tuple[str, ...] = ("none", "flip", "light", "strong")

#: The smallest share of the image area ``"light"`` and ``"strong"`` crop to.
LIGHT_MIN_SCALE = 0.35


def _flip(image: torch.Tensor) -> torch.Tensor:
    # One coin per image, drawn exactly as ensemblenet 0.1 drew it (so flip-only runs are unchanged).
    return image.flip(-1) if bool(torch.rand(()) < 0.5) else image


def _crop(image: torch.Tensor) -> torch.Tensor:
    # Drawn relative to the image (area share, aspect ratio, offsets), so views of one image at
    # different sizes get the same crop; RandomResizedCrop would draw pixel offsets per size.
    area = float(torch.empty(()).uniform_(LIGHT_MIN_SCALE, 1.0))
    ratio = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3))))
    offset_y, offset_x = torch.rand(2).tolist()
    height, width = image.shape[-2:]
    h = max(1, min(height, round(height * math.sqrt(area / ratio))))
    w = max(1, min(width, round(width * math.sqrt(area * ratio))))
    top, left = round(offset_y * (height - h)), round(offset_x * (width - w))
    return v2.functional.resized_crop(image, top, left, h, w, [height, width], antialias=True)  # type: ignore[no-any-return]


def _trivial(image: torch.Tensor) -> torch.Tensor:
    return v2.TrivialAugmentWide()(image)  # type: ignore[no-any-return]


_STEPS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "flip": (_flip,),
    "light": (_flip, _crop),
    "strong": (_flip, _crop, _trivial),
}


@dataclass(frozen=True)
class Augmentation:
    """A named preset (see the module docstring), callable on the views of one image.

    Attributes:
        name: ``"flip"``, ``"light"`` or ``"strong"``.
    """

    name: str
    steps: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = field(repr=False, compare=False, default=())

    def __call__(self, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The augmented ``uint8`` ``(3, H, W)`` views of one image, all with the same random draws."""
        if len(views) <= 1:
            return tuple(self._apply(v) for v in views)
        state = torch.get_rng_state()
        out = []
        for view in views:
            torch.set_rng_state(state)  # the same coin and crop (relative to the size) for every view
            out.append(self._apply(view))
        return tuple(out)

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            image = step(image)
        return image

    @property
    def only_flips(self) -> bool:
        """True for ``"flip"``: its only outcomes are the image and its mirror."""
        return self.name == "flip"


#: What an ``augment=`` setting accepts: a preset name, True (``"flip"``), False/None (off) or an
#: :class:`Augmentation`.
AugmentLike: TypeAlias = "bool | str | Augmentation | None"


def resolve_augment(augment: Any) -> Augmentation | None:
    """The :class:`Augmentation` for a setting, or None for no augmentation.

    Raises:
        UnknownNameError: an unknown preset name (the valid ones and close matches are listed).
        ConfigError: something that is not a name, a bool or an Augmentation.
    """
    if augment is None or augment is False or augment == "none":
        return None
    if augment is True:
        augment = "flip"
    if isinstance(augment, Augmentation):
        return augment
    if not isinstance(augment, str):
        raise ConfigError(
            f"augment must be one of {list(AUGMENTATIONS)}, True (= 'flip') or False (= 'none'), "
            f"got {type(augment).__name__} {augment!r}"
        )
    if augment not in _STEPS:
        raise UnknownNameError(
            unknown_name_message(
                "augmentation", augment, AUGMENTATIONS, "Pass augment='flip', 'light' or 'strong'."
            )
        )
    return Augmentation(augment, _STEPS[augment])
