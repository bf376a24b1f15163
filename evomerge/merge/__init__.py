"""Merge engine: methods (registry), in-memory merger, streaming HF export, mergekit YAML interop.

The names load on first use (PEP 562): the registry and the methods' parameter specs import no torch (a
config check builds the search space from them); the engine, the merger and the export do.
"""

import importlib

_WHERE = {
    "export_recipe": "export", "InMemoryMerger": "memory", "from_mergekit_yaml": "mergekit_yaml",
    "to_mergekit_yaml": "mergekit_yaml", "MERGE_METHODS": "registry", "MergeMethod": "registry",
    "ParamSpec": "registry", "TensorParams": "registry", "merge_method": "registry", "TensorInputs": "engine",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    if name in ("engine", "export", "memory", "mergekit_yaml", "registry", "methods", "plan", "cli"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_WHERE)
