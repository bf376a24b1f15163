"""lm-eval's requests on a live vLLM engine (``VLLMLM``), and the worker's live model on it (``LiveVLLM``: also
the merger's weight sink, each candidate streamed into vLLM's in-place reload).

Items are tokenized by the worker's Hugging Face tokenizer exactly as lm-eval's HFLM tokenizes them, and the
engine is given token ids, so both backends see the same tokens. Every request of a call goes to the engine at
once (its scheduler batches them); generation is greedy unless the task samples. Only a small, long-stable
part of each library is used: ``TemplateLM`` and ``Instance.args`` of lm-eval, ``LLM.generate`` with
``SamplingParams`` of vLLM.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Iterable, Optional

from lm_eval.api.model import TemplateLM

log = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HFLM default


def stop_sequences(until, eos: Optional[str]) -> list[str]:
    """A task's ``until`` as a list, with the end-of-text string added (as HFLM does)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    if eos and eos not in stops:
        stops.append(eos)
    return stops


def cut_at_stops(text: str, stops: list[str]) -> str:
    for s in stops:
        if s:
            text = text.split(s)[0]
    return text


class VLLMLM(TemplateLM):
    """An lm-eval model over ``llm`` (a ``vllm.LLM``) with ``tokenizer`` (a transformers tokenizer).

    ``max_length``: the engine's ``max_model_len``. The engine may be replaced (``llm`` is reassigned on a
    restart); nothing else here holds engine state."""

    def __init__(self, llm, tokenizer, max_length: int, seed: int = 1234):
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self._max_length = int(max_length)
        self.seed = seed
        self.add_bos_token: Optional[bool] = None  # as HFLM: the tokenizer's own default

    # ---- tokenization (HFLM's rules) ------------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "tokenizer").replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> list[int]:
        kw = {}
        if add_special_tokens is not None:
            kw["add_special_tokens"] = add_special_tokens
        elif self.add_bos_token is not None:
            kw["add_special_tokens"] = self.add_bos_token
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            kw["add_special_tokens"] = False  # the string already starts with BOS
        return self.tokenizer.encode(string, **kw)

    # ---- engine calls ----------------------------------------------------------------------------------------

    def _run(self, prompts: list[list[int]], params: list) -> list:
        if not prompts:
            return []
        return self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from vllm import SamplingParams

        eos = self.tokenizer.decode(self.eot_token_id) if self.eot_token_id is not None else None
        prompts, params, stops = [], [], []
        for req in requests:
            context, gen_kwargs = req.args
            kw = dict(gen_kwargs or {})
            until = stop_sequences(kw.pop("until", None), eos)
            max_gen = int(next((kw.pop(k) for k in ("max_gen_toks", "max_new_tokens", "max_tokens")
                                if k in kw), DEFAULT_MAX_GEN_TOKS))
            sample = bool(kw.pop("do_sample", False))
            temperature = float(kw.pop("temperature", 0.0)) if sample else 0.0
            if max_gen >= self.max_length:
                raise ValueError(f"max_gen_toks {max_gen} must be below the engine's max_model_len "
                                 f"{self.max_length}")
            toks = self.tok_encode(context)[-(self.max_length - max_gen):]  # left-truncated, as HFLM does
            extra = {k: kw[k] for k in ("top_p", "top_k", "min_p", "repetition_penalty") if k in kw}
            prompts.append(toks)
            params.append(SamplingParams(max_tokens=max_gen, stop=until, temperature=temperature,
                                         seed=self.seed if temperature > 0 else None, **extra))
            stops.append(until)
        outs = self._run(prompts, params)
        texts = [cut_at_stops(o.outputs[0].text, s) for o, s in zip(outs, stops)]
        for req, text in zip(requests, texts):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return texts

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        from vllm import SamplingParams

        limit = self.max_length - 1  # the engine generates at least one token after the prompt
        prompts, ctxlens = [], []
        for _, context_enc, continuation_enc in requests:
            whole = (context_enc + continuation_enc)[-limit:]
            prompts.append(whole)
            ctxlens.append(len(whole) - len(continuation_enc))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1, detokenize=False)
        outs = self._run(prompts, [params] * len(prompts))
        res = []
        for (key, _, _), toks, ctxlen, out in zip(requests, prompts, ctxlens, outs):
            answer = _continuation_logprob(toks, ctxlen, out.prompt_logprobs)
            res.append(answer)
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return res

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood over lm-eval's rolling windows of ``max_length`` tokens."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owners = [], []
        for i, req in enumerate(requests):
            toks = self.tok_encode(req.args[0], add_special_tokens=False)
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=toks, prefix_token=self.prefix_token_id, max_seq_len=self.max_length - 1,
                    context_len=1)):
                windows.append((None, ctx, cont))
                owners.append(i)
        totals = [0.0] * len(requests)
        for owner, (ll, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[owner] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals


def _continuation_logprob(tokens: list[int], ctxlen: int, prompt_logprobs) -> tuple[float, bool]:
    """Sum of the continuation's log-probabilities and whether each of its tokens was the greedy one."""
    total, greedy = 0.0, True
    for tok, lp in zip(tokens[ctxlen:], prompt_logprobs[ctxlen:]):
        values = {t: float(getattr(v, "logprob", v)) for t, v in lp.items()}
        total += values[tok]
        if max(values, key=values.get) != tok:
            greedy = False
    return total, greedy


def _reload(worker, weights: Iterable) -> None:
    """Runs in the engine's worker: vLLM's documented in-place reload from an iterator of named tensors."""
    worker.model_runner.reload_weights(weights_iterator=weights)


class LiveVLLM(VLLMLM):
    """The worker's live model on vLLM: an lm-eval model that is also the merger's weight sink."""

    def __init__(self, start, tokenizer, max_length: int, dtype, seed: int):
        self._start = start
        super().__init__(start(), tokenizer, max_length, seed=seed)
        self.dtype = dtype  # of the tensors the merger streams in
        self.last_load: dict[str, Any] = {}

    def load_weights(self, named_tensors: Iterable) -> None:
        """Reload the engine's weights in place from ``(checkpoint name, tensor)`` pairs; ``last_load`` gets the
        parameter count and the seconds spent producing the tensors (``merge_s``) and in vLLM's reload
        (``reload_s``)."""
        stats = {"params": 0, "merge_s": 0.0}

        def stream():
            it = iter(named_tensors)
            while True:
                t0 = time.perf_counter()
                try:
                    name, tensor = next(it)
                except StopIteration:
                    return
                stats["params"] += tensor.numel()
                stats["merge_s"] += time.perf_counter() - t0
                yield name, tensor

        t0 = time.perf_counter()
        self.llm.collective_rpc(_reload, args=(stream(),))
        self.llm.reset_prefix_cache()
        stats["reload_s"] = time.perf_counter() - t0 - stats["merge_s"]
        self.last_load = stats

    def restart(self) -> None:
        self.close()
        gc.collect()
        self.llm = self._start()

    def close(self) -> None:
        if self.llm is not None:
            shutdown(self.llm)
            self.llm = None


def shutdown(llm) -> None:
    """Stop an engine (best effort: a crashed one may already be gone)."""
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception as exc:  # noqa: BLE001 - nothing more to do with a dead engine
        log.debug("engine shutdown: %s", exc)
