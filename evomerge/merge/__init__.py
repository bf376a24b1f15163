"""Merge engine: methods (registry), in-memory merger, streaming HF export, mergekit YAML interop.

The names load on first use (PEP 562): the registry and the methods' parameter specs import no torch (a
config check builds the search space from them); the engine, the merger and the export do.
"""

from evomerge.lazy import lazy_getattr

_WHERE = {
    "export_recipe": "export", "InMemoryMerger": "memory", "from_mergekit_yaml": "mergekit_yaml",
    "to_mergekit_yaml": "mergekit_yaml", "MERGE_METHODS": "registry", "MergeMethod": "registry",
    "ParamSpec": "registry", "TensorParams": "registry", "merge_method": "registry", "TensorInputs": "engine",
}

__getattr__ = lazy_getattr(__name__, _WHERE, submodules=("engine", "export", "memory", "mergekit_yaml", "registry",
                                                         "methods", "plan", "cli"))

__all__ = list(_WHERE)
