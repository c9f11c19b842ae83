"""Name -> object registries filled by decorators (methods, datasets, archs, objectives, evaluators)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from benchmark.core.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A closed vocabulary of named things; unknown names fail with the list of valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` on a class or function."""

        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add

    def add(self, name: str, item: T) -> T:
        """Register a plain object (not a decorator)."""
        return self.register(name)(item)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise UserError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
