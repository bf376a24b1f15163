"""The task, group and tag names defined by local lm-eval task folders, read without importing lm-eval.

lm-eval's own index (``lm_eval.tasks.TaskManager``) costs about a second to import (it pulls in ``datasets``)
and seconds more to index its built-in tasks. Preflight asks this index first: when every task a config names
is defined in its ``include_path`` folders, lm-eval is not imported at all. The rules are lm-eval's
(``lm_eval.tasks._index``): every ``*.yaml`` below a folder (``__pycache__`` and ``.ipynb_checkpoints``
skipped) is a task (``task: NAME``, also with ``class:``) or a group (``group: NAME``), ``tag:`` names tags,
``include:`` merges another file under the including one, and ``!function`` tags are not resolved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import yaml

from evomerge.yaml_io import MAX_YAML_BYTES, TooLarge, parse_yaml

log = logging.getLogger(__name__)
_IGNORE_DIRS = {"__pycache__", ".ipynb_checkpoints"}
_Base = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """Safe YAML that reads ``!function module.fn`` as its text (names only: nothing is imported)."""


_Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _load(path: Path, depth: int = 0) -> dict[str, Any]:
    if (size := path.stat().st_size) > MAX_YAML_BYTES:  # refused before it is read
        raise TooLarge(f"task YAML {path} is too large to be a task ({size} bytes)")
    cfg = parse_yaml(path.read_text(encoding="utf-8"), f"task YAML {path}", loader_class=_Loader)
    if not isinstance(cfg, dict):
        raise ValueError("not a mapping")
    inc = cfg.get("include")
    if isinstance(inc, str) and depth < 8:
        target = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        cfg = {**_load(target, depth + 1), **cfg}
    return cfg


def _names(cfg: dict[str, Any]) -> list[str]:
    tags = cfg.get("tag") or []
    tags = [tags] if isinstance(tags, str) else [t for t in tags if isinstance(t, str)]
    if "class" in cfg or ("group" not in cfg and "task" in cfg):
        name = cfg.get("task")
        return ([name] + tags) if isinstance(name, str) else []
    if "group" in cfg:
        return [cfg["group"]] if isinstance(cfg["group"], str) else []  # a group's tags are not registered
    return []


def include_paths(names: Iterable[str]) -> list[str]:
    """A config's ``include_path`` entries as folders: paths, or names of folders shipped under ``fitness/``."""
    from evomerge.resources import resolve

    return [str(resolve("fitness", n, suffixes=())) for n in names]


def _local_configs(folders: Iterable[str | Path]) -> Iterable[dict[str, Any]]:
    for root in folders:
        for path in sorted(Path(root).glob("**/*.yaml"), key=lambda p: p.as_posix()):
            if any(part in _IGNORE_DIRS for part in path.parts):
                continue
            try:
                yield _load(path)
            except TooLarge:  # lm-eval would expand it (minutes, gigabytes) when it indexes the folder
                raise
            except Exception as exc:  # lm-eval skips what it cannot read, and so do we
                log.debug("skip %s (%s)", path, exc)


def local_task_names(folders: Iterable[str | Path]) -> set[str]:
    """Every task, group and tag name the YAML files below ``folders`` define (unreadable files skipped, as
    lm-eval skips them). On lm-eval's own task tree this gives the names its index gives."""
    names: set[str] = set()
    for cfg in _local_configs(folders):
        names.update(_names(cfg))
    return names


def local_task_configs(folders: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Each task's YAML (its includes merged) below ``folders``, by task name; the first file wins."""
    out: dict[str, dict[str, Any]] = {}
    for cfg in _local_configs(folders):
        if isinstance(cfg.get("task"), str) and ("class" in cfg or "group" not in cfg):
            out.setdefault(cfg["task"], cfg)
    return out
