"""``evomerge merge RECIPE.yaml OUT_DIR``: export a recipe to a standard HF folder with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path

import click

from evomerge.cli import cli


@cli.command("merge")
@click.argument("recipe_path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="cpu", show_default=True, help="Torch device for the merge math.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="Saved dtype (default: the recipe's).")
@click.option("--shard-size", default="2GB", show_default=True, help="Largest output shard, e.g. 500MB, 2GB.")
@click.option("--from-mergekit", is_flag=True, help="RECIPE_PATH is a mergekit config, not an evomerge recipe.")
def merge_cmd(recipe_path: Path, out_dir: Path, device: str, dtype, shard_size: str, from_mergekit: bool) -> None:
    """Merge RECIPE_PATH into OUT_DIR (sharded safetensors + index, config, tokenizer, model card, recipe).
    Also writes mergekit_config.yml when the method exists in mergekit."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evomerge.errors import EvomergeError
    from evomerge.merge import export_recipe, from_mergekit_yaml, to_mergekit_yaml
    from evomerge.recipe import recipe_from_yaml

    if from_mergekit:
        if not recipe_path.exists():
            raise EvomergeError(f"mergekit config not found: {recipe_path}")
        recipe = from_mergekit_yaml(recipe_path.read_text())
    else:
        recipe = recipe_from_yaml(str(recipe_path))
    start = time.perf_counter()
    with Progress(TextColumn("[bold]merging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), transient=True) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        out = export_recipe(recipe, out_dir, shard_size=shard_size, device=device, dtype=dtype, progress=progress)
    try:
        (out / "mergekit_config.yml").write_text(to_mergekit_yaml(recipe))
    except EvomergeError:
        pass  # no mergekit equivalent
    shards = len(list(out.glob("model-*.safetensors")))
    click.echo(f"merged {recipe.method} of {len(recipe.models)} model(s) into {out} "
               f"({shards} shard(s), {time.perf_counter() - start:.1f}s)")
