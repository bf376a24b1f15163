"""In-memory merging for search: merged weights written in place into a live model, candidate after candidate.

Memory plan (one worker): the sources are memory-mapped safetensors (``open_checkpoint``: page cache, one copy per
node whatever the number of workers); the live model is the only full-size allocation; scratch is a fixed set of
chunk buffers (``engine.Workspace``); task vectors, magnitude histograms and DELLA ranks are cached only within
``cache_budget`` bytes. The arithmetic is the export's (``engine.merge_tensor``, float32), so the scored model
is bit for bit the model ``evomerge merge`` / ``evomerge export`` write in the same dtype. When the sources'
vocabularies differ, the live model's embeddings are resized to each recipe's rows (``evomerge.models.vocab``).
"""

from __future__ import annotations

import logging
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from evomerge.errors import EvomergeError
from evomerge.merge.engine import TensorCache, TensorPool, Workspace, geometry, row_writer
from evomerge.merge.plan import MergePlan
from evomerge.merge.sizes import AUTO_CACHE_FLOOR, AUTO_CACHE_SHARE, cache_budget_bytes, host_available_bytes  # noqa: F401
from evomerge.models.compat import check_compatible
from evomerge.models.live import LiveTargets
from evomerge.models.safetensors_io import open_checkpoint
from evomerge.models.vocab import build_vocab_map, config_vocab_size, resize_live_vocab, vocab_tensors
from evomerge.recipe import MergeRecipe

log = logging.getLogger(__name__)
def keep_heap_bounded() -> None:
    """Ask glibc to serve every allocation of 256 KB or more by its own mapping, returned to the OS when freed.
    By default glibc raises that threshold after the first large free, and the chunk-sized temporaries of
    thousands of merges then pile up in a heap it never trims (measured: +1x a model of anonymous memory)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD (a fixed value also stops the dynamic adjustment)
        libc.mallopt(-1, 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


class InMemoryMerger:
    """Merges recipes over ``source_refs`` (folders or ``zoo://...``) into live models or state dicts."""

    def __init__(self, source_refs: Sequence[str], device: str | torch.device = "cpu",
                 dtype: Optional[torch.dtype] = None, cache_budget: Optional[int | str] = "auto",
                 threads: Optional[int] = None):
        refs = list(dict.fromkeys(source_refs))
        if not refs:
            raise EvomergeError("InMemoryMerger needs at least one source model")
        self.refs = refs
        self.device = torch.device(device)
        keep_heap_bounded()
        self.ckpts = {r: open_checkpoint(r) for r in refs}
        check_compatible(list(self.ckpts.values()))
        first = self.ckpts[refs[0]]
        self.source_dtype = first.dtype(first.ordered_names()[0])
        self.dtype = dtype or self.source_dtype  # of merge_state_dict's tensors (export's default dtype)
        budget = cache_budget_bytes(cache_budget, self.device)
        if cache_budget == "auto":  # at most half a model (the worker stays within 2x one model), 32 MB at least
            budget = min(budget, max(first.total_bytes() // 2, AUTO_CACHE_FLOOR))
        self.cache = TensorCache(budget)
        self.workspace = Workspace(self.device)
        self._workspaces = {str(self.device): self.workspace}
        #: CPU threads merging tensors side by side (default: torch's threads when the merger is made)
        self.threads = max(1, threads or torch.get_num_threads())
        self.pool = TensorPool(self.threads) if self.threads > 1 and self.device.type == "cpu" else None
        self._targets: dict[int, tuple[nn.Module, LiveTargets]] = {}
        self.vocab_varies = bool(vocab_tensors(list(self.ckpts.values()))[0])  # sources' vocabularies differ
        #: whether every merged value of the last merge_into / iter_merged fitted its output dtype (no NaN, no
        #: inf, no overflow on the cast), checked on the float32 chunks as they were written
        self.finite = True
        log.info("InMemoryMerger: %d sources (memory-mapped), cache budget %s", len(refs),
                 "unlimited" if self.cache.budget is None else f"{self.cache.budget / 1e6:.0f} MB")

    def merge_into(self, recipe: MergeRecipe, model) -> None:
        """Write the merged weights of ``recipe`` into ``model`` in place (no disk I/O): an ``nn.Module``'s
        parameters, or a weight sink (an inference engine: ``load_weights(named_tensors)`` and ``dtype``) that
        takes the tensors one at a time from :meth:`iter_merged`."""
        if not isinstance(model, nn.Module):
            model.load_weights(self.iter_merged(recipe, dtype=model.dtype))
            return
        plan = MergePlan(recipe, self.ckpts)
        self.finite = True
        if self.vocab_varies:  # the live model gets the recipe's rows (its lead's when its models agree)
            rows = plan.vocab_rows() or config_vocab_size(plan.lead.config)
            if rows is not None and resize_live_vocab(model, rows):
                self._targets.pop(id(model), None)
        live = self._targets_of(model, plan)

        def merge_target(target) -> None:
            dst = live.tensor(target)
            ws = self._workspace(dst.device)  # a model spread over GPUs: merge where each parameter lives
            if target.converter is None and dst.is_contiguous():
                rows = dst.view(geometry(dst.shape))
                plan.merge(target.sources[0], self._checked(row_writer(rows), dst.dtype), ws, self.cache, dest=rows)
                return
            merged = {}
            for name in target.sources:
                merged[name] = torch.empty(plan.shape(name), dtype=dst.dtype, device=dst.device)
                plan.merge(name, self._checked(row_writer(merged[name].view(geometry(plan.shape(name)))),
                                               dst.dtype), ws, self.cache)
            dst.copy_(live.fuse(target, merged) if target.converter is not None else merged[target.sources[0]])

        if self.pool is not None and plan.order_free() and all(p.device.type == "cpu" for p in model.parameters()):
            # the largest tensors first, so that no thread is left with a big one at the end
            self.pool.run(merge_target, sorted(live.targets, key=lambda t: -live.tensor(t).numel()))
            return
        with torch.no_grad():
            for target in live.targets:
                merge_target(target)

    def iter_merged(self, recipe: MergeRecipe, dtype: Optional[torch.dtype] = None) -> Iterator[tuple[str, torch.Tensor]]:
        """``(checkpoint name, merged tensor)`` of ``recipe``, one tensor at a time, each a new tensor in ``dtype``
        (default: the merger's) on the merger's device, so a consumer holds one tensor beyond its own weights
        (one per merge thread: they merge the next tensors meanwhile)."""
        plan = MergePlan(recipe, self.ckpts)
        self.finite = True

        def merged(name: str) -> tuple[str, torch.Tensor]:
            t = torch.empty(plan.shape(name), dtype=dtype or self.dtype, device=self.device)
            rows = t.view(geometry(t.shape))
            plan.merge(name, self._checked(row_writer(rows), t.dtype), self._workspace(self.device), self.cache,
                       dest=rows)
            return name, t

        if self.pool is not None and plan.order_free():
            yield from self.pool.map_ordered(merged, plan.names)
            return
        for name in plan.names:
            with torch.no_grad():
                out = merged(name)
            yield out

    def merge_state_dict(self, recipe: MergeRecipe, dtype: Optional[torch.dtype] = None) -> dict[str, torch.Tensor]:
        """The merged tensors of ``recipe`` (checkpoint names, ``dtype`` default: the merger's) on the device."""
        return dict(self.iter_merged(recipe, dtype))

    def _checked(self, write, dtype: torch.dtype):
        """``write`` that also clears ``self.finite`` when a float32 chunk holds a value ``dtype`` cannot (NaN,
        inf, or beyond its range): the largest magnitude the method reports (``note_peak``), else one min/max
        pass over a chunk still in cache, never a pass over the model."""
        limit = torch.finfo(dtype).max if dtype.is_floating_point else float("inf")
        noted: list[float] = []

        def checked(r0: int, r1: int, chunk: torch.Tensor) -> None:
            if noted:
                peak = noted.pop()
                self.finite = self.finite and peak <= limit  # False for NaN
            elif self.finite and chunk.numel():
                lo, hi = torch.aminmax(chunk)
                self.finite = bool(-limit <= lo) and bool(hi <= limit)
            write(r0, r1, chunk)
        checked.note_peak = noted.append
        return checked

    def tokenizer_folder(self, lead: str, vocab: str = "base") -> str:
        """The folder whose tokenizer merges onto ``lead`` of every source get under the ``vocab`` rule."""
        if lead not in self.ckpts:
            return str(open_checkpoint(lead).path)
        vmap = build_vocab_map(self.ckpts, lead, [r for r in self.refs if r != lead], vocab)
        return str(self.ckpts[vmap.tokenizer_ref if vmap else lead].path)

    def _workspace(self, device: torch.device) -> Workspace:
        if self.pool is not None and (ws := self.pool.workspace(device)) is not None:
            return ws
        ws = self._workspaces.get(str(device))
        if ws is None:
            ws = self._workspaces[str(device)] = Workspace(device)
        return ws

    def _targets_of(self, model: nn.Module, plan: MergePlan) -> LiveTargets:
        hit = self._targets.get(id(model))
        if hit is not None and hit[0] is model:
            return hit[1]
        live = LiveTargets(model, plan.names, {n: plan.shape(n) for n in plan.names})
        self._targets[id(model)] = (model, live)
        return live

