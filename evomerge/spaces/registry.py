"""The search-space registry (entry-point group ``evomerge.search_spaces``)."""

from __future__ import annotations

from evomerge.registry import Registry

SEARCH_SPACES: Registry = Registry(
    "search space",
    entry_point_group="evomerge.search_spaces",
    modules=["evomerge.spaces.parameter", "evomerge.spaces.dataflow"],
)
