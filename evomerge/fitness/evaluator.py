"""Evaluate a live model on lm-eval tasks with per-item results, optionally on a subset of item ids.

Task objects are built once (``TaskManager``; only local folders are indexed when every task is found there).
A transformers model is wrapped with ``HFLM(pretrained=<nn.Module>)`` once per model object (an engine
that is an lm-eval model itself, such as the vLLM backend's, is used as it is), so a search that writes new
weights into the same module in place re-evaluates without any reload or disk write. Item ids are lm-eval's
document indices in the task's evaluation split.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from evomerge.errors import EvomergeError
from evomerge.fitness.results import ItemResults

log = logging.getLogger(__name__)


class LMEvalEvaluator:
    """lm-eval tasks by name (and local task folders in ``include_path``), built once.

    ``metric``: the per-item metric (one name for all tasks, or per task); default each task's first metric.
    ``p_gold`` (:data:`P_GOLD`), for ``loglikelihood`` and ``multiple_choice`` tasks, is computed here from the
    model's log-likelihoods: the probability of the gold continuation (``exp(ll)``), or of the gold choice
    among the choices (softmax). A graded score: near-equal models differ on it where 0/1 accuracy ties.
    ``cache_docs``: keep each task's evaluation docs in memory as a list (see ``_cache_eval_docs``).
    """

    def __init__(self, tasks: Sequence[str], include_path: str | Path | Sequence[str | Path] | None = None,
                 batch_size: int | str = 64, num_fewshot: Optional[int] = None,
                 gen_kwargs: Optional[Mapping[str, Any]] = None, apply_chat_template: bool | str = False,
                 fewshot_as_multiturn: bool = False, system_instruction: Optional[str] = None,
                 metric: str | Mapping[str, str] | None = None, fewshot_seed: int = 1234, keep_outputs: bool = True,
                 cache_docs: bool = True):
        from lm_eval.tasks import TaskManager

        if not tasks:
            raise EvomergeError("fitness needs at least one lm-eval task")
        self.task_names = list(dict.fromkeys(tasks))
        paths = [] if include_path is None else (
            [include_path] if isinstance(include_path, (str, Path)) else list(include_path))
        paths = [str(Path(p).expanduser()) for p in paths]
        for p in paths:
            if not Path(p).is_dir():
                raise EvomergeError(f"lm-eval include path is not a folder: {p}")
        tm = None
        if paths:  # index the local folders alone first: the default index takes seconds
            tm = TaskManager(include_path=paths, include_defaults=False)
            if not set(self.task_names) <= set(tm.all_tasks):
                tm = None
        if tm is None:
            tm = TaskManager(include_path=paths or None)
        unknown = [t for t in self.task_names if t not in tm.all_tasks]
        if unknown:
            raise EvomergeError(f"unknown lm-eval task(s): {', '.join(unknown)}"
                                + ("" if paths else " (local task folders go in include_path)"))
        loaded = tm.load(self.task_names)
        self._task_dict = loaded
        self.tasks = loaded["tasks"]
        for name, task in self.tasks.items():
            if gen_kwargs and task.get_config("output_type") == "generate_until":
                task.set_config(key="generation_kwargs", value=dict(gen_kwargs), update=True)
            if num_fewshot is not None and task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=num_fewshot)
            elif task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=fewshot_seed)
            if cache_docs:
                _cache_eval_docs(task)
        self.metric = {t: (metric.get(t) if isinstance(metric, Mapping) else metric)
                       or next(iter(self.tasks[t].aggregation())) for t in self.tasks}
        for t, m in self.metric.items():
            _check_metric(t, self.tasks[t], m)
        self.n_docs = {t: len(task.eval_docs) for t, task in self.tasks.items()}
        self.batch_size = batch_size
        self.apply_chat_template = apply_chat_template
        self.fewshot_as_multiturn = fewshot_as_multiturn
        self.system_instruction = system_instruction
        self.keep_outputs = keep_outputs
        self.fingerprint = {"tasks": sorted(self.tasks), "num_fewshot": num_fewshot,
                            "gen_kwargs": dict(gen_kwargs or {}), "apply_chat_template": apply_chat_template,
                            "system_instruction": system_instruction, "metric": self.metric,
                            "n_docs": self.n_docs}
        self._lm = None
        self._lm_key: Optional[tuple[int, int]] = None

    def all_items(self) -> dict[str, list[int]]:
        return {t: list(range(n)) for t, n in self.n_docs.items()}

    def _wrap(self, model, tokenizer):
        from lm_eval.api.model import LM
        from lm_eval.models.huggingface import HFLM

        if isinstance(model, LM):  # an engine that is an lm-eval model already (backend vllm)
            return model
        key = (id(model), id(tokenizer))
        if self._lm is None or self._lm_key != key:
            self._lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.batch_size)
            self._lm_key = key
            if os.environ.get("TQDM_DISABLE", "") not in ("", "0"):
                # lm-eval passes disable_tqdm=False explicitly, which overrides tqdm's own env switch
                for name in ("generate_until", "loglikelihood", "loglikelihood_rolling"):
                    setattr(self._lm, name, functools.partial(getattr(type(self._lm), name), self._lm,
                                                              disable_tqdm=True))
        return self._lm

    def check_items(self, items: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
        """Validate a subset: known tasks, non-empty, ids within each task's split."""
        out = {}
        for t, ids in items.items():
            if t not in self.tasks:
                raise EvomergeError(f"subset names task {t!r}, which this evaluator does not run "
                                    f"(tasks: {', '.join(self.tasks)})")
            ids = sorted({int(i) for i in ids})
            if not ids:
                raise EvomergeError(f"empty item subset for task {t!r}")
            if ids[0] < 0 or ids[-1] >= self.n_docs[t]:
                raise EvomergeError(f"item id {ids[-1] if ids[-1] >= self.n_docs[t] else ids[0]} out of range "
                                    f"for task {t!r} ({self.n_docs[t]} items)")
            out[t] = ids
        if not out:
            raise EvomergeError("empty item subset")
        return out

    def evaluate(self, model, tokenizer, items: Optional[Mapping[str, Sequence[int]]] = None) -> ItemResults:
        """Per-item results of ``model`` on every task, or only on ``items[task]`` (only those docs run)."""
        import lm_eval

        subset = self.check_items(items) if items is not None else None
        task_dict = self._task_dict
        if subset is not None and set(subset) != set(self.tasks):
            task_dict = {"tasks": {t: self.tasks[t] for t in subset}, "groups": {}, "group_map": {}}
        lm = self._wrap(model, tokenizer)
        was_training = getattr(model, "training", False)
        if was_training:
            model.eval()
        try:
            out = lm_eval.evaluate(lm=lm, task_dict=task_dict, samples=subset, bootstrap_iters=0, log_samples=True,
                                   apply_chat_template=self.apply_chat_template,
                                   fewshot_as_multiturn=self.fewshot_as_multiturn,
                                   system_instruction=self.system_instruction, verbosity="WARNING")
        finally:
            if was_training:
                model.train(True)
        scores: dict[str, dict[int, float]] = {}
        outputs: dict[str, dict[int, Any]] = {}
        for t in task_dict["tasks"]:
            samples = out["samples"][t]
            filt = "none" if any(s["filter"] == "none" for s in samples) else samples[0]["filter"]
            metric = self.metric[t]
            sc, op = {}, {}
            for s in samples:
                if s["filter"] != filt:
                    continue
                if metric == P_GOLD:
                    sc[int(s["doc_id"])] = p_gold(s["filtered_resps"], _gold_index(task_dict["tasks"][t], s))
                elif metric not in s:
                    raise EvomergeError(f"task {t!r} reports no per-item metric {metric!r} "
                                        f"(has: {', '.join(s['metrics'])})")
                else:
                    sc[int(s["doc_id"])] = float(s[metric])
                if self.keep_outputs:
                    resp = s["filtered_resps"]
                    op[int(s["doc_id"])] = resp[0] if len(resp) == 1 and isinstance(resp[0], str) else None
            scores[t] = sc
            if self.keep_outputs:
                outputs[t] = op
        return ItemResults.from_scores(scores, outputs if self.keep_outputs else None)


#: the derived per-item metric: probability of the gold answer under the model
P_GOLD = "p_gold"
_P_GOLD_TYPES = ("loglikelihood", "multiple_choice")


def _check_metric(task_name: str, task, metric: str) -> None:
    check_task_metric(task_name, task.get_config("output_type"), list(task.aggregation()), metric)


def check_task_metric(task_name: str, kind: str, known: Optional[Sequence[str]], metric: str) -> None:
    """A metric the task reports (``known``; None: not checked), or ``p_gold`` on a task of a kind that scores
    log-likelihoods; one-line error otherwise. Run on the built task, and in preflight on local task YAMLs."""
    if metric == P_GOLD:
        if kind not in _P_GOLD_TYPES:
            raise EvomergeError(f"metric {P_GOLD} needs a loglikelihood or multiple_choice task; "
                                f"{task_name!r} is {kind}")
        return
    if known is not None and metric not in known:
        raise EvomergeError(f"task {task_name!r} reports no metric {metric!r} (has: {', '.join(known)}; "
                            f"or {P_GOLD} on loglikelihood / multiple_choice tasks)")


def _gold_index(task, sample):
    """The gold choice(s) of a logged sample as indices (lm-eval logs the target as the task renders it)."""
    target = sample["target"]
    if task.get_config("output_type") != "multiple_choice":
        return target
    if isinstance(target, str):
        target = int(target) if target.strip().isdigit() else task.doc_to_choice(sample["doc"]).index(target)
    return target


def p_gold(resps, target) -> float:
    """Probability of the gold answer from one item's ``(loglikelihood, is_greedy)`` responses: ``exp(ll)``
    for a single continuation, else the gold choices' share of the softmax over all choices."""
    import math

    lls = [float(r[0]) for r in resps]
    if len(lls) == 1:
        return math.exp(lls[0])
    top = max(lls)
    weights = [math.exp(x - top) for x in lls]
    gold = target if isinstance(target, list) else [target]
    return sum(weights[int(g)] for g in gold) / sum(weights)


def _cache_eval_docs(task) -> None:
    """Hold a task's evaluation docs as a list of dicts, read once.

    lm-eval walks ``eval_docs`` (an Arrow dataset, row by row, ``process_docs`` applied again) twice per
    ``evaluate`` to find a subset's docs: 0.2 s per 1000-doc task here, most of a small subset's cost, and
    paid in every round of an adaptive estimator. The instance's split method returns the cached list
    (``eval_docs`` calls it), which lm-eval accepts wherever it takes a dataset."""
    docs = list(task.eval_docs)
    name = "test_docs" if task.has_test_docs() else "validation_docs"
    setattr(task, name, lambda: docs)
