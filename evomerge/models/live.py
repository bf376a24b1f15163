"""Checkpoint tensor names -> parameters of a live transformers model, the way transformers itself loads them.

transformers (5.x) renames some checkpoint keys on load (GPT-NeoX ``embed_out`` -> ``lm_head``) and fuses others
(Mixtral's per-expert ``w1``/``w3``/``w2`` into stacked ``gate_up_proj``/``down_proj``). The merge engine works on
checkpoint names (what the sources and the export hold); this module says where each merged tensor goes in the
live model, using transformers' own conversion mapping for the architecture, so no name is assumed here.
Where transformers has no such machinery (older versions), names must equal the model's ``state_dict`` names.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from evomerge.errors import EvomergeError

log = logging.getLogger(__name__)


@dataclass
class Target:
    """One live parameter and the checkpoint tensors it is made of (one, or a fused group)."""

    param: str
    sources: list[str]
    converter: Optional[object] = None  # a transformers WeightConverter for fused groups
    patterns: list[str] = field(default_factory=list)  # the converter's source pattern of each source


class LiveTargets:
    """Where each checkpoint tensor of ``names`` goes in ``model``; ``targets`` in checkpoint order."""

    def __init__(self, model: nn.Module, names: list[str], shapes: dict[str, tuple[int, ...]]):
        self.model = model
        live = model.state_dict(keep_vars=True)
        self.params = {k: v for k, v in live.items()}
        renamings, converters = _conversions(model)
        by_param: dict[str, Target] = {}
        self.skipped: list[str] = []
        for name in _natural(names):
            param, pattern = _rename(name, renamings, converters, model, live)
            if param not in live:
                self.skipped.append(name)
                continue
            t = by_param.get(param)
            if t is None:
                conv = None
                if pattern is not None:
                    conv = copy.deepcopy(next(c for c in converters if pattern in c.source_patterns))
                t = by_param[param] = Target(param, [], conv)
            t.sources.append(name)
            t.patterns.append(pattern)
        self.targets = list(by_param.values())
        for t in self.targets:
            if t.converter is None and tuple(live[t.param].shape) != tuple(shapes[t.sources[0]]):
                raise EvomergeError(f"model parameter {t.param} has shape {list(live[t.param].shape)}, "
                                    f"checkpoint tensor {t.sources[0]} has {list(shapes[t.sources[0]])}")
        written = {live[t.param].data_ptr() for t in self.targets}
        params = {k for k, _ in model.named_parameters(remove_duplicate=False)}
        missing = [k for k, v in live.items() if k in params and k not in by_param and v.data_ptr() not in written]
        if missing:
            raise EvomergeError(f"{type(model).__name__}: no checkpoint tensor maps to parameter {missing[0]}"
                                + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
                                + " (transformers' loading of this architecture is not understood)")
        if self.skipped:
            log.info("%d checkpoint tensor(s) have no live parameter (e.g. %s); merged only on export",
                     len(self.skipped), self.skipped[0])

    def tensor(self, target: Target) -> torch.Tensor:
        return self.params[target.param].data

    def fuse(self, target: Target, merged: dict[str, torch.Tensor]) -> torch.Tensor:
        """The live parameter built from its merged checkpoint tensors by transformers' own converter."""
        conv = copy.deepcopy(target.converter)
        for src, pattern in zip(target.sources, target.patterns):
            conv.add_tensor(target.param, src, pattern, merged[src])
        out = conv.convert(target.param, model=self.model, config=getattr(self.model, "config", None))
        if target.param not in out:
            raise EvomergeError(f"transformers' converter for {target.param} produced {sorted(out)}")
        value = out[target.param]
        return value[0] if isinstance(value, list) else value


def _natural(names: list[str]) -> list[str]:
    try:
        from transformers.core_model_loading import dot_natural_key
    except ImportError:  # older transformers: plain order
        return sorted(names)
    return sorted(names, key=dot_natural_key)


def _conversions(model: nn.Module):
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming
    except ImportError:
        return [], []
    try:
        mapping = get_model_conversion_mapping(model)
    except Exception as exc:  # a model class transformers cannot map: fall back to identical names
        log.info("no conversion mapping for %s: %s", type(model).__name__, exc)
        return [], []
    return ([m for m in mapping if isinstance(m, WeightRenaming)],
            [m for m in mapping if isinstance(m, WeightConverter)])


def _rename(name: str, renamings, converters, model, live) -> tuple[str, Optional[str]]:
    if not renamings and not converters:
        return name, None
    from transformers.core_model_loading import rename_source_key

    prefix = getattr(model, "base_model_prefix", None)
    param, pattern = rename_source_key(name, renamings, converters, prefix, live)
    if param not in live and name in live:
        param, pattern = rename_source_key(name, [], [], prefix, live)
    return param, pattern


def load_mapped(ref: str, dtype: torch.dtype, device: torch.device | str = "cpu") -> nn.Module:
    """``from_pretrained`` without a private copy of the weights where none is needed: on the CPU, in the stored
    dtype, every parameter is a view of the memory-mapped checkpoint (page cache, shared by every worker of the
    node); otherwise each tensor is converted / moved once, straight into its parameter."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from evomerge.models.safetensors_io import open_checkpoint

    ck = open_checkpoint(ref)
    config = AutoConfig.from_pretrained(ck.path)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    live = LiveTargets(model, ck.names(), {n: ck.shape(n) for n in ck.names()})
    state = {}
    for target in live.targets:
        tensors = {n: ck.get(n, dtype, device) for n in target.sources}
        state[target.param] = live.fuse(target, tensors) if target.converter is not None else tensors[target.sources[0]]
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise EvomergeError(f"{ref}: parameter {meta[0]} was not loaded")
    return model.to(device).eval().requires_grad_(False)
