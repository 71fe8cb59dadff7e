"""A small generic name -> object registry shared by heads, freeze policies, strategies and sources.

A registered object is what makes the string form of a setting work (``head="mlp"``) and what lets
a checkpoint rebuild an object from its stored name and settings, without pickling code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from .errors import DuplicateNameError, UnknownNameError, unknown_name_message

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Map names to objects of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str, *, fix_hint: str = "") -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._fix_hint = (
            fix_hint or f"Register your own with ensemblenet's register_{kind.replace(' ', '_')}()."
        )

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None) -> T | Callable[[T], T]:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted.

        Raises:
            DuplicateNameError: ``name`` is taken. Pick another name; registries never overwrite silently.
        """

        def add(item: T) -> T:
            if not isinstance(name, str) or not name:
                raise DuplicateNameError(f"{self.kind} name must be a non-empty string, got {name!r}")
            if name in self._items:
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is already registered (to {self._items[name]!r}); "
                    "choose another name."
                )
            self._items[name] = item
            return item

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (mainly for tests of user extensions)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        """Return the object registered under ``name``; unknown names list close matches."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise UnknownNameError(
                unknown_name_message(self.kind, str(name), self._items, self._fix_hint)
            ) from None

    def name_of(self, obj: object) -> str | None:
        """The name under which ``obj`` (or its class) is registered, or None."""
        for key, value in self._items.items():
            if value is obj or value is type(obj):
                return key
        return None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
