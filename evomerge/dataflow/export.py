"""Exact export of a data-flow recipe as an ordinary HF checkpoint (``AutoModelForCausalLM``, no custom code).

Step k of the path becomes decoder layer k of the output (a reused layer becomes separate copies), with its
``o_proj`` / ``down_proj`` weights and biases multiplied by ``w_k`` (the fold of the residual-stream scalings,
see :mod:`evomerge.recipe.dataflow`); the fold is computed in float32 and cast to the recipe's dtype once.
Tensors stream from the source folders (or a merged nested recipe), one shard at a time.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from evomerge.dataflow.model import path_config
from evomerge.dataflow.sources import (
    BRANCH_OUTPUTS,
    SourceModels,
    check_compatible,
    exported_tied,
    layer_prefix,
    source_folder,
    source_tensors,
    torch_dtype,
)
from evomerge.fsutil import check_output_folder
from evomerge.recipe import recipe_to_yaml
from evomerge.recipe.dataflow import DataFlowRecipe

log = logging.getLogger(__name__)

RECIPE_FILE = "evomerge_recipe.yaml"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json")


def export_dataflow(recipe: DataFlowRecipe, out_dir: str | Path, sources: SourceModels | None = None,
                    shard_bytes: int = 2 * 1024**3, overwrite: bool = False) -> Path:
    """Write the recipe's network as an HF folder (config, safetensors shards, tokenizer, recipe YAML)."""
    out = check_output_folder(out_dir, "export folder", allow_full=overwrite)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    configs = check_compatible(recipe, sources.configs(recipe) if sources else None)
    out.mkdir(parents=True, exist_ok=True)
    dtype = torch_dtype(recipe.dtype)
    tensors = {n: source_tensors(recipe.models[n], sources) for n in recipe.used_models()}

    def items():
        emb = tensors[recipe.embed_model()]
        yield "model.embed_tokens.weight", emb.get("model.embed_tokens.weight")
        for k, (step, w) in enumerate(zip(recipe.steps(), recipe.output_scales())):
            src, prefix = tensors[step.model], layer_prefix(step.layer)
            for name in sorted(n for n in src.keys() if n.startswith(prefix)):
                t = src.get(name)
                if w != 1.0 and any(name[len(prefix):].startswith(b + ".") for b in BRANCH_OUTPUTS):
                    t = t.to(torch.float32) * w
                yield layer_prefix(k) + name[len(prefix):], t
        head = tensors[recipe.head_model()]
        yield "model.norm.weight", head.get("model.norm.weight")
        if not exported_tied(recipe, configs):
            yield "lm_head.weight", head.get("lm_head.weight" if "lm_head.weight" in head.keys()
                                             else "model.embed_tokens.weight")

    # copy=True: a reused layer must own its storage in the file (safetensors refuses shared tensors)
    _write_shards(((n, t.to(dtype=dtype, copy=True).contiguous()) for n, t in items()), out, shard_bytes)

    cfg = path_config(configs[recipe.embed_model()], recipe, configs)
    cfg.tie_word_embeddings = exported_tied(recipe, configs)
    cfg.dtype = recipe.dtype
    cfg.save_pretrained(out)
    folder = Path(source_folder(recipe.models[recipe.embed_model()]))
    for f in _TOKENIZER_FILES:
        if (folder / f).exists():
            shutil.copy2(folder / f, out / f)
    (out / RECIPE_FILE).write_text(recipe_to_yaml(recipe))
    log.info("exported a %d-layer data-flow model to %s", len(recipe.steps()), out)
    return out


def _write_shards(items, out: Path, shard_bytes: int) -> None:
    """Save (name, tensor) pairs into shards of at most ``shard_bytes`` (one tensor may exceed it), plus index."""
    shard: dict[str, torch.Tensor] = {}
    names: list[list[str]] = []
    size = total = 0

    def flush():
        save_file(shard, str(out / f"model-part-{len(names):05d}.safetensors"), metadata={"format": "pt"})
        names.append(list(shard))

    for name, t in items:
        nbytes = t.numel() * t.element_size()
        if shard and size + nbytes > shard_bytes:
            flush()
            shard, size = {}, 0
        shard[name] = t
        size += nbytes
        total += nbytes
    flush()
    if len(names) == 1:
        (out / "model-part-00000.safetensors").rename(out / "model.safetensors")
        return
    weight_map = {}
    for i, shard_names in enumerate(names):
        final = f"model-{i + 1:05d}-of-{len(names):05d}.safetensors"
        (out / f"model-part-{i:05d}.safetensors").rename(out / final)
        weight_map.update({n: final for n in shard_names})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
