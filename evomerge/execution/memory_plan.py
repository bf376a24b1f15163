"""Memory plan of a search worker, before any compute: what one worker holds on the host and on its device(s),
how many workers fit on this node (or the Ray cluster), and a one-line refusal for a job that cannot fit.

The arithmetic follows the worker's memory design (``evomerge.merge.memory``): sources are memory-mapped (page
cache, one copy per node, not counted per worker); the live model is the one full-size allocation (on the GPU,
or on the host for a CPU worker); the merge scratch is ``(4 n + 6)`` chunk buffers of ``CHUNK_ELEMS`` float32
(n = models merged) per merge thread (a CPU worker merges tensors side by side on its torch threads), plus two pinned staging chunks per source on the host for a GPU worker; the cache is
whatever its budget allows; evaluation activations are an estimate (logits of one batch of ``EVAL_TOKENS``
tokens in float32, plus the KV cache). ``benchmarks/worker_scale.py`` compares this to measured peaks. With
``fitness.backend: vllm`` the evaluation part is the engine's (``vllm_eval_bytes``: its KV cache as the engine
sizes it, and on the CPU its packed weights and reload; ``benchmarks/eval_speed.py`` compares).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from evomerge.errors import EvomergeError
from evomerge.models.hub import is_hub_name

EVAL_TOKENS = 512  # tokens per sequence assumed for the activation estimate
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class ModelFacts:
    """What the plan needs of one model: parameter count, stored bytes and dtype, vocabulary, shape."""

    params: int
    stored_bytes: int
    dtype: str
    vocab: int
    hidden: int
    layers: int
    kv_dim: int
    max_positions: int = 2048  # max_position_embeddings (the context an engine is started with by default)


@dataclass
class MemoryPlan:
    """Bytes for one worker: ``host_bytes`` (anonymous, per worker), ``device_bytes`` (per worker, over its GPUs),
    ``page_cache_bytes`` (sources, once per node)."""

    device: str
    model_bytes: int
    workspace_bytes: int
    cache_bytes: int
    eval_bytes: int
    host_bytes: int
    device_bytes: int
    page_cache_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def model_facts(ref: str, architecture: Optional[dict] = None) -> ModelFacts:
    """Facts of a model from its local folder (safetensors headers and config.json, no weights read), else from
    ``architecture`` (config.json fields: the parameter count is that of the model transformers builds from
    them, on the meta device)."""
    from evomerge.zoo.settings import planned_config, unbuilt_zoo

    if (variant := unbuilt_zoo(ref)) is not None:  # planned from its settings: a plan never builds a zoo
        architecture = planned_config(variant)
    folder = _local_folder(ref, required=not (architecture and is_hub_name(ref)))  # None for an unbuilt zoo
    if folder is not None:
        from evomerge.models.safetensors_io import open_checkpoint

        ck = open_checkpoint(ref)
        names = ck.names()
        params = sum(math.prod(ck.shape(n)) for n in names)
        dtype = ck.dtype_name(names[0])
        return _facts(ck.config, params, ck.total_bytes(), dtype)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = dict(architecture)
    model_type = cfg_dict.pop("model_type", None)
    if model_type is None:
        raise EvomergeError("architecture: needs model_type (llama, qwen2, mistral, ...)")
    dtype = str(cfg_dict.pop("dtype", "bfloat16"))
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        import difflib

        near = difflib.get_close_matches(str(model_type), list(CONFIG_MAPPING.keys()), n=3)
        raise EvomergeError(f"architecture: unknown model_type {model_type!r}"
                            + (f" (did you mean: {', '.join(near)}?)" if near else " (e.g. llama, qwen2, mistral)"))
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "head_dim"):
        value = cfg_dict.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise EvomergeError(f"architecture: {key} must be a positive whole number, got {value!r}")
    try:
        cfg = AutoConfig.for_model(model_type, **cfg_dict)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except Exception as exc:  # a config transformers cannot build a model from: its reason, in one line
        raise EvomergeError(f"architecture: transformers cannot build a {model_type} model from these fields: "
                            f"{' '.join(str(exc).split())[:300]}") from None
    params = sum(p.numel() for p in model.parameters())
    return _facts(cfg.to_dict(), params, params * DTYPE_BYTES.get(dtype, 2), dtype)


def _facts(cfg: dict, params: int, stored: int, dtype: str) -> ModelFacts:
    text = cfg.get("text_config") or cfg
    hidden = int(text.get("hidden_size") or text.get("n_embd") or 0)
    heads = int(text.get("num_attention_heads") or text.get("n_head") or 1)
    kv = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or (hidden // max(heads, 1)))
    layers = int(text.get("num_hidden_layers") or text.get("n_layer") or 0)
    return ModelFacts(params=params, stored_bytes=stored, dtype=dtype, vocab=int(text.get("vocab_size") or 0),
                      hidden=hidden, layers=layers, kv_dim=kv * head_dim,
                      max_positions=int(text.get("max_position_embeddings") or 2048))


def worker_threads(ray_opts=None) -> int:
    """The torch threads a CPU worker runs with, and so its merge threads: a Ray actor's ``torch_threads`` (else
    its CPUs); in-process, torch's default (this machine's cores at most)."""
    if ray_opts is not None:
        return max(1, ray_opts.torch_threads or math.ceil(ray_opts.num_cpus))
    return max(1, os.cpu_count() or 1)


def worker_memory(recipe=None, device: str = "cpu", cache_budget=0, live_dtype: Optional[str] = None,
                  batch_size: int = 0, facts: Optional[ModelFacts] = None, n_models: Optional[int] = None,
                  n_sources: Optional[int] = None, backend: str = "hf", vllm: Any = None,
                  gpu_bytes: int = 0, merge_threads: int = 1) -> MemoryPlan:
    """The plan of one worker that merges ``recipe`` (or a model described by ``facts`` with ``n_models``
    merged of ``n_sources``) on ``device`` ("cpu" or "cuda"), and evaluates batches of ``batch_size`` on the
    ``backend`` engine (``vllm``: its ``VLLMOptions`` or their mapping, ``gpu_bytes`` for a GPU memory share).
    ``merge_threads``: CPU threads merging tensors side by side, each with its own scratch."""
    from evomerge.merge.sizes import CHUNK_ELEMS, cache_budget_bytes

    if recipe is not None:
        facts = facts or model_facts(recipe.base or recipe.models[0].model)
        n_sources = len(recipe.sources())
        n_models = len([m for m in recipe.models if m.model != recipe.base])
    dtype = live_dtype if live_dtype not in (None, "auto") else facts.dtype
    width = DTYPE_BYTES.get(dtype, 4)
    model_bytes = facts.params * width
    on_gpu = device.startswith("cuda")
    workspace = (4 * n_models + 6) * CHUNK_ELEMS * 4 * (1 if on_gpu else max(1, merge_threads))
    cache = cache_budget_bytes(cache_budget, "cpu")
    if cache is None:  # unlimited: task vectors of every source in float32, the largest thing it can hold
        cache = n_models * facts.params * 4
    if backend == "vllm":
        eval_bytes = vllm_eval_bytes(facts, width, batch_size, vllm or {}, on_gpu, gpu_bytes)
    else:
        tokens = batch_size * EVAL_TOKENS
        eval_bytes = tokens * facts.vocab * 4 + tokens * facts.layers * 2 * facts.kv_dim * width
    staging = 2 * CHUNK_ELEMS * 4 if on_gpu else 0
    device_bytes = model_bytes + workspace + cache + eval_bytes if on_gpu else 0
    host_bytes = staging if on_gpu else model_bytes + workspace + cache + eval_bytes
    return MemoryPlan(device="cuda" if on_gpu else "cpu", model_bytes=model_bytes, workspace_bytes=workspace,
                      cache_bytes=cache, eval_bytes=eval_bytes, host_bytes=host_bytes, device_bytes=device_bytes,
                      page_cache_bytes=n_sources * facts.stored_bytes)


#: vLLM's CPU build keeps its linear layers prepacked for oneDNN beside the loaded weights, and its in-place
#: reload holds part of the model in checkpoint form while it repacks: engine memory at rest and the reload's
#: extra, in model weights, measured with vLLM 0.32 on a 261M bf16 model (benchmarks/eval_speed.py re-measures
#: them against this plan). On a GPU nothing is repacked; the reload's extra there is taken as two of the
#: largest tensor (the streamed one and its materialized parameter), not measured.
VLLM_CPU_REST_WEIGHTS = 2.3
VLLM_CPU_RELOAD_WEIGHTS = 0.7


def vllm_eval_bytes(facts: ModelFacts, width: int, batch_size: int, vllm: Any, on_gpu: bool,
                    gpu_bytes: int = 0) -> int:
    """A vLLM engine's memory beside one copy of its weights: the KV cache it is given, the weights' second form
    at rest (CPU), and the larger of two transients: the in-place reload's, or float32 logits of prompt
    log-likelihoods (a few full-length requests: logits, log-softmax, gather). With a GPU memory share instead
    of a KV cache size: that share of ``gpu_bytes``, less the weights."""
    from evomerge.engines.vllm_options import VLLMOptions, kv_cache_bytes

    opts = VLLMOptions.model_validate(vllm)
    weights = facts.params * width
    max_len = opts.max_model_len or facts.max_positions
    kv = kv_cache_bytes(opts, facts.layers, facts.kv_dim, width, max_len, opts.max_num_seqs or batch_size or 1)
    if kv is None:
        return max(0, int(opts.gpu_memory_utilization * gpu_bytes) - weights)
    if on_gpu:
        rest, reload = 0, 2 * facts.vocab * facts.hidden * width
    else:
        rest = int((VLLM_CPU_REST_WEIGHTS - 1) * weights)
        reload = int(VLLM_CPU_RELOAD_WEIGHTS * weights)
    return kv + rest + max(reload, 4 * max_len * facts.vocab * 4)


@dataclass
class NodePlan:
    worker: MemoryPlan
    gpus_per_worker: int
    workers: int
    host_bytes: int
    gpu_bytes: int
    n_gpus: int
    lines: list[str]


def _local_folder(ref: str, required: bool) -> Optional[Path]:
    """The folder holding ``ref``'s config and headers (a hub model's from the cache, or fetched without its
    weights); None when it cannot be had and not ``required`` (then ``architecture:`` describes the model)."""
    from evomerge.models.paths import resolve_model
    from evomerge.zoo.settings import unbuilt_zoo

    if unbuilt_zoo(ref) is not None:
        return None
    try:
        return Path(resolve_model(ref))
    except EvomergeError as exc:
        if required:
            raise EvomergeError(f"{exc}; or, to plan without the model, give its config.json fields under "
                                "'architecture:' in the job config") from None
        return None


def union_vocab_facts(facts: ModelFacts, lead: str, sources: list[str]) -> ModelFacts:
    """``facts`` of the lead as the live model is under ``vocab: union``: as many token rows as the largest
    source (the extra rows of every token-indexed tensor counted). Unchanged unless every source is a local
    folder (an ``architecture:`` plan has only the lead)."""
    import dataclasses

    from evomerge.models.safetensors_io import open_checkpoint
    from evomerge.models.vocab import vocab_tensors

    refs = list(dict.fromkeys([lead] + list(sources)))
    if not all(_local_folder(r, required=not is_hub_name(r)) for r in refs):
        return facts
    cks = [open_checkpoint(r) for r in refs]
    names, rows = vocab_tensors(cks)
    if not names or max(rows) <= rows[0]:
        return facts
    extra = sum((max(rows) - rows[0]) * math.prod(cks[0].shape(n)[1:]) for n in names)
    return dataclasses.replace(facts, params=facts.params + extra, vocab=max(rows))


def plan_job(cfg, host_bytes: Optional[int] = None, n_gpus: Optional[int] = None,
             gpu_bytes: Optional[int] = None, vocab: Optional[str] = None) -> Optional[NodePlan]:
    """Plan a ``RunConfig`` on this node (or the numbers given); raise EvomergeError when it cannot fit. None for
    a fitness kind that loads no models (nothing to plan). ``vocab``: the space's vocabulary rule (default: read
    from the config's space definition)."""
    from evomerge.models.hub import headers_only

    with headers_only():  # hub models: headers and configs only, never their weights
        return _plan_job(cfg, host_bytes, n_gpus, gpu_bytes, vocab)


def _plan_job(cfg, host_bytes: Optional[int], n_gpus: Optional[int], gpu_bytes: Optional[int],
              vocab: Optional[str]) -> Optional[NodePlan]:
    from evomerge.execution.ray_cluster import parse_options
    from evomerge.fitness.config import FitnessConfig
    from evomerge.machine import host_available_bytes

    fit = cfg.fitness
    if not isinstance(fit, FitnessConfig):  # a fitness kind that loads no models
        return None
    device = fit.device
    ray_opts = parse_options(cfg.executor.options) if cfg.executor.name == "ray" else None
    want_gpus = ray_opts.num_gpus if ray_opts else 0
    # numbers given for the node: a plan for another machine, whose disk this one cannot speak for
    for_another_node = any(x is not None for x in (host_bytes, n_gpus, gpu_bytes))
    if n_gpus is None or gpu_bytes is None:
        detected = _gpus()
        n_gpus = detected[0] if n_gpus is None else n_gpus
        gpu_bytes = detected[1] if gpu_bytes is None else gpu_bytes
    host_bytes = host_bytes if host_bytes is not None else host_available_bytes()
    on_gpu = device.startswith("cuda") or (device == "auto" and (want_gpus or n_gpus))
    sources = list(dict.fromkeys(([cfg.base] if cfg.base else []) + list(cfg.models)))
    arch = getattr(cfg, "architecture", None)
    facts = model_facts(cfg.base or cfg.models[0], arch)
    for ref in sources:  # every source can be had (or, a hub model with architecture:, is planned from that)
        _local_folder(ref, required=not (arch and is_hub_name(ref)))
    if vocab is None:
        from evomerge.spaces.build import load_space_config

        vocab = load_space_config(cfg.space).get("vocab") or "base"
    if vocab == "union":
        facts = union_vocab_facts(facts, cfg.base or cfg.models[0], sources)
    budget = fit.cache_budget
    if budget == "auto":  # as the merger resolves it: a quarter of the free memory, at most half a model
        from evomerge.merge.sizes import AUTO_CACHE_FLOOR, AUTO_CACHE_SHARE

        free = (gpu_bytes or 0) if on_gpu else host_bytes
        budget = int(min(free * AUTO_CACHE_SHARE, max(facts.stored_bytes // 2, AUTO_CACHE_FLOOR)))
    backend = fit.backend
    w = worker_memory(device="cuda" if on_gpu else "cpu", cache_budget=budget, live_dtype=fit.dtype,
                      batch_size=fit.batch_size, facts=facts,
                      n_models=len([m for m in cfg.models if m != cfg.base]), n_sources=len(sources),
                      backend=backend, vllm=fit.vllm, gpu_bytes=gpu_bytes or 0,
                      merge_threads=worker_threads(ray_opts))
    evaluation = "vLLM engine (KV cache, packed weights, reload)" if backend == "vllm" else "activations"
    gb = 1e9
    lines = [f"sources: {len(sources)} x {facts.stored_bytes / gb:.2f} GB ({facts.params / 1e9:.2f}B params, "
             f"{facts.dtype}) = {w.page_cache_bytes / gb:.1f} GB page cache per node, shared by its workers"]
    download_lines, no_room = _hub_downloads(sources, facts.stored_bytes)
    lines += download_lines
    if on_gpu:
        per_gpu = gpu_bytes or 0
        need = max(1, math.ceil(w.device_bytes / per_gpu)) if per_gpu else max(1, int(math.ceil(want_gpus or 1)))
        workers = (n_gpus // need) if n_gpus else 0
        lines.append(f"per worker on its GPU(s): live model {w.model_bytes / gb:.1f} GB + merge scratch "
                     f"{w.workspace_bytes / gb:.2f} GB + cache {w.cache_bytes / gb:.1f} GB + {evaluation} "
                     f"~{w.eval_bytes / gb:.1f} GB = {w.device_bytes / gb:.1f} GB -> {need} GPU(s) of "
                     f"{per_gpu / gb:.0f} GB")
        lines.append(f"per worker on the host: {w.host_bytes / gb:.3f} GB (pinned staging buffers)")
    else:
        need = 0
        workers = int(max(0, host_bytes - w.page_cache_bytes) // max(w.host_bytes, 1))
        lines.append(f"per worker on the host: live model {w.model_bytes / gb:.2f} GB + merge scratch "
                     f"{w.workspace_bytes / gb:.2f} GB + cache {w.cache_bytes / gb:.2f} GB + {evaluation} "
                     f"~{w.eval_bytes / gb:.2f} GB = {w.host_bytes / gb:.2f} GB")
    plan = NodePlan(worker=w, gpus_per_worker=need, workers=workers, host_bytes=host_bytes, gpu_bytes=gpu_bytes or 0,
                    n_gpus=n_gpus, lines=lines)
    if on_gpu and not n_gpus and not (ray_opts and ray_opts.address):
        asked = f"device: {device}" if device.startswith("cuda") else f"num_gpus: {want_gpus:g}"
        raise EvomergeError(f"the job runs on GPUs ({asked}) and this node shows none: run it on a GPU node, plan "
                            "for one with --gpus N --gpu-memory SIZE, or use device: cpu and num_gpus: 0")
    if on_gpu and n_gpus and gpu_bytes and need > n_gpus:
        raise EvomergeError(f"one worker needs {w.device_bytes / gb:.1f} GB of GPU memory ({need} GPUs of "
                            f"{gpu_bytes / gb:.0f} GB); this node has {n_gpus}")
    if not on_gpu and workers < 1:
        raise EvomergeError(f"one worker needs {w.host_bytes / gb:.2f} GB of host memory beside "
                            f"{w.page_cache_bytes / gb:.2f} GB of sources; {host_bytes / gb:.2f} GB are available")
    if no_room and not for_another_node:
        raise EvomergeError(no_room)
    return plan


def _hub_downloads(sources: list[str], model_bytes: int) -> tuple[list[str], Optional[str]]:
    """The hub weights a run still has to fetch into the Hugging Face cache on this node (a line), and the refusal
    when this node's cache disk cannot hold them (None when it can)."""
    import shutil

    from evomerge.models.hub import hub_cache, missing_weight_bytes

    fetch = sum(missing_weight_bytes(r, model_bytes) for r in sources)
    if not fetch:
        return [], None
    where = hub_cache()
    probe = next((p for p in [where, *where.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    line = (f"hub downloads: {fetch / 1e9:.1f} GB of weights not yet in {where} ({free / 1e9:.0f} GB free here), "
            "fetched on first use on each node")
    if free >= fetch:
        return [line], None
    return [line], (f"the hub models still to fetch need {fetch / 1e9:.1f} GB in {where}, which has "
                    f"{free / 1e9:.1f} GB free: free space, or set HF_HUB_CACHE to a larger disk")


def _gpus() -> tuple[int, int]:
    """(GPU count, memory of the smallest) visible to this process, (0, 0) without CUDA."""
    from evomerge.machine import visible_gpus

    if not visible_gpus():  # no GPU to see: no need to import torch to be told so
        return 0, 0
    try:
        import torch

        if not torch.cuda.is_available():
            return 0, 0
        n = torch.cuda.device_count()
        return n, min(torch.cuda.get_device_properties(i).total_memory for i in range(n))
    except Exception:  # a broken driver is "no GPU" for planning
        return 0, 0
