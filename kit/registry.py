"""One registry pattern for every extension point (after timm's `register_model`).

A `Registry` is a named set of one kind of thing (backbones, losses, metrics, decision candidates, blend
weightings, executors, data layouts): `@LOSSES.register("focal")` adds one where it is defined,
`LOSSES.get(name)` finds it, and an unknown name is refused with one line listing the known ones. Names keep
their registration order, so a registry can also say "from the simplest to the most fitted".
Config validation asks the registry (`names()`), never a list of its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from kit.errors import KitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object for one kind of extension; `kind` names it in messages ("loss", "metric", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: the decorated object becomes `name` (default: its `__name__`)."""

        def wrap(obj: T) -> T:
            self.add(name or obj.__name__, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T) -> None:
        """Register `obj` as `name`; as timm does, a second registration replaces the first, loudly."""
        if name in self._items:
            warnings.warn(f"Overwriting {self.kind} {name!r}: the name is registered twice", stacklevel=3)
        self._items[name] = obj

    def get(self, name: str, *, where: str = "") -> T:
        """The object registered as `name`; an unknown name is one line naming `where` it came from."""
        try:
            return self._items[name]
        except KeyError:
            prefix = f"{where}: " if where else ""
            raise KitError(f"{prefix}unknown {self.kind} {name!r}; use one of {self.names()}") from None

    def validate(self, name: str) -> str:
        """`name` when registered, else ValueError (for a pydantic validator: the config's loader names the file and key)."""
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; use one of {self.names()}")
        return name

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
