"""Data-flow merging: run the token stream through a path of layers of several models (Sakana DFS).

- :func:`build_path_model` — a live HF causal LM over the sources' shared layers (for lm-eval, generate);
- :func:`export_dataflow` — the same network as an ordinary HF checkpoint (scalings folded exactly);
- :func:`to_mergekit_passthrough` / :func:`from_mergekit_passthrough` — mergekit interop (scales all 1);
- :func:`dataflow_size` — depth and parameter count, an objective that needs no loading.

The recipe type is :class:`evomerge.recipe.dataflow.DataFlowRecipe`.
"""

from evomerge.dataflow.export import export_dataflow
from evomerge.dataflow.mergekit_yaml import from_mergekit_passthrough, path_to_slices, to_mergekit_passthrough
from evomerge.dataflow.model import build_path_model
from evomerge.dataflow.sources import ModelSize, SourceModels, check_compatible, dataflow_size

__all__ = [
    "ModelSize",
    "SourceModels",
    "build_path_model",
    "check_compatible",
    "dataflow_size",
    "export_dataflow",
    "from_mergekit_passthrough",
    "path_to_slices",
    "to_mergekit_passthrough",
]
