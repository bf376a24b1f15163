"""Build a search space from a shipped name, a YAML path, or an inline mapping (``preset`` + overrides)."""

from __future__ import annotations

from typing import Any, Union

from evomerge.errors import ConfigError
from evomerge.resources import resolve
from evomerge.spaces.base import SearchSpace
from evomerge.spaces.registry import SEARCH_SPACES
from evomerge.yaml_io import parse_yaml


def load_space_config(spec: Union[str, dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    """The space definition as a mapping.

    ``spec`` is a shipped name (``ties_layerwise``), a YAML path, or a mapping; a mapping with ``preset`` starts
    from that definition and overrides its keys. Keyword ``overrides`` (the run's ``base`` and ``models``) whose
    value is not None fill in what the mapping itself does not set.
    """
    if isinstance(spec, str):
        spec = {"preset": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"a search space must be a name, a path or a mapping, got {type(spec).__name__}")
    cfg: dict[str, Any] = {}
    if "preset" in spec:
        path = resolve("search_spaces", spec["preset"])
        loaded = parse_yaml(path.read_text(), f"search space YAML {path}")
        if not isinstance(loaded, dict):
            raise ConfigError(f"search space file {path} does not hold a mapping")
        cfg.update(loaded)
    cfg.update({k: v for k, v in spec.items() if k != "preset"})
    cfg.update({k: v for k, v in overrides.items() if v is not None and k not in spec})
    cfg.setdefault("kind", "parameter")
    return cfg


def build_space(spec: Union[str, dict[str, Any]], **overrides: Any) -> SearchSpace:
    """A ready SearchSpace (see ``load_space_config`` for ``spec``); unknown kinds raise EvomergeError."""
    cfg = load_space_config(spec, **overrides)
    return SEARCH_SPACES.get(str(cfg["kind"])).from_config(cfg)
