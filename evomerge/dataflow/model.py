"""The path model: an ordinary HF ``*ForCausalLM`` whose decoder layers are views of the sources' layers.

Each path step gets its own decoder-layer module built on the meta device with ``layer_idx = step`` (so
every step, even a reused layer, has its own KV-cache slot) whose parameters are the *same* ``nn.Parameter``
objects as the source layer's: no weights are copied. Step k's ``o_proj`` and ``down_proj`` outputs are
multiplied by ``w_k`` (see :mod:`evomerge.recipe.dataflow` for the scaling semantics). Embedding and rotary
embedding come from the ``embed`` source, final norm and ``lm_head`` from the ``head`` source. Rotary
positions, attention masks and the cache are handled by the unchanged HF model forward, so ``generate`` and
lm-eval's ``HFLM(pretrained=model)`` work as with any checkpoint.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.initialization import no_init_weights

from evomerge.dataflow.sources import BRANCH_OUTPUTS, SourceModels, check_compatible
from evomerge.errors import EvomergeError
from evomerge.recipe.dataflow import DataFlowRecipe

log = logging.getLogger(__name__)


class ScaledOutput(nn.Module):
    """Wraps a shared linear layer and multiplies its output by a constant (a residual-branch scale)."""

    def __init__(self, inner: nn.Module, scale: float):
        super().__init__()
        self.inner = inner
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale:.6g}"


def path_config(base: PretrainedConfig, recipe: DataFlowRecipe, configs: dict[str, PretrainedConfig]) -> PretrainedConfig:
    """The config of the path model: the embed source's config with one layer per path step."""
    cfg = copy.deepcopy(base)
    steps = recipe.steps()
    cfg.num_hidden_layers = len(steps)
    if getattr(base, "layer_types", None):
        cfg.layer_types = [configs[s.model].layer_types[s.layer] for s in steps]
    return cfg


def _share_parameters(dst: nn.Module, src: nn.Module) -> None:
    """Point every parameter/buffer of ``dst`` at the same tensor object of ``src`` (same module layout)."""
    for name, mod in dst.named_modules():
        other = src.get_submodule(name)
        for p in list(mod._parameters):
            mod._parameters[p] = other._parameters[p]
        for b in list(mod._buffers):
            mod._buffers[b] = other._buffers[b]


def build_path_model(recipe: DataFlowRecipe, sources: SourceModels | None = None) -> PreTrainedModel:
    """A live causal LM running the recipe's path over the (loaded once) source layers, weights shared."""
    sources = sources or SourceModels(dtype=recipe.dtype)
    check_compatible(recipe, sources.configs(recipe))  # before any weights load
    models = {n: sources.get(recipe.models[n]) for n in recipe.used_models()}
    embed, head = models[recipe.embed_model()], models[recipe.head_model()]
    cfg = path_config(embed.config, recipe, {n: m.config for n, m in models.items()})
    cfg.tie_word_embeddings = False  # the head module is attached directly below

    # The shell is built without layers (they come from the sources), on meta, skipping weight init: cheap.
    empty = copy.deepcopy(cfg)
    empty.num_hidden_layers = 0
    if getattr(empty, "layer_types", None):
        empty.layer_types = []
    with torch.device("meta"), no_init_weights():
        shell = type(embed)(empty)
        layers = [type(models[s.model].model.layers[s.layer])(cfg, layer_idx=k) for k, s in enumerate(recipe.steps())]
    shell.config = shell.model.config = cfg
    steps = []
    for layer, step, w in zip(layers, recipe.steps(), recipe.output_scales()):
        _share_parameters(layer, models[step.model].model.layers[step.layer])
        if w != 1.0:
            for name in BRANCH_OUTPUTS:
                parent, _, attr = name.rpartition(".")
                owner = layer.get_submodule(parent)
                setattr(owner, attr, ScaledOutput(getattr(owner, attr), w))
        steps.append(layer)
    shell.model.layers = nn.ModuleList(steps)
    shell.model.embed_tokens = embed.model.embed_tokens
    shell.model.rotary_emb = embed.model.rotary_emb
    shell.model.norm = head.model.norm
    shell.lm_head = head.lm_head
    shell.generation_config = copy.deepcopy(embed.generation_config)
    left = [n for n, t in [*shell.named_parameters(remove_duplicate=False), *shell.named_buffers(remove_duplicate=False)]
            if t.is_meta]
    if left:  # an architecture with model-level tensors this builder does not know
        raise EvomergeError(f"path model for {cfg.model_type!r} left tensors unset: {', '.join(left[:3])}")
    shell.eval().requires_grad_(False)
    shell.dataflow_recipe = recipe
    log.debug("built a %d-step path model from %s", len(steps), ", ".join(recipe.used_models()))
    return shell
