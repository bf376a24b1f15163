"""The one merge arithmetic both paths run: a tensor is merged in row chunks, in float32, from memory-mapped
sources, into whatever the caller writes (a live model's parameter, or an export buffer).

Memory per worker, beyond the live model: the sources are views of mapped files (page cache, shared by every
process on the node), the scratch is a fixed set of chunk-sized buffers (:class:`Workspace`, ``CHUNK_ELEMS``
elements each, reused for every tensor and candidate), and caches hold only what fits a byte budget
(:class:`TensorCache`). Chunking depends only on the tensor's shape, never on memory or device, so the search's
merge and the export are the same floating-point operations: the exported model is the model that was scored.

A method's ``merge_tensor`` sees one chunk (``TensorInputs`` of ``[rows, cols]``); what needs the whole tensor
(the k-th largest magnitude, an L1 norm, a SLERP angle) is a statistic computed once per tensor from a pass
over its chunks (``TensorInputs.stat`` / ``TensorInputs.chunks``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch

from evomerge.merge.sizes import CHUNK_ELEMS  # elements per scratch chunk (tests patch it here)

COMPUTE_DTYPE = torch.float32


def geometry(shape: Sequence[int]) -> tuple[int, int]:
    """The 2-D view a tensor is chunked in: ``(rows, cols)`` with rows = the first dimension."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, int(shape[0])
    cols = 1
    for d in shape[1:]:
        cols *= int(d)
    return int(shape[0]), cols


def row_chunks(shape: Sequence[int]) -> list[tuple[int, int]]:
    """Row ranges of the chunks of a tensor (a function of its shape alone)."""
    rows, cols = geometry(shape)
    step = max(1, CHUNK_ELEMS // max(cols, 1))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)] or [(0, 0)]


class Workspace:
    """Named scratch buffers, each one flat allocation reused for every shape asked of it (so a whole model's
    worth of chunk shapes costs one buffer per name, not one per shape)."""

    def __init__(self, device: torch.device | str = "cpu", prefix: str = "", _store: Optional[dict] = None):
        self.device = torch.device(device)
        self.prefix = prefix
        self._store = {} if _store is None else _store

    def get(self, key: str, shape, dtype: torch.dtype = COMPUTE_DTYPE, device=None, pin: bool = False) -> torch.Tensor:
        device = torch.device(device) if device is not None else self.device
        n = 1
        for d in shape:
            n *= int(d)
        k = (self.prefix + key, dtype, str(device), pin)
        buf = self._store.get(k)
        if buf is None or buf.numel() < n:
            buf = torch.empty(max(n, 1), dtype=dtype, device=device, pin_memory=pin)
            self._store[k] = buf
        return buf[:n].view(tuple(shape))

    def prefixed(self, prefix: str) -> "Workspace":
        """A view of the same store whose buffers are kept apart from this one's (for nested passes)."""
        return Workspace(self.device, self.prefix + prefix, self._store)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._store.values())


class TensorCache:
    """Recipe-independent derived data (task vectors, magnitude histograms, DELLA ranks) kept across candidates
    while it fits ``budget`` bytes (``None``: no limit; ``0``: nothing kept). An entry of higher ``priority``
    (small and saving a whole pass, like a magnitude histogram) evicts lower ones to fit. What is not kept is
    recomputed, to the same bits, so the budget changes speed, never results."""

    def __init__(self, budget: Optional[int] = None):
        self.budget = budget
        self._lock = threading.Lock()  # tensors merge side by side (``TensorPool``); entries are made outside it
        self.used = 0
        self._bytes_at: dict[int, int] = {}  # priority -> bytes held at it (room_for runs per tensor)
        self._d: dict = {}  # key -> (tensor, priority)
        self.hits = 0
        self.misses = 0

    def get(self, key, make: Callable[[], torch.Tensor], priority: int = 0) -> torch.Tensor:
        with self._lock:
            hit = self._d.get(key)
            if hit is not None:
                self.hits += 1
                return hit[0]
            self.misses += 1
        val = make()  # keys are per tensor, and one thread merges a tensor: no entry is made twice
        size = val.numel() * val.element_size()
        with self._lock:
            if self.budget is not None and self.used + size > self.budget:
                self._evict_below(priority, self.used + size - self.budget)
            if self.budget is None or self.used + size <= self.budget:
                self._d[key] = (val.clone() if val._base is not None or not val.is_contiguous() else val, priority)
                self.used += size
                self._bytes_at[priority] = self._bytes_at.get(priority, 0) + size
        return val

    def has(self, key) -> bool:
        return key in self._d

    def room_for(self, size: int, priority: int = 0) -> bool:
        """Whether an entry of ``size`` bytes would be kept (evicting lower-priority entries if need be)."""
        if self.budget is None:
            return True
        with self._lock:
            free = self.budget - self.used + sum(b for p, b in self._bytes_at.items() if p < priority)
        return size <= free

    def _evict_below(self, priority: int, need: int) -> None:
        for key in [k for k, (_, p) in self._d.items() if p < priority]:
            if need <= 0:
                return
            t, p = self._d.pop(key)
            self.used -= t.numel() * t.element_size()
            self._bytes_at[p] -= t.numel() * t.element_size()
            need -= t.numel() * t.element_size()


class TensorPool:
    """Merges independent tensors side by side: ``threads`` threads, each running torch on one thread, each with
    its own scratch. Many small parallel regions per chunk (torch's own threads, meeting at a barrier after every
    op) scale poorly and collapse when other work shares the cores; whole tensors per thread need no barrier.
    Every tensor is computed exactly as on one thread, so the threads never change a merged bit."""

    def __init__(self, threads: int):
        self.threads = threads
        self._pool: Optional[ThreadPoolExecutor] = None
        self._local = threading.local()

    def workspace(self, device: torch.device) -> Optional[Workspace]:
        """This pool thread's scratch on ``device`` (None outside the pool)."""
        spaces = getattr(self._local, "spaces", None)
        if spaces is None:
            return None
        ws = spaces.get(str(device))
        if ws is None:
            ws = spaces[str(device)] = Workspace(device)
        return ws

    def _init_thread(self) -> None:
        torch.set_num_threads(1)  # this thread's own setting (the caller's threads keep theirs)
        self._local.spaces = {}

    def _start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="evomerge-merge",
                                            initializer=self._init_thread)

    def run(self, fn: Callable[[object], None], items: Sequence) -> None:
        """``fn(item)`` for every item, ``threads`` at a time, without autograd; the first error is raised."""
        self._start()

        def call(item) -> None:
            with torch.no_grad():  # grad mode is per thread
                fn(item)

        for future in [self._pool.submit(call, item) for item in items]:
            future.result()

    def map_ordered(self, fn: Callable[[object], object], items: Sequence) -> Iterator:
        """``fn(item)`` of each item, in order, ``threads`` computed ahead at most (so at most that many results
        are held at once)."""
        from collections import deque

        self._start()

        def call(item):
            with torch.no_grad():
                return fn(item)

        window: deque = deque()
        for item in items:
            window.append(self._pool.submit(call, item))
            if len(window) >= self.threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


@dataclass
class TensorInputs:
    """One chunk (rows ``rows`` of the 2-D view) of one output tensor, as a method sees it.

    ``base`` / ``sources`` / ``deltas`` are float32 ``[rows, cols]`` (stacked ``[n, rows, cols]``), in the recipe's
    model order; ``deltas = sources - base``. ``stat(key, make)`` keeps whole-tensor statistics for the tensor's
    chunks; ``chunks()`` walks every chunk of the tensor (with its own scratch) to compute them.
    """

    name: str
    models: list[str]
    shape: tuple[int, ...]
    rows: tuple[int, int]
    get_base: Callable[[], Optional[torch.Tensor]]
    get_sources: Callable[[], torch.Tensor]
    get_deltas: Callable[[], torch.Tensor]
    get_delta: Callable[[int], torch.Tensor]
    get_source: Callable[[int], torch.Tensor]
    get_stored: Callable[[int], torch.Tensor]
    chunks: Callable[[], Iterator["TensorInputs"]]
    seed: int = 0
    cache: Callable = None  # (key, make, priority=0) -> tensor: the budgeted cache for this tensor
    cache_room: Callable = None  # (key, nbytes, priority=0) -> bool: held already, or would be kept
    cache_has: Callable = None  # (key) -> bool: held already
    stats: dict = field(default_factory=dict)
    workspace: Workspace = field(default_factory=Workspace)
    pass_id: str = "main"
    rng_stream: Optional[object] = None  # a MergekitStream (random_stream: mergekit): masks drawn from it

    @property
    def base(self) -> Optional[torch.Tensor]:
        """Read (and upcast) on first use: the fused kernels read the stored base themselves."""
        return self.get_base()

    @property
    def sources(self) -> torch.Tensor:
        return self.get_sources()

    @property
    def deltas(self) -> torch.Tensor:
        return self.get_deltas()

    def delta(self, i: int) -> torch.Tensor:
        """The task vector of source ``i`` on this chunk (without building the whole stack)."""
        return self.get_delta(i)

    def source(self, i: int) -> torch.Tensor:
        """Source ``i`` on this chunk (a view of the mapped file where no conversion is needed)."""
        return self.get_source(i)

    @property
    def shape_numel(self) -> int:
        """Elements of the whole tensor (not of this chunk)."""
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    @property
    def device(self) -> torch.device:
        return self.workspace.device

    def stat(self, key, make: Callable[[], object]):
        """A whole-tensor statistic, computed once for this tensor and candidate."""
        if key not in self.stats:
            self.stats[key] = make()
        return self.stats[key]

    @property
    def index0(self) -> int:
        """Flat index (in the whole tensor) of this chunk's first element."""
        return self.rows[0] * geometry(self.shape)[1]

    def stored_base(self) -> torch.Tensor:
        """The base on this chunk as stored (its own dtype, no copy where it is one stored tensor)."""
        return self.get_stored(0)

    def stored_source(self, i: int) -> torch.Tensor:
        """Source ``i`` on this chunk as stored (see :meth:`stored_base`)."""
        return self.get_stored((1 if self.base is not None else 0) + i)

    def buffer(self, key: str, shape, dtype: torch.dtype, device=None) -> torch.Tensor:
        """A reusable scratch tensor (contents undefined)."""
        return self.workspace.get(key, shape, dtype, device)


class StitchedRows:
    """A read-only tensor whose rows are runs of rows of other tensors (same trailing shape), e.g. a model's own
    embedding rows followed by the base's where it has none. Nothing is copied until a chunk is read."""

    def __init__(self, pieces: Sequence[tuple[torch.Tensor, int, int]]):
        self.pieces = [(t.reshape(t.shape[0], -1), r0, r1) for t, r0, r1 in pieces]  # (tensor, its rows r0:r1)
        first = pieces[0][0]
        self.shape = (sum(r1 - r0 for _, r0, r1 in pieces),) + tuple(first.shape[1:])
        self.dtype = first.dtype

    def parts(self, r0: int, r1: int) -> list[tuple[torch.Tensor, int, int]]:
        """``(rows, out0, out1)``: the stored rows that make rows ``r0:r1``, and where they go in that chunk."""
        out, at = [], 0
        for t, s0, s1 in self.pieces:
            lo, hi = max(r0, at), min(r1, at + s1 - s0)
            if lo < hi:
                out.append((t[s0 + lo - at:s0 + hi - at], lo - r0, hi - r0))
            at += s1 - s0
        return out


class ChunkReader:
    """Reads chunks of one tensor of several sources (stored views, any dtype) as float32 on the device.

    On a CUDA device, chunks go through pinned staging buffers and are copied asynchronously, so reading the
    next chunk from host memory overlaps the device's work on the current one."""

    def __init__(self, views: Sequence[torch.Tensor], workspace: Workspace):
        self.views = [v if isinstance(v, StitchedRows) else v.reshape(geometry(v.shape)) for v in views]
        self.ws = workspace
        self.cuda = workspace.device.type == "cuda"
        self._slot = 0

    def read(self, i: int, r0: int, r1: int, key: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        view = self.views[i]
        if isinstance(view, StitchedRows):
            parts = view.parts(r0, r1)
            if len(parts) > 1:  # rows of several stored tensors: gathered into one buffer
                if out is None:
                    out = self.ws.get(key, (r1 - r0, parts[0][0].shape[1]))
                for src, o0, o1 in parts:
                    self._copy(src, out[o0:o1])
                return out
            src = parts[0][0]
        else:
            src = view[r0:r1]
        if out is None:
            if not self.cuda and src.dtype == COMPUTE_DTYPE:
                return src  # a view of the mapped file: no copy at all
            out = self.ws.get(key, src.shape)
        self._copy(src, out)
        return out

    def _copy(self, src: torch.Tensor, out: torch.Tensor) -> None:
        if self.cuda:
            self._slot ^= 1
            stage = self.ws.get(f"stage{self._slot}", src.shape, src.dtype, device="cpu", pin=True)
            event = self.ws._store.get(("event", self._slot))
            if event is not None:
                event.synchronize()  # the copy that last read this staging buffer has finished
            stage.copy_(src)
            out.copy_(stage, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self.ws._store[("event", self._slot)] = event
        else:
            out.copy_(src)


def row_writer(rows: torch.Tensor) -> Callable[[int, int, torch.Tensor], None]:
    """A ``write`` for :func:`merge_tensor` that stores chunks into ``rows`` (a tensor's 2-D view), casting to its
    dtype; chunks the method already wrote there (``dest``) are left as they are."""
    def write(r0: int, r1: int, chunk: torch.Tensor) -> None:
        target = rows[r0:r1]
        if target.data_ptr() != chunk.data_ptr():
            target.copy_(chunk)
    return write


def merge_tensor(method, params, name: str, models: list[str], base_view: Optional[torch.Tensor],
                 source_views: Sequence[torch.Tensor], write: Callable[[int, int, torch.Tensor], None],
                 workspace: Workspace, cache: TensorCache, seed: int = 0, cache_scope: str = "",
                 dest: Optional[torch.Tensor] = None, rng_stream=None) -> None:
    """Merge one tensor chunk by chunk; ``write(r0, r1, merged_rows)`` receives each chunk (rows of the 2-D view,
    float32, valid until the next call). ``cache_scope`` names the base and model set for cache keys. ``dest``:
    the destination's 2-D view; when the method writes its dtype on this device (``method.writes``: float32, and
    bfloat16 for the fused CPU kernels) the method writes straight into it, and ``write`` gets those very rows.
    ``rng_stream``: mergekit's random stream (a method that draws masks then sees the whole tensor in one
    chunk). A ``write`` with a ``note_peak(value)`` method is told the largest ``|value|`` of the next chunk (NaN
    if any) where the method reports it, so that it need not scan the chunk itself."""
    shape = tuple(source_views[0].shape)
    views = ([base_view] if base_view is not None else []) + list(source_views)
    stats: dict = {}
    rng_stream = rng_stream if rng_stream is not None and method.random_draws() else None
    direct = (dest is not None and dest.device == workspace.device and dest.is_contiguous()
              and method.writes(dest.dtype, dest.device))
    whole = (method.whole_tensor(shape) or rng_stream is not None
             or (direct and _streamed(method, views, base_view, source_views, dest)))
    chunks = [(0, geometry(shape)[0])] if whole else row_chunks(shape)

    def tensor_cache(key, make, priority: int = 0):
        return cache.get((cache_scope, name) + tuple(key), make, priority)

    def cache_has(key) -> bool:
        return cache.has((cache_scope, name) + tuple(key))

    def cache_room(key, nbytes: int, priority: int = 0) -> bool:
        full = (cache_scope, name) + tuple(key)
        return cache.has(full) or cache.room_for(nbytes, priority)

    def inputs(r0: int, r1: int, ws: Workspace, pass_id: str) -> TensorInputs:
        reader = ChunkReader(views, ws)
        nb = 1 if base_view is not None else 0
        n = len(source_views)
        memo: dict = {}

        def base() -> Optional[torch.Tensor]:
            if base_view is None:
                return None
            if "base" not in memo:
                memo["base"] = reader.read(0, r0, r1, "base")
            return memo["base"]

        def sources() -> torch.Tensor:
            if "src" not in memo:
                stack = ws.get("src", (n, r1 - r0, geometry(shape)[1]))
                for i in range(n):
                    reader.read(nb + i, r0, r1, "src", out=stack[i])
                memo["src"] = stack
            return memo["src"]

        def one_delta(i: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
            def make() -> torch.Tensor:
                d = out if out is not None else ws.get("delta1", (r1 - r0, geometry(shape)[1]))
                reader.read(nb + i, r0, r1, "", out=d)
                return d.sub_(base())
            got = tensor_cache(("delta", models[i], r0), make)
            if out is not None and got.data_ptr() != out.data_ptr():
                out.copy_(got)
                return out
            return got

        def deltas() -> torch.Tensor:
            if base_view is None:
                from evomerge.errors import EvomergeError
                raise EvomergeError("this merge has no base model, so it has no task vectors")
            if "deltas" not in memo:
                stack = ws.get("deltas_in", (n, r1 - r0, geometry(shape)[1]))
                for i in range(n):
                    one_delta(i, out=stack[i])
                memo["deltas"] = stack
            return memo["deltas"]

        def delta(i: int) -> torch.Tensor:
            return deltas()[i] if "deltas" in memo else one_delta(i)

        def source(i: int) -> torch.Tensor:
            return sources()[i] if "src" in memo else reader.read(nb + i, r0, r1, "src1")

        def stored(k: int) -> torch.Tensor:
            view = reader.views[k]
            if isinstance(view, StitchedRows):
                parts = view.parts(r0, r1)
                return parts[0][0] if len(parts) == 1 else reader.read(k, r0, r1, f"stored{k}")
            return view[r0:r1]

        def all_chunks() -> Iterator[TensorInputs]:
            # a statistics pass (maybe inside another one) gets scratch of its own, so the caller's chunk stays
            nested = ws.prefixed("pre:")
            for c0, c1 in chunks:
                yield inputs(c0, c1, nested, "pre")

        return TensorInputs(name=name, models=models, shape=shape, rows=(r0, r1), get_base=base,
                            get_sources=sources, get_deltas=deltas, get_delta=delta, get_source=source,
                            get_stored=stored, chunks=all_chunks,
                            seed=seed, cache=tensor_cache, cache_room=cache_room, cache_has=cache_has, stats=stats,
                            workspace=ws,
                            pass_id=pass_id, rng_stream=rng_stream)

    cols = geometry(shape)[1]
    note_peak = getattr(write, "note_peak", None)
    for r0, r1 in chunks:
        x = inputs(r0, r1, workspace, "main")
        out = dest[r0:r1] if direct else workspace.get("out", (r1 - r0, cols))
        peak = method.merge_tensor(x, params, out)
        if peak is not None and note_peak is not None:
            note_peak(peak)
        write(r0, r1, out)


def _streamed(method, views: list, base_view, source_views: Sequence, dest: torch.Tensor) -> bool:
    """Whether ``method`` merges this tensor in one call with block-sized scratch only (``method.streams``),
    reading every view where it is stored (no stitched rows): one kernel call instead of one per chunk."""
    if not all(isinstance(v, torch.Tensor) for v in views):
        return False
    return method.streams(dest.device, base_view.dtype if base_view is not None else None,
                          [v.dtype for v in source_views])
