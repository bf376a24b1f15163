"""Source models of data-flow recipes: configs, compatibility checks, loading once, tensor access, size.

A source is a model reference string or a nested parameter-space :class:`MergeRecipe` (PS+DFS). Checks read
only ``config.json`` files, so bad input fails before any weights are loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from evomerge.errors import EvomergeError
from evomerge.models import resolve_model
from evomerge.recipe import MergeRecipe, recipe_to_yaml
from evomerge.recipe.dataflow import DataFlowRecipe

log = logging.getLogger(__name__)

Source = Union[str, MergeRecipe]

# Decoder layers whose residual branches end in a plain linear o_proj / down_proj read through RMSNorm: the
# scaling fold of recipe.dataflow is exact for them. (Gemma-style post-branch norms would break it.)
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
BRANCH_OUTPUTS = ("self_attn.o_proj", "mlp.down_proj")
# Config fields every source must agree on for its layers to be spliced into one network.
_MUST_MATCH = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
               "vocab_size", "hidden_act", "rms_norm_eps", "rope_parameters", "rope_theta", "rope_scaling",
               "attention_bias", "mlp_bias")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def source_key(src: Source) -> str:
    """A stable identity for a source (its reference, or the YAML of a nested recipe)."""
    return src if isinstance(src, str) else recipe_to_yaml(src)


def source_folder(src: Source) -> str:
    """The folder whose config, tokenizer and tensor layout a source has (a nested recipe: its base)."""
    if isinstance(src, str):
        return resolve_model(src)
    return resolve_model(src.base or src.models[0].model)


def source_config(src: Source) -> PretrainedConfig:
    folder = source_folder(src)
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise EvomergeError(f"cannot read the config of {folder}: {str(exc).splitlines()[0]}") from None


def _field(cfg: PretrainedConfig, name: str):
    v = getattr(cfg, name, None)
    if name == "head_dim" and v is None:
        v = cfg.hidden_size // cfg.num_attention_heads
    return v


def check_compatible(recipe: DataFlowRecipe, configs: dict[str, PretrainedConfig] | None = None) -> dict[str, PretrainedConfig]:
    """Raise EvomergeError (one line) unless the recipe's sources can be spliced; returns their configs."""
    names = recipe.used_models()
    if configs is None:
        configs = {n: source_config(recipe.models[n]) for n in names}
    for n in names:
        mt = configs[n].model_type
        if mt not in SUPPORTED_MODEL_TYPES:
            raise EvomergeError(f"data-flow merging supports {', '.join(SUPPORTED_MODEL_TYPES)} decoders; "
                                f"model {n!r} is {mt!r}")
    types = {n: configs[n].model_type for n in names}
    if len(set(types.values())) > 1:
        raise EvomergeError(f"models have different architectures: {_show(types)}")
    for field in _MUST_MATCH:
        vals = {n: _field(configs[n], field) for n in names}
        if len({json.dumps(v, sort_keys=True, default=str) for v in vals.values()}) > 1:
            what = "hidden sizes" if field == "hidden_size" else f"values of {field}"
            raise EvomergeError(f"models have different {what}: {_show(vals)}")
    for k, s in enumerate(recipe.steps()):
        n_layers = configs[s.model].num_hidden_layers
        if s.layer >= n_layers:
            raise EvomergeError(f"path step {k}: model {s.model!r} has {n_layers} layers, no layer {s.layer}")
    return configs


def _show(vals: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in vals.items())


class SourceModels:
    """Loads each source once (plain checkpoints, or merged nested recipes) and keeps it for many paths."""

    def __init__(self, device: str | torch.device = "cpu", dtype: str = "float32"):
        self.device = torch.device(device)
        self.dtype = dtype
        self._models: dict[str, PreTrainedModel] = {}
        self._configs: dict[str, PretrainedConfig] = {}

    def config(self, src: Source) -> PretrainedConfig:
        """The source's config (read once, without loading weights)."""
        key = source_key(src)
        if key not in self._configs:
            self._configs[key] = source_config(src)
        return self._configs[key]

    def configs(self, recipe: DataFlowRecipe) -> dict[str, PretrainedConfig]:
        """Configs of the sources a recipe uses, by name."""
        return {n: self.config(recipe.models[n]) for n in recipe.used_models()}

    def get(self, src: Source) -> PreTrainedModel:
        key = source_key(src)
        if key not in self._models:
            self._models[key] = self._load(src)
        return self._models[key]

    def _load(self, src: Source) -> PreTrainedModel:
        folder = source_folder(src)
        log.info("loading data-flow source %s", folder)
        if isinstance(src, MergeRecipe):  # merged weights: a model of its own
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(self.dtype)).to(self.device)
            _merge_nested(src, model, self.device, self.dtype)
        else:  # the node's one mapped copy of the checkpoint (see evomerge.models.live.load_mapped)
            from evomerge.models.live import load_mapped

            model = load_mapped(src, torch_dtype(self.dtype), self.device)
        model.eval().requires_grad_(False)
        return model


def _merge_nested(recipe: MergeRecipe, model: PreTrainedModel, device, dtype: str) -> None:
    try:
        from evomerge.merge import InMemoryMerger
    except ImportError:
        raise EvomergeError("a nested parameter-space source needs evomerge.merge (the merge engine)") from None
    InMemoryMerger(recipe.sources(), device=device, dtype=torch_dtype(dtype)).merge_into(recipe, model)


# ---- tensors for export (streamed from the source folders) ----------------------------------------------

class FolderTensors:
    """Lazy read-only access to the safetensors tensors of one HF folder."""

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        folder = Path(folder)
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise EvomergeError(f"model folder {folder} has no .safetensors files")
        self._handles = [safe_open(str(f), framework="pt") for f in files]
        self._where = {k: h for h in self._handles for k in h.keys()}

    def keys(self) -> list[str]:
        return list(self._where)

    def get(self, name: str) -> torch.Tensor:
        return self._where[name].get_tensor(name)

    def numel(self, name: str) -> int:
        n = 1
        for d in self._where[name].get_slice(name).get_shape():
            n *= d
        return n


class DictTensors:
    """The same interface over an in-memory state dict (a merged nested recipe)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self._t = tensors

    def keys(self) -> list[str]:
        return list(self._t)

    def get(self, name: str) -> torch.Tensor:
        return self._t[name]

    def numel(self, name: str) -> int:
        return self._t[name].numel()


def source_tensors(src: Source, loaded: SourceModels | None = None):
    """Tensor access for one source: its folder, or (nested recipe) the merged weights."""
    if isinstance(src, str):
        return FolderTensors(source_folder(src))
    model = (loaded or SourceModels()).get(src)
    return DictTensors({k: v.detach() for k, v in model.state_dict().items()})


# ---- size objective -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSize:
    layers: int
    parameters: int


def layer_prefix(i: int) -> str:
    return f"model.layers.{i}."


def exported_tied(recipe: DataFlowRecipe, configs: dict[str, PretrainedConfig]) -> bool:
    """Whether the exported checkpoint ties lm_head to the embedding (only when one tied source gives both)."""
    return recipe.embed_model() == recipe.head_model() and bool(configs[recipe.head_model()].tie_word_embeddings)


def dataflow_size(recipe: DataFlowRecipe) -> ModelSize:
    """Depth and parameter count of the model the recipe describes (read from safetensors headers, no load)."""
    configs = check_compatible(recipe)
    cache: dict[str, FolderTensors] = {}

    def tensors(name: str) -> FolderTensors:
        if name not in cache:
            cache[name] = FolderTensors(source_folder(recipe.models[name]))
        return cache[name]

    total = 0
    for s in recipe.steps():
        t = tensors(s.model)
        total += sum(t.numel(k) for k in t.keys() if k.startswith(layer_prefix(s.layer)))
    total += tensors(recipe.embed_model()).numel("model.embed_tokens.weight")
    head = tensors(recipe.head_model())
    total += head.numel("model.norm.weight")
    if not exported_tied(recipe, configs):
        total += head.numel("lm_head.weight" if "lm_head.weight" in head.keys() else "model.embed_tokens.weight")
    return ModelSize(layers=len(recipe.steps()), parameters=total)
