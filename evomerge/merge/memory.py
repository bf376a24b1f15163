"""In-memory merging for search: every source loaded once, task vectors cached, merged weights written in place.

A search merges thousands of candidate recipes from the same sources, so the per-candidate work is only the
method math: sources are held stacked per tensor (``[n_sources, *shape]``, one contiguous block), task vectors
relative to a base are computed once per base and cached, per-(source, tensor) derived data (magnitude orders,
DELLA ranks) is cached, and scratch buffers are reused between candidates.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

from evomerge.errors import EvomergeError
from evomerge.merge.plan import check_layers, input_models, plan_params, validate_recipe
from evomerge.merge.registry import MergeMethod, TensorInputs
from evomerge.models.compat import check_compatible, num_layers
from evomerge.models.safetensors_io import LazyCheckpoint
from evomerge.recipe import MergeRecipe

log = logging.getLogger(__name__)


class InMemoryMerger:
    """Holds ``source_refs`` (model references: folders or ``zoo://...``) in memory for repeated merges."""

    def __init__(self, source_refs: Sequence[str], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        refs = list(dict.fromkeys(source_refs))
        if not refs:
            raise EvomergeError("InMemoryMerger needs at least one source model")
        self.refs = refs
        self.device = torch.device(device)
        self.dtype = dtype
        ckpts = [LazyCheckpoint(r) for r in refs]
        check_compatible(ckpts)
        self.num_layers = num_layers(ckpts[0])
        first = ckpts[0]
        self.tensor_names = sorted(first.names(), key=lambda n: (first.weight_map[n], n))
        self._index = {r: i for i, r in enumerate(refs)}
        # one contiguous [n_sources, *shape] block per tensor
        self._raw: dict[str, torch.Tensor] = {
            name: torch.empty((len(refs),) + first.shape(name), dtype=dtype, device=self.device)
            for name in self.tensor_names
        }
        for i, ck in enumerate(ckpts):
            for name, t in ck.iter_tensors(dtype=dtype):
                self._raw[name][i].copy_(t)
            ck.close()
        self._deltas: dict[str, dict[str, torch.Tensor]] = {}  # base -> name -> [n-1, *shape]
        self._derived: dict[tuple[str, str], dict] = {}  # (base, name) -> cache for TensorInputs
        self._workspace: dict = {}
        self._methods: dict[str, MergeMethod] = {}
        self._targets: dict[int, tuple[object, dict[str, torch.Tensor]]] = {}
        log.info("InMemoryMerger: %d sources, %d tensors, %.1f MB", len(refs), len(self.tensor_names),
                 sum(t.numel() * t.element_size() for t in self._raw.values()) / 1e6)

    # ----- public API -----

    def merge_into(self, recipe: MergeRecipe, model: nn.Module) -> None:
        """Write the merged weights of ``recipe`` into ``model``'s parameters in place (no disk I/O)."""
        targets = self._targets_of(model)
        with torch.no_grad():
            for name, x, p, method in self._plan(recipe):
                dst = targets[name]
                if dst.dtype == self.dtype and dst.device == self.device and dst.is_contiguous():
                    method.merge_tensor(x, p, dst)
                else:
                    buf = self._buffer(("out", tuple(dst.shape)), dst.shape)
                    method.merge_tensor(x, p, buf)
                    dst.copy_(buf)

    def merge_state_dict(self, recipe: MergeRecipe) -> dict[str, torch.Tensor]:
        """The merged tensors of ``recipe`` as a fresh state dict."""
        out = {}
        with torch.no_grad():
            for name, x, p, method in self._plan(recipe):
                t = torch.empty(self._raw[name].shape[1:], dtype=self.dtype, device=self.device)
                method.merge_tensor(x, p, t)
                out[name] = t
        return out

    # ----- internals -----

    def _plan(self, recipe: MergeRecipe):
        method_cls = validate_recipe(recipe)
        models = input_models(recipe, method_cls)
        base = recipe.base if method_cls.needs_base else None
        missing = [m for m in models + ([base] if base else []) if m not in self._index]
        if missing:
            raise EvomergeError(f"recipe names model(s) the merger does not hold: {', '.join(missing)} "
                                f"(held: {', '.join(self.refs)})")
        check_layers(recipe, self.num_layers)
        params = plan_params(recipe, method_cls, models, self.tensor_names)
        method = self._methods.get(recipe.method)
        if method is None:
            method = self._methods[recipe.method] = method_cls()
        src_idx = [self._index[m] for m in models]
        delta_idx = None
        if base is not None and method_cls.uses_deltas:
            others = [r for r in self.refs if r != base]
            delta_idx = [others.index(m) for m in models]
        for name in self.tensor_names:
            raw = self._raw[name]
            x = TensorInputs(
                name=name,
                models=models,
                base=raw[self._index[base]] if base is not None else None,
                get_sources=_selector(raw, src_idx, self._workspace, "src"),
                get_deltas=(_selector_lazy(lambda n=name, b=base: self._deltas_for(b, n), delta_idx,
                                           self._workspace, "dsel")
                            if delta_idx is not None else _no_deltas),
                seed=recipe.seed,
                cache=self._derived.setdefault((base or "", name), {}),
                workspace=self._workspace,
            )
            yield name, x, params[name], method

    def _deltas_for(self, base: str, name: str) -> torch.Tensor:
        per_base = self._deltas.setdefault(base, {})
        d = per_base.get(name)
        if d is None:
            raw = self._raw[name]
            b = self._index[base]
            others = [i for i in range(len(self.refs)) if i != b]
            d = per_base[name] = raw[others] - raw[b]
        return d

    def _buffer(self, key, shape) -> torch.Tensor:
        buf = self._workspace.get(key)
        if buf is None:
            buf = self._workspace[key] = torch.empty(tuple(shape), dtype=self.dtype, device=self.device)
        return buf

    def _targets_of(self, model: nn.Module) -> dict[str, torch.Tensor]:
        hit = self._targets.get(id(model))
        if hit is not None and hit[0] is model:
            return hit[1]
        sd = model.state_dict(keep_vars=True)
        missing = [n for n in self.tensor_names if n not in sd]
        if missing:
            raise EvomergeError(f"model has no parameter {missing[0]} (+{len(missing) - 1} more) of the merge sources")
        for n in self.tensor_names:
            if tuple(sd[n].shape) != tuple(self._raw[n].shape[1:]):
                raise EvomergeError(f"model parameter {n} has shape {list(sd[n].shape)}, "
                                    f"sources have {list(self._raw[n].shape[1:])}")
        targets = {n: sd[n].data for n in self.tensor_names}
        self._targets[id(model)] = (model, targets)
        return targets


def _no_deltas() -> torch.Tensor:
    raise EvomergeError("this merge has no base model, so it has no task vectors")


def _pick(stack: torch.Tensor, idx: list[int], workspace: dict, key) -> torch.Tensor:
    """Rows ``idx`` of ``stack``: a view when they are a contiguous ascending run, else a reused copy."""
    if idx and idx == list(range(idx[0], idx[0] + len(idx))):
        return stack[idx[0]: idx[0] + len(idx)]
    shape = (len(idx),) + tuple(stack.shape[1:])
    k = (key, shape)
    buf = workspace.get(k)
    if buf is None:
        buf = workspace[k] = torch.empty(shape, dtype=stack.dtype, device=stack.device)
    torch.index_select(stack, 0, torch.tensor(idx, device=stack.device), out=buf)
    return buf


def _selector(stack, idx, workspace, key):
    return lambda: _pick(stack, idx, workspace, key)


def _selector_lazy(get_stack, idx, workspace, key):
    return lambda: _pick(get_stack(), idx, workspace, key)
