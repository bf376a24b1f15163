"""Package names that load on first use (PEP 562), so that a config check or ``--help`` does not import torch,
lm-eval or scipy through a package's ``__init__``."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable


def lazy_getattr(package: str, where: dict[str, str], submodules: Iterable[str] = ()) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``where`` maps a public name to the submodule defining it;
    ``submodules`` may also be reached as attributes before anything imported them."""
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        if name in subs:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
