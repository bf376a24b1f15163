"""A small typed plugin registry, one per plugin kind, open to third-party entry points.

Usage::

    MERGE_METHODS: Registry[MergeMethod] = Registry("merge method", entry_point_group="evomerge.merge_methods")

    @MERGE_METHODS.register("linear")
    class Linear(MergeMethod): ...

    MERGE_METHODS.get("linear")   # -> the class; unknown names raise EvomergeError listing known ones

Built-in plugins register on import of their module; ``Registry(modules=...)`` names the modules to import
lazily so a lookup never misses a built-in. Entry points are loaded on first lookup.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterable, TypeVar

from evomerge.errors import EvomergeError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None, modules: Iterable[str] = ()):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._modules = list(modules)
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise EvomergeError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._modules:
            importlib.import_module(mod)
        if self.entry_point_group:
            for ep in entry_points(group=self.entry_point_group):
                if ep.name in self._items:
                    continue
                try:
                    self._items[ep.name] = ep.load()
                except Exception as exc:  # a broken third-party plugin must not break the built-ins
                    log.warning("could not load %s plugin %r from %s: %s", self.kind, ep.name, ep.value, exc)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise EvomergeError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._items
