"""A small, explicit validator for the settings stored in ensemblenet files.

:class:`Fields` reads one mapping of a file field by field; every problem becomes a one-line
:class:`~ensemblenet.CheckpointError` naming the file, the field (``config.spec.size``), what it
must be and what it is. The model and ensemble file schemas are written with it
(``models/_checkpoint.py``, ``ensemble/_files.py``); there is no other dependency.

>>> from ensemblenet.models import Fields
>>> Fields({"size": [224, 224]}, "model file 'm.pt'").int_list("size", length=2, low=1, high=4096)
[224, 224]
>>> from ensemblenet import CheckpointError
>>> try:
...     Fields({"size": [60000, 60000]}, "model file 'm.pt'").int_list("size", length=2, low=1, high=4096)
... except CheckpointError as exc:
...     print(exc)  # doctest: +ELLIPSIS
invalid model file 'm.pt': size must be a list of 2 whole numbers from 1 to 4096, got [60000, 60000]...
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

import torch

from ..errors import CheckpointError
from ..registry import Registry

__all__ = ["MAX_INPUT_SIDE", "Fields"]

#: The largest input side (pixels) a file may ask for: 4096 x 4096 RGB float32 is 200 MB per image.
MAX_INPUT_SIDE = 4096
_FIX = "Re-create the file with ensemblenet, or restore a good copy"
_MISSING = object()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Fields:
    """One mapping read from a file, checked field by field.

    Args:
        data: what the file holds at this place (checked to be a mapping).
        where: the file, for messages ("model file 'm.pt'").
        prefix: the dotted path of this mapping inside the file ("config.spec").
    """

    def __init__(self, data: Any, where: str, prefix: str = "") -> None:
        self.where, self.prefix = where, prefix
        if not isinstance(data, Mapping):
            raise self.error("", f"must be a mapping (JSON object), got {type(data).__name__}")
        self.data: Mapping[str, Any] = data

    def name(self, key: str) -> str:
        """The dotted path of ``key``."""
        return f"{self.prefix}.{key}" if self.prefix and key else (key or self.prefix or "the file")

    def error(self, key: str, problem: str) -> CheckpointError:
        """A one-line error naming the file and the field."""
        return CheckpointError(f"invalid {self.where}: {self.name(key)} {problem}. {_FIX}")

    def only(self, allowed: Collection[str]) -> None:
        """Refuse keys this version does not know (a newer writer, or an edit)."""
        unknown = sorted(str(k) for k in self.data if k not in allowed)
        if unknown:
            raise self.error(unknown[0], f"is not a known field here (known: {', '.join(sorted(allowed))})")

    def get(self, key: str, *, optional: bool = False) -> Any:
        """The raw value (None for an absent optional field)."""
        value = self.data.get(key, _MISSING)
        if value is _MISSING:
            if optional:
                return None
            raise self.error(key, "is missing")
        return value

    def mapping(self, key: str, *, optional: bool = False) -> Fields | None:
        """The nested mapping ``key`` as :class:`Fields` (None when optional and absent or null)."""
        value = self.get(key, optional=optional)
        if value is None and optional:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a mapping (JSON object), got {_shown(value)}")
        return Fields(value, self.where, self.name(key))

    def str_(self, key: str, *, optional: bool = False, max_length: int = 1000) -> str | None:
        """A string of 1..``max_length`` characters (None when optional and absent or null)."""
        value = self.get(key, optional=optional)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or len(value) > max_length:
            raise self.error(
                key, f"must be a non-empty string of at most {max_length} characters, got {_shown(value)}"
            )
        return value

    def int_(self, key: str, *, low: int, high: int) -> int:
        """A whole number in ``low..high`` (``True`` is not a number)."""
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"must be a whole number from {low} to {high}, got {_shown(value)}")
        return value

    def bool_(self, key: str) -> bool:
        """``true`` or ``false``."""
        value = self.get(key)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {_shown(value)}")
        return value

    def number(self, key: str, *, above: float, below: float) -> float:
        """A finite number strictly between ``above`` and ``below``."""
        value = self.get(key)
        ok = not isinstance(value, bool) and isinstance(value, (int, float))
        if not ok or not above < value < below:
            raise self.error(key, f"must be a number between {above} and {below}, got {_shown(value)}")
        return float(value)

    def int_list(self, key: str, *, length: int, low: int, high: int) -> list[int]:
        """A list of ``length`` whole numbers in ``low..high``."""
        value = self.get(key)
        ok = isinstance(value, (list, tuple)) and len(value) == length
        ok = ok and all(not isinstance(v, bool) and isinstance(v, int) and low <= v <= high for v in value)
        if not ok:
            raise self.error(
                key, f"must be a list of {length} whole numbers from {low} to {high}, got {_shown(value)}"
            )
        return list(value)

    def float_list(self, key: str, *, length: int, positive: bool = False) -> list[float]:
        """A list of ``length`` finite numbers (each > 0 with ``positive``)."""
        value = self.get(key)
        ok = isinstance(value, (list, tuple)) and len(value) == length
        ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) for v in value)
        ok = ok and all(math.isfinite(v) and (v > 0 or not positive) for v in value)
        if not ok:
            rule = "positive finite numbers" if positive else "finite numbers"
            raise self.error(key, f"must be a list of {length} {rule}, got {_shown(value)}")
        return [float(v) for v in value]

    def choice(self, key: str, options: Collection[str]) -> str:
        """One of ``options``."""
        value = self.get(key)
        if value not in options:
            raise self.error(key, f"must be one of {sorted(options)}, got {_shown(value)}")
        return str(value)

    def names(self, key: str, *, low: int = 1, high: int = 100_000) -> list[str]:
        """A list of ``low..high`` unique non-empty strings (class names)."""
        value = self.get(key)
        if not isinstance(value, (list, tuple)) or not low <= len(value) <= high:
            raise self.error(key, f"must be a list of {low} to {high} names, got {_shown(value)}")
        bad = [v for v in value if not isinstance(v, str) or not v.strip() or len(v) > 1000]
        if bad:
            raise self.error(key, f"must hold non-empty strings only, got {_shown(bad[0])}")
        repeated = sorted({v for v in value if value.count(v) > 1})
        if repeated:
            raise self.error(key, f"must not repeat a name, but {repeated[0]!r} appears twice")
        return list(value)

    def registered(self, key: str, registry: Registry[Any], how: str) -> str:
        """A name registered in ``registry``; ``how`` says how to register one."""
        value = self.str_(key, max_length=200)
        assert value is not None  # not optional
        if value not in registry:
            raise CheckpointError(
                f"{self.where} needs the {registry.kind} {value!r} ({self.name(key)}), which is not "
                f"registered here (registered: {', '.join(registry.names())}). If it is your own, import "
                f"the module that registers it ({how}) before loading; a file never imports code itself"
            )
        return value

    def tensors(self, key: str, *, low: int = 1) -> dict[str, torch.Tensor]:
        """A mapping of at least ``low`` string keys to tensors (a state dict)."""
        value = self.get(key)
        if not isinstance(value, Mapping) or len(value) < low:
            raise self.error(key, f"must be a state dict with at least {low} tensor(s), got {_shown(value)}")
        for name, tensor in value.items():
            if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                raise self.error(
                    key, f"must map names to tensors, but {_shown(name)} holds a {type(tensor).__name__}"
                )
        return dict(value)
