"""The row-remapping layer of a merge whose sources' vocabularies differ (rules: ``evomerge.models.vocab``).

A token-indexed tensor is merged as two parts, by the same code in the search and in the export:

- rows ``[0, lead_rows)``: the method's merge (``engine.merge_tensor``) over sources of exactly ``lead_rows``
  rows: a model with more rows is a narrowed view of its mapped file, a model with fewer is a
  :class:`~evomerge.merge.engine.StitchedRows` of its rows followed by the lead's (no copy until a chunk is
  read). Whole-tensor statistics (a TIES top-k, a DARE draw) therefore see the same tensor under ``base`` and
  ``union``;
- rows ``[lead_rows, out_rows)`` (``union`` only): the rows of the models that have them, their float32 mean
  when several do (one model: its row exactly, cast once to the output dtype).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from evomerge.merge.engine import CHUNK_ELEMS, StitchedRows, Workspace, merge_tensor, row_writer


def source_rows(plan, name: str, ref: str):
    """Model ``ref``'s tensor ``name`` as exactly ``lead_rows`` rows (see the module doc)."""
    vmap = plan.vocab
    view = plan.ckpts[ref].view(name)
    have, want = vmap.rows[ref], vmap.lead_rows
    if have >= want:
        return view[:want]
    lead = plan.ckpts[vmap.lead].view(name)
    if view.dim() == 1:  # a bias: a few KB, copied
        return torch.cat([view, lead[have:want]])
    return StitchedRows([(view, 0, have), (lead, have, want)])


def extra_rows(plan, name: str, r0: int, r1: int, holders: tuple[str, ...], ws: Workspace) -> torch.Tensor:
    """Float32 rows ``r0:r1`` (beyond the lead's) as ``[rows, cols]``: the mean of the ``holders``' rows."""
    out = ws.get("vocab_extra", (r1 - r0, math.prod(plan.shape(name)[1:])))
    tmp = ws.get("vocab_extra_in", out.shape)
    for i, ref in enumerate(holders):
        view = plan.ckpts[ref].view(name)
        src = view.reshape(view.shape[0], -1)[r0:r1]
        if i == 0:
            out.copy_(src)
        else:
            tmp.copy_(src)
            out.add_(tmp)
    if len(holders) > 1:
        out.div_(len(holders))
    return out


def merge_vocab_tensor(plan, name: str, write: Callable, ws: Workspace, cache, dest=None) -> None:
    """``MergePlan.merge`` for a token-indexed tensor: rows ``[0, lead_rows)`` by the method, then the rows
    beyond the lead's; ``write`` / ``dest`` as for ``engine.merge_tensor`` (rows of the whole output tensor)."""
    vmap = plan.vocab
    lead_rows = vmap.lead_rows
    shape = plan.shape(name)
    base = source_rows(plan, name, plan.base) if plan.base else None
    sources = [source_rows(plan, name, m) for m in plan.models]
    run = dict(seed=plan.recipe.seed, cache_scope=plan.base or "")
    if len(shape) == 1:  # a vector is one chunk row: its vocabulary runs along the columns
        full = ws.get("vocab_vector", (1, vmap.out_rows))
        merge_tensor(plan.method, plan.params[name], name, plan.models, base, sources,
                     row_writer(full[:, :lead_rows]), ws, cache, **run)
        for r0, r1, holders in vmap.extra:
            full[0, r0:r1].copy_(extra_rows(plan, name, r0, r1, holders, ws).view(-1))
        write(0, 1, full)
        return
    head = dest[:lead_rows] if dest is not None else None
    merge_tensor(plan.method, plan.params[name], name, plan.models, base, sources, write, ws, cache,
                 dest=head, **run)
    step = max(1, CHUNK_ELEMS // max(math.prod(shape[1:]), 1))
    for r0, r1, holders in vmap.extra:
        for c0 in range(r0, r1, step):
            c1 = min(r1, c0 + step)
            chunk = extra_rows(plan, name, c0, c1, holders, ws)
            write(c0, c1, chunk)
