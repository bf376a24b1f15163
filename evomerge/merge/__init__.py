"""Merge engine: methods (registry), in-memory merger, streaming HF export, mergekit YAML interop."""

from evomerge.merge.export import export_recipe
from evomerge.merge.memory import InMemoryMerger
from evomerge.merge.mergekit_yaml import from_mergekit_yaml, to_mergekit_yaml
from evomerge.merge.registry import MERGE_METHODS, MergeMethod, ParamSpec, TensorInputs, TensorParams, merge_method

__all__ = [
    "MERGE_METHODS",
    "MergeMethod",
    "ParamSpec",
    "TensorInputs",
    "TensorParams",
    "merge_method",
    "InMemoryMerger",
    "export_recipe",
    "to_mergekit_yaml",
    "from_mergekit_yaml",
]

