"""Name → class registries: every variant of a concept (regulariser, selector, continual method) is one class
registered under the name a config uses, so adding a variant means adding a class, not editing a dispatch.

    REGULARIZER_REGISTRY = Registry[type[Regularizer]]("regularizer")

    @REGULARIZER_REGISTRY.register("l1-grad")
    class L1Grad(Regularizer): ...

    REGULARIZER_REGISTRY.get("l1-grad")  # -> L1Grad
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Ordered mapping from names to registered objects (usually classes) of one ``kind``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator registering the decorated object under ``name``.

        A registered class gets its ``name`` attribute set to ``name``, so the name is written once."""

        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            self._items[name] = obj
            return obj

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests register throw-away variants and remove them afterwards)."""
        self.get(name)
        del self._items[name]

    def get(self, name: str) -> T:
        """The object registered under ``name``; ValueError naming the known names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._items)}") from None

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
