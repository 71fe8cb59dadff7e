"""Classification heads put on top of a backbone's pooled features.

A head is a frozen dataclass holding its settings with one method,
``build(in_features, num_classes) -> nn.Module``. Register it by name so the string form works
and checkpoints can rebuild it from ``(name, settings)``:

>>> import dataclasses, torch
>>> from ensemblenet import register_head
>>> @register_head("doc_cosine")
... @dataclasses.dataclass(frozen=True)
... class CosineHead:
...     scale: float = 10.0
...     def build(self, in_features: int, num_classes: int) -> torch.nn.Module:
...         return torch.nn.Linear(in_features, num_classes, bias=False)
>>> resolve_head("doc_cosine").scale
10.0
>>> HEADS.unregister("doc_cosine")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import nn

from ..errors import ConfigError
from ..registry import Registry

__all__ = ["HEADS", "Head", "LinearHead", "MLPHead", "head_config", "register_head", "resolve_head"]


@runtime_checkable
class Head(Protocol):
    """The head contract: a (frozen dataclass) settings object that builds the module."""

    def build(self, in_features: int, num_classes: int) -> nn.Module:
        """Return a module mapping ``(N, in_features)`` features to ``(N, num_classes)`` logits."""
        ...


HEADS: Registry[type[Any]] = Registry("head")


def register_head(name: str) -> Any:
    """Class decorator registering a head dataclass under ``name``."""
    return HEADS.register(name)


@register_head("linear")
@dataclasses.dataclass(frozen=True)
class LinearHead:
    """One ``Linear(in_features, num_classes)``, optionally after Dropout."""

    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_dropout(self.dropout)

    def build(self, in_features: int, num_classes: int) -> nn.Module:
        layers: list[nn.Module] = []
        if self.dropout:
            layers.append(nn.Dropout(self.dropout))
        layers.append(nn.Linear(in_features, num_classes))
        return nn.Sequential(*layers)


@register_head("mlp")
@dataclasses.dataclass(frozen=True)
class MLPHead:
    """``Linear(in, hidden) → [activation] → [Dropout] → Linear(hidden, num_classes)``.

    The defaults reproduce the reference notebook's head exactly: ``Linear(512, 512)`` then
    ``Linear(512, 2)`` with nothing in between (for a 512-wide ResNet18/34 backbone).
    ``activation="relu"`` and ``dropout=0.2`` give the usual non-linear MLP.
    """

    hidden: int = 512
    activation: str | None = None
    dropout: float = 0.0

    _ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}

    def __post_init__(self) -> None:
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise ConfigError(f"MLPHead.hidden must be a positive int, got {self.hidden!r}")
        if self.activation is not None and self.activation not in self._ACTIVATIONS:
            raise ConfigError(
                f"MLPHead.activation {self.activation!r} is not one of "
                f"{[None, *self._ACTIVATIONS]}; pass one of those."
            )
        _check_dropout(self.dropout)

    def build(self, in_features: int, num_classes: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Linear(in_features, self.hidden)]
        if self.activation is not None:
            layers.append(self._ACTIVATIONS[self.activation]())
        if self.dropout:
            layers.append(nn.Dropout(self.dropout))
        layers.append(nn.Linear(self.hidden, num_classes))
        return nn.Sequential(*layers)


def _check_dropout(p: float) -> None:
    if not 0.0 <= float(p) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {p!r}")


def resolve_head(head: str | Head | Mapping[str, Any]) -> Head:
    """Turn ``"mlp"``, ``{"name": "mlp", "hidden": 256}`` or a head object into a head object."""
    if isinstance(head, str):
        return HEADS.get(head)()  # type: ignore[no-any-return]
    if isinstance(head, Mapping):
        settings = dict(head)
        name = settings.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"a head mapping needs a 'name' key naming a registered head, got {head!r}")
        try:
            return HEADS.get(name)(**settings)  # type: ignore[no-any-return]
        except TypeError as exc:
            raise ConfigError(f"bad settings {settings!r} for head {name!r}: {exc}") from None
    if isinstance(head, Head):
        return head
    raise ConfigError(
        f"head must be a name ({HEADS.names()}), a mapping with 'name', or an object with "
        f"build(in_features, num_classes); got {head!r}"
    )


def head_config(head: Head) -> dict[str, Any]:
    """``{"name": ..., **settings}``: what a checkpoint stores to rebuild ``head``."""
    name = HEADS.name_of(head)
    if name is None or not dataclasses.is_dataclass(head):
        raise ConfigError(
            f"head {head!r} cannot be saved: register its class with @register_head('name') and make "
            "it a dataclass so a checkpoint can rebuild it from its name and settings."
        )
    return {"name": name, **dataclasses.asdict(head)}  # type: ignore[call-overload]
