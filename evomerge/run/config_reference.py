"""The configuration reference and the job config's JSON Schema, generated from the typed config models.

``python -m evomerge.run.config_reference`` rewrites ``docs/config-reference.md`` (every field: type, default,
one line of meaning) and ``docs/job-config.schema.json`` (for editor completion); ``tests/test_config_reference.py``
fails when either differs from what the models give, so the docs cannot drift from the code.
"""

from __future__ import annotations

import json
import logging
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel

DOCS = Path(__file__).resolve().parents[2] / "docs"
REFERENCE = DOCS / "config-reference.md"
SCHEMA = DOCS / "job-config.schema.json"
log = logging.getLogger(__name__)


def _sections() -> list[tuple[str, type[BaseModel], str]]:
    """(title, model, what it is) of each top-level part, in reading order."""
    from evomerge.execution.ray_cluster import RayOptions
    from evomerge.execution.synthetic import SyntheticConfig
    from evomerge.execution.synthetic_irt import SyntheticIRTConfig
    from evomerge.fitness.config import FitnessConfig
    from evomerge.recipe import DataFlowRecipe, MergeRecipe
    from evomerge.run.config import RunConfig
    from evomerge.spaces.dataflow import DataFlowSpaceConfig
    from evomerge.spaces.parameter import ParameterSpaceConfig

    return [
        ("Job config", RunConfig, "what `evomerge run`, `check` and `plan` read (`experiments/*.yaml`)"),
        ("fitness, kind: lm_eval", FitnessConfig, "lm-eval tasks scored on each merged model"),
        ("fitness, kind: synthetic", SyntheticConfig, "a closed-form score of the recipe (tests, benchmarks)"),
        ("fitness, kind: synthetic_irt", SyntheticIRTConfig, "simulated answers of a known IRT model"),
        ("executor options, name: ray", RayOptions, "`executor: {name: ray, options: ...}`"),
        ("space, kind: parameter", ParameterSpaceConfig, "`search_spaces/*.yaml`, or `space:` inline"),
        ("space, kind: dataflow", DataFlowSpaceConfig, "layer paths through several models"),
        ("Recipe, kind: merge", MergeRecipe, "one merged model (`evomerge merge`, exports, the ledger)"),
        ("Recipe, kind: dataflow", DataFlowRecipe, "a path of layers from several models"),
    ]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    out = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation is not BaseModel:
        out.append(annotation)
    return out


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin is Union:
        parts = [a for a in args if a is not type(None)]
        text = " or ".join(_type(a) for a in parts)
        return text + " or null" if len(parts) < len(args) else text
    if origin is typing.Annotated:
        return "typed by `kind`" if args and args[0] is not None else _type(args[0])
    if origin in (list, tuple):
        return f"list of {_type(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {_type(args[1])}" if len(args) == 2 and args[1] is not Any else "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "typed by `kind`" if annotation is BaseModel else f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its defaults"
    return f"`{json.dumps(value)}`"


def _table(model: type[BaseModel]) -> list[str]:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [f"### {model.__name__}", ""] + ([doc, ""] if doc and not doc.startswith("Usage docs") else [])
    lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        lines.append(f"| `{name}` | {_type(field.annotation)} | {_default(field)} | {field.description or ''} |")
    return lines + [""]


def render_reference() -> str:
    """``docs/config-reference.md``: one table per config model, reached from the parts that hold it."""
    out = ["# Configuration reference", "",
           "Generated from the typed config models by `python -m evomerge.run.config_reference` (a test fails when",
           "this page and the models differ). Every mapping is strict: an unknown key is an error. Editors can",
           "complete job configs from [job-config.schema.json](job-config.schema.json).", ""]
    done: set[type[BaseModel]] = set()
    for title, model, what in _sections():
        out += [f"## {title}", "", f"{what[0].upper()}{what[1:]}.", ""]
        queue = [model]
        while queue:
            m = queue.pop(0)
            if m in done:
                continue
            done.add(m)
            out += _table(m)
            for field in m.model_fields.values():
                queue += [sub for sub in _models_in(field.annotation) if sub not in done]
    return "\n".join(out).rstrip() + "\n"


def job_schema() -> dict[str, Any]:
    """The JSON Schema of a job config; ``fitness`` is one of the worker kinds' configs."""
    from evomerge.execution.synthetic import SyntheticConfig
    from evomerge.execution.synthetic_irt import SyntheticIRTConfig
    from evomerge.fitness.config import FitnessConfig
    from evomerge.run.config import RunConfig

    schema = RunConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    defs.pop("BaseModel", None)
    kinds = []
    for cls in (FitnessConfig, SyntheticConfig, SyntheticIRTConfig):
        sub = cls.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        defs[cls.__name__] = sub
        kinds.append({"$ref": f"#/$defs/{cls.__name__}"})
    fitness = schema["properties"]["fitness"]
    schema["properties"]["fitness"] = {"oneOf": kinds, "description": fitness.get("description", "")}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "evomerge job config"
    return schema


def render_schema() -> str:
    return json.dumps(job_schema(), indent=1, sort_keys=True) + "\n"


def write() -> None:
    """Rewrite both generated files from the models."""
    REFERENCE.write_text(render_reference())
    SCHEMA.write_text(render_schema())
    log.info("wrote %s and %s", REFERENCE, SCHEMA)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write()
