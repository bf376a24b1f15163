"""Streaming export of a recipe to a standard HF folder, tensor by tensor from the sources' safetensors.

Peak memory is about one tensor per source (plus its task vector and the merged tensor) and one output shard:
each source keeps at most one shard file open, and the writer flushes a shard as soon as it is full.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import torch

from evomerge.errors import EvomergeError
from evomerge.merge.plan import check_layers, input_models, plan_params, validate_recipe
from evomerge.merge.registry import TensorInputs
from evomerge.models.compat import check_compatible, num_layers
from evomerge.models.export_writer import ShardedWriter, copy_model_files, parse_size
from evomerge.models.safetensors_io import LazyCheckpoint
from evomerge.recipe import MergeRecipe, recipe_to_yaml

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def to_dtype(dtype: str | torch.dtype | None, default: str = "float32") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or default).removeprefix("torch.")
    if name not in DTYPES:
        raise EvomergeError(f"unknown dtype {dtype!r} (use one of {', '.join(DTYPES)})")
    return DTYPES[name]


def export_recipe(
    recipe: MergeRecipe,
    out_dir: str | Path,
    shard_size: str | int = "2GB",
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    progress: Optional[Callable[[int, int, str], None]] = None,
) -> Path:
    """Merge ``recipe`` into an HF folder ``out_dir``; ``dtype`` is the saved dtype (default: the recipe's).
    Math runs in float32. ``progress(done, total, tensor_name)`` is called after each tensor."""
    method_cls = validate_recipe(recipe)
    out_dtype = to_dtype(dtype, recipe.dtype)
    max_bytes = parse_size(shard_size)
    models = input_models(recipe, method_cls)
    base_ref = recipe.base if method_cls.needs_base else None
    ckpts = {ref: LazyCheckpoint(ref) for ref in ([base_ref] if base_ref else []) + models}
    check_compatible(list(ckpts.values()))
    lead = ckpts[base_ref or models[0]]
    check_layers(recipe, num_layers(lead))
    names = sorted(lead.names(), key=lambda n: (lead.weight_map[n], n))
    params = plan_params(recipe, method_cls, models, names)  # every bad value fails here, before any math

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvomergeError(f"output folder {out} exists and is not empty")
    device = torch.device(device)
    method = method_cls()
    writer = ShardedWriter(out, max_bytes)
    workspace: dict = {}
    for done, name in enumerate(names, start=1):
        base_t = ckpts[base_ref].get(name, torch.float32, device) if base_ref else None
        sources = torch.stack([ckpts[m].get(name, torch.float32, device) for m in models])
        x = TensorInputs(
            name=name, models=models, base=base_t,
            get_sources=lambda s=sources: s,
            get_deltas=_lazy_deltas(sources, base_t),
            seed=recipe.seed, cache={}, workspace=workspace,
        )
        merged = torch.empty(sources.shape[1:], dtype=torch.float32, device=device)
        method.merge_tensor(x, params[name], merged)
        writer.add(name, merged.to(out_dtype).cpu())
        del sources, x, merged, base_t
        if progress is not None:
            progress(done, len(names), name)
    for ck in ckpts.values():
        ck.close()
    shards = writer.finish()
    copy_model_files(lead.path, out, out_dtype)
    (out / "merge_recipe.yaml").write_text(recipe_to_yaml(recipe))
    (out / "README.md").write_text(model_card(recipe, method_cls))
    log.info("exported %s: %d tensors in %d shard(s), %.1f MB", out, len(names), len(shards), writer.total_bytes / 1e6)
    return out


def _lazy_deltas(sources: torch.Tensor, base: Optional[torch.Tensor]):
    memo: list[torch.Tensor] = []

    def get() -> torch.Tensor:
        if base is None:
            raise EvomergeError("this merge has no base model, so it has no task vectors")
        if not memo:
            memo.append(sources - base)
        return memo[0]

    return get


def model_card(recipe: MergeRecipe, method_cls) -> str:
    lines = [
        "---",
        "library_name: transformers",
        "tags: [merge, evomerge]",
        "---",
        "",
        f"# Merged model ({recipe.method})",
        "",
        f"This model was merged with [evomerge](https://github.com/) using the **{recipe.method}** method"
        + (f" ({method_cls.paper})." if method_cls.paper else "."),
        "",
    ]
    if recipe.base:
        lines.append(f"- Base model: `{recipe.base}`")
    lines += [f"- Model: `{m.model}`" + (f" with {m.params}" if m.params else "") for m in recipe.models]
    if recipe.overrides:
        lines.append(f"- {len(recipe.overrides)} per-layer / per-module override(s)")
    lines += ["", "## Recipe", "", "The exact recipe (also in `merge_recipe.yaml`):", "", "```yaml",
              recipe_to_yaml(recipe).rstrip(), "```", ""]
    return "\n".join(lines)
