"""YAML input shared by every config reader: one-line errors for a missing file, broken YAML, or YAML too big
to be a config (a file of more than ``MAX_YAML_BYTES``, or aliases that expand to more than ``MAX_YAML_NODES``
nodes: a kilobyte of nested aliases can stand for billions, which every later walk of the config would
expand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evomerge.errors import ConfigError


MAX_YAML_BYTES = 4 * 2**20
MAX_YAML_NODES = 1_000_000


class TooLarge(ConfigError):
    """YAML bigger than a config can be (its size, or its expanded aliases)."""


def parse_yaml(text: str, what: str, loader_class: type = yaml.SafeLoader) -> Any:
    """``yaml.safe_load(text)``; broken YAML raises ``ConfigError("broken {what}: <first line of the error>")``,
    oversized YAML ``TooLarge("{what} is too large ...")``. ``loader_class``: a safe loader with extra tags."""
    if len(text) > MAX_YAML_BYTES:
        raise TooLarge(f"{what} is too large to be a config ({len(text)} characters; at most {MAX_YAML_BYTES})")
    loader = loader_class(text)  # what yaml.safe_load does, with the node graph checked before construction
    try:
        node = loader.get_single_node()
        expanded = _expanded_nodes(node)
        if expanded < 0:
            raise TooLarge(f"broken {what}: an alias refers to a node that contains it (endless)")
        if expanded > MAX_YAML_NODES:
            raise TooLarge(f"{what} is too large to be a config: its aliases expand to {expanded:,} nodes "
                              f"(at most {MAX_YAML_NODES:,})")
        return None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"broken {what}: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"broken {what}: nested too deeply") from None
    finally:
        loader.dispose()


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _expanded_nodes(root) -> int:
    """Nodes of the document with every alias expanded, counted without expanding (each node once, in a
    depth-first post-order without recursion). -1 when an alias names one of its own ancestors (a document that
    expands forever)."""
    if root is None:
        return 0
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            continue
        if key in sizes:
            continue
        if key in open_nodes:  # reached again while its own subtree is open: a recursive alias
            return -1
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def read_yaml_text_or_file(text_or_path: str | Path, what: str, file_what: str) -> Any:
    """YAML given inline or as a ``.yaml`` / ``.yml`` path (one line without a newline); a missing file raises
    ``ConfigError("{file_what} not found: PATH")``, broken YAML ``ConfigError("broken {what}: ...")``."""
    text = str(text_or_path)
    path = Path(text)
    if "\n" not in text and path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{file_what} not found: {path}")
        text = path.read_text()
    return parse_yaml(text, what)
