"""Streaming export of a recipe to a standard HF folder, tensor by tensor from the sources' safetensors.

Peak memory is one output tensor plus the engine's chunk scratch: sources are memory-mapped (page cache), and
each merged tensor's bytes go straight into its planned shard file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import torch

from evomerge.errors import EvomergeError
from evomerge.fsutil import check_output_folder
from evomerge.merge.engine import TensorCache, TensorPool, Workspace, geometry, row_writer
from evomerge.merge.plan import MergePlan, input_models, validate_recipe
from evomerge.models.compat import check_compatible
from evomerge.machine import parse_size
from evomerge.models.export_writer import ShardedWriter, copy_model_files
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
    threads: Optional[int] = None,
) -> Path:
    """Merge ``recipe`` into an HF folder ``out_dir``; ``dtype`` is the saved dtype (default: the recipe's).
    Math runs in float32, chunk by chunk, exactly as in the search. ``progress(done, total, tensor_name)`` is
    called after each tensor. ``threads``: CPU threads merging tensors side by side (default: torch's)."""
    out_dtype = to_dtype(dtype, recipe.dtype)
    max_bytes = parse_size(shard_size)
    method_cls = validate_recipe(recipe)
    refs = list(dict.fromkeys(([recipe.base] if method_cls.needs_base else []) + input_models(recipe, method_cls)))
    ckpts = {ref: LazyCheckpoint(ref) for ref in refs}
    check_compatible(list(ckpts.values()), vocab=recipe.vocab)
    plan = MergePlan(recipe, ckpts)  # every bad value (and vocabularies that cannot merge) fails here

    out = check_output_folder(out_dir)
    workspace = Workspace(device)
    cache = TensorCache(0)  # one pass: nothing is reused
    writer = ShardedWriter(out, max_bytes, [(n, plan.shape(n), out_dtype) for n in plan.names])
    threads = max(1, threads or torch.get_num_threads())
    pool = TensorPool(threads) if threads > 1 and torch.device(device).type == "cpu" and plan.order_free() else None

    def merged(name: str) -> torch.Tensor:
        t = torch.empty(plan.shape(name), dtype=out_dtype)
        rows = t.view(geometry(t.shape))
        plan.merge(name, row_writer(rows), (pool.workspace(torch.device(device)) if pool else None) or workspace,
                   cache, dest=rows)
        return t

    # tensors merge side by side on the merge threads (``threads`` held at most), written in order
    results = pool.map_ordered(merged, plan.names) if pool else (merged(n) for n in plan.names)
    try:
        for done, (name, tensor) in enumerate(zip(plan.names, results), start=1):
            writer.add(name, tensor)
            del tensor
            if progress is not None:
                progress(done, len(plan.names), name)
    finally:
        if pool is not None:
            pool.close()
    for ck in ckpts.values():
        ck.close()
    shards = writer.finish()
    copy_model_files(plan.lead.path, out, out_dtype, vocab_size=plan.vocab_rows(),
                     tokenizer_from=plan.tokenizer_path)
    (out / "merge_recipe.yaml").write_text(recipe_to_yaml(recipe))
    (out / "README.md").write_text(model_card(recipe, method_cls))
    log.info("exported %s: %d tensors in %d shard(s), %.1f MB", out, len(plan.names), len(shards),
             writer.total_bytes / 1e6)
    return out


def model_card(recipe: MergeRecipe, method_cls) -> str:
    from evomerge.models.hub import HubRef

    hub = [h.repo_id for r in [recipe.base] + [m.model for m in recipe.models] if r and (h := HubRef.parse(r))]
    lines = [
        "---",
        "library_name: transformers",
        "tags: [merge, evomerge]",
        *([f"base_model: [{', '.join(dict.fromkeys(hub))}]"] if hub else []),
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
