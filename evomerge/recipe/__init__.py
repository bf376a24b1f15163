"""Recipes: typed, YAML round-trippable descriptions of one merged model, one module per kind.

- ``kind: merge`` (:mod:`evomerge.recipe.merge`): a merge method and its parameters over source models;
- ``kind: dataflow`` (:mod:`evomerge.recipe.dataflow`): a path of layers taken from several models (a source
  may itself be a ``merge`` recipe).

``recipe_from_dict`` / ``recipe_from_yaml`` pick the kind by its ``kind`` key (default ``merge``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from evomerge.errors import ConfigError
from evomerge.recipe.dataflow import DEFAULT_MAX_DEPTH, DataFlowRecipe, LayerSlice, PathStep
from evomerge.recipe.merge import (MergeRecipe, ModelSource, Override, ParamValue, _one_line, layer_index,
                                   recipe_to_yaml)
from evomerge.yaml_io import read_yaml_text_or_file

#: ``kind`` -> recipe type
RECIPE_KINDS: dict[str, type[BaseModel]] = {"merge": MergeRecipe, "dataflow": DataFlowRecipe}
Recipe = Union[MergeRecipe, DataFlowRecipe]


def recipe_from_dict(data: dict[str, Any]) -> Recipe:
    """Validate a dict into the recipe type named by its ``kind`` (default ``merge``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"a recipe must be a mapping, got {type(data).__name__}")
    kind = data.get("kind", "merge")
    if kind not in RECIPE_KINDS:
        raise ConfigError(f"unknown recipe kind {kind!r} (known: {', '.join(RECIPE_KINDS)})")
    try:
        return RECIPE_KINDS[kind].model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid recipe: {_one_line(exc)}") from None


def recipe_from_yaml(text_or_path: str | Path) -> Recipe:
    """Load a recipe from YAML text or a .yaml file path."""
    return recipe_from_dict(read_yaml_text_or_file(text_or_path, "recipe YAML", "recipe file"))


__all__ = ["DEFAULT_MAX_DEPTH", "DataFlowRecipe", "LayerSlice", "MergeRecipe", "ModelSource", "Override",
           "ParamValue", "PathStep", "RECIPE_KINDS", "Recipe", "layer_index", "recipe_from_dict",
           "recipe_from_yaml", "recipe_to_yaml"]
