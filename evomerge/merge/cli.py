"""``evomerge merge RECIPE.yaml OUT_DIR``: export a recipe to a standard HF folder with a progress bar.

RECIPE is any recipe kind evomerge exports (``kind: merge`` parameter-space recipes, ``kind: dataflow`` layer
paths) or a mergekit config, detected by its ``merge_method`` key (``passthrough`` becomes a data-flow recipe,
the other methods a parameter-space one). The model folders are checked (preflight) before OUT_DIR is
written, so a bad input leaves nothing behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import click

from evomerge.cli import cli
from evomerge.errors import ConfigError, EvomergeError


def _read(path: Path, force_mergekit: bool) -> tuple[Any, str]:
    """(recipe, origin): origin is 'evomerge' or 'mergekit'."""
    from evomerge.yaml_io import parse_yaml

    if not path.is_file():
        raise EvomergeError(f"recipe file not found: {path}")
    text = path.read_text()
    doc = parse_yaml(text, f"recipe YAML {path}")
    is_mergekit = isinstance(doc, dict) and "merge_method" in doc
    if force_mergekit and not is_mergekit:
        raise ConfigError(f"{path} is not a mergekit config (no merge_method)")
    if is_mergekit:
        if doc.get("merge_method") == "passthrough":
            from evomerge.dataflow import from_mergekit_passthrough

            return from_mergekit_passthrough(text), "mergekit"
        from evomerge.merge import from_mergekit_yaml

        return from_mergekit_yaml(text), "mergekit"
    from evomerge.recipe import recipe_from_dict

    if not isinstance(doc, dict):
        raise ConfigError(f"{path} does not hold a recipe mapping (got {type(doc).__name__})")
    return recipe_from_dict(doc), "evomerge"


def _with(recipe, seed: Optional[int], dtype: Optional[str], random_stream: Optional[str] = None):
    """The recipe with ``--seed`` and ``--random-stream`` (every parameter-space recipe in it) and ``--dtype``
    applied."""
    from evomerge.recipe import MergeRecipe, recipe_from_dict

    data = recipe.model_dump(mode="json")
    given = {k: v for k, v in (("seed", seed), ("random_stream", random_stream)) if v is not None}
    if given:
        if isinstance(recipe, MergeRecipe):
            data.update(given)
        for src in (data.get("models") or {}).values() if isinstance(data.get("models"), dict) else []:
            if isinstance(src, dict) and src.get("kind", "merge") == "merge":
                src.update(given)
    if dtype is not None:
        data["dtype"] = dtype
    return recipe_from_dict(data)


def _pinned(recipe):
    """``recipe`` with its hub models pinned to the commits they name now (what the written recipe, mergekit
    config and model card record)."""
    from evomerge.models.hub import pin_all
    from evomerge.recipe import recipe_from_dict

    data = recipe.model_dump(mode="json")
    pinned = pin_all(data)
    return recipe if pinned == data else recipe_from_dict(pinned)


def _refs(recipe) -> list[str]:
    """Model folders a recipe reads (nested recipes: their own sources)."""
    from evomerge.recipe import MergeRecipe

    if isinstance(recipe, MergeRecipe):
        out = ([recipe.base] if recipe.base else []) + [m.model for m in recipe.models]
    else:
        out = []
        for src in recipe.models.values():
            out += [src] if isinstance(src, str) else _refs(src)
    return list(dict.fromkeys(out))


def _summary(recipe, out: Path, seconds: float) -> str:
    from evomerge.recipe import MergeRecipe

    shards = len(list(out.glob("*.safetensors")))
    if isinstance(recipe, MergeRecipe):
        refs = _refs(recipe)
        what = f"{recipe.method} of {len(refs)} model(s)" + (" (base + " + str(len(refs) - 1) + ")"
                                                                if recipe.base in refs else "")
        if recipe.random_stream == "mergekit" and recipe.method.startswith(("dare", "della")):
            what += f", masks from mergekit's random stream (seed {recipe.seed})"
    else:
        steps = recipe.steps()
        what = f"a data-flow path of {len(steps)} layer(s) from {len(set(s.model for s in steps))} model(s)"
    return f"merged {what} into {out} ({shards} shard(s), {seconds:.1f}s)"


@cli.command("merge")
@click.argument("recipe_path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="cpu", show_default=True, help="Torch device for the merge math.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="Saved dtype (default: the recipe's).")
@click.option("--shard-size", default="2GB", show_default=True, help="Largest output shard, e.g. 500MB, 2GB.")
@click.option("--seed", type=int, default=None, help="Seed of stochastic methods (dare, della); default: the "
                                                    "recipe's (0 for mergekit configs).")
@click.option("--random-stream", type=click.Choice(["evomerge", "mergekit"]), default=None,
              help="How dare / della draw their masks: mergekit = exactly as `mergekit-yaml --random-seed SEED` "
                   "(whole tensors in memory); default: the recipe's (evomerge).")
@click.option("--from-mergekit", is_flag=True, help="Insist that RECIPE_PATH is a mergekit config (detected "
                                                     "anyway by its merge_method key).")
def merge_cmd(recipe_path: Path, out_dir: Path, device: str, dtype, shard_size: str, seed: Optional[int],
              random_stream: Optional[str], from_mergekit: bool) -> None:
    """Merge RECIPE_PATH (an evomerge recipe of any kind, or a mergekit config) into OUT_DIR (sharded
    safetensors + index, config, tokenizer, model card, recipe). Also writes mergekit_config.yml when mergekit
    can express the recipe."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evomerge.machine import parse_size
    from evomerge.recipe import MergeRecipe
    from evomerge.run.preflight import check_models

    recipe, _ = _read(recipe_path, from_mergekit)
    recipe = _pinned(_with(recipe, seed, dtype, random_stream))
    max_bytes = parse_size(shard_size)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise EvomergeError(f"output folder {out_dir} exists and is not empty")
    # unreadable or mismatched model folders fail here, before OUT_DIR is written
    check_models(_refs(recipe), layer_paths=not isinstance(recipe, MergeRecipe),
                 vocab=getattr(recipe, "vocab", "base"))
    start = time.perf_counter()
    if isinstance(recipe, MergeRecipe):
        from evomerge.merge import export_recipe, to_mergekit_yaml

        with Progress(TextColumn("[bold]merging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), transient=True) as bar:
            task = bar.add_task("", total=None)

            def progress(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, description=name)

            out = export_recipe(recipe, out_dir, shard_size=max_bytes, device=device, dtype=dtype,
                                progress=progress)
        mergekit = to_mergekit_yaml
    else:
        from evomerge.dataflow import export_dataflow, to_mergekit_passthrough

        out = export_dataflow(recipe, out_dir, shard_bytes=max_bytes)
        mergekit = to_mergekit_passthrough
    try:
        (out / "mergekit_config.yml").write_text(mergekit(recipe))
    except EvomergeError:
        pass  # no mergekit equivalent
    click.echo(_summary(recipe, Path(out), time.perf_counter() - start))
