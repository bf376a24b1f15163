"""``Fitness``: evaluator + item bank + anchors + estimator behind one call per candidate.

::

    fit = Fitness.from_config(cfg)                     # FitnessConfig or dict; builds lm-eval tasks once
    fit.prepare(model, tokenizer, merger, sources, base, run_dir)   # item bank, anchors, tuned estimator
    objectives, raw = fit.score(model, tokenizer)      # {task: estimate}, ItemResults of every item run
                                                       # (anchors, then the rounds an adaptive estimator asks)
    fit.score(model, tokenizer, split="test")          # full test split, {task: accuracy}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from pydantic import ValidationError

from evomerge.errors import ConfigError, EvomergeError
from evomerge.fitness.anchors import NEEDS_NO_RESPONSES, Anchors, ItemList, select_anchors
from evomerge.fitness.cache import EndpointCache
from evomerge.fitness.config import FitnessConfig
from evomerge.fitness.estimators import ESTIMATORS, Estimator
from evomerge.fitness.evaluator import LMEvalEvaluator
from evomerge.fitness.irt.bank import ItemBank
from evomerge.fitness.population import bank_from_results, evaluate_population, space_samples
from evomerge.fitness.results import ItemResults
from evomerge.fitness.task_index import include_paths as _include_paths
from evomerge.fsutil import file_lock

log = logging.getLogger(__name__)


class Fitness:
    def __init__(self, cfg: FitnessConfig, evaluator: LMEvalEvaluator,
                 test_evaluator: Optional[LMEvalEvaluator] = None):
        self.cfg = cfg
        self.evaluator = evaluator
        self.test_evaluator = test_evaluator
        self.bank: Optional[ItemBank] = None
        self.anchors: Optional[Anchors] = None
        self.estimator: Optional[Estimator] = None
        self.tuned: dict[str, Any] = {}
        self.last_fidelity: dict[str, Any] = {}

    @classmethod
    def from_config(cls, cfg: FitnessConfig | Mapping[str, Any]) -> "Fitness":
        if not isinstance(cfg, FitnessConfig):
            try:
                cfg = FitnessConfig.model_validate(dict(cfg))
            except ValidationError as exc:
                msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ConfigError(f"invalid fitness config: {msg}") from None
        paths = _include_paths(cfg.include_path)
        common = dict(include_path=paths or None, batch_size=cfg.batch_size, num_fewshot=cfg.num_fewshot,
                      gen_kwargs=cfg.gen_kwargs, apply_chat_template=cfg.apply_chat_template,
                      system_instruction=cfg.system_instruction, metric=cfg.metric)
        ev = LMEvalEvaluator(cfg.tasks, **common)
        test_ev = (LMEvalEvaluator(cfg.test_tasks, **{**common, "metric": cfg.test_metric_or_default})
                   if cfg.test_tasks else None)
        return cls(cfg, ev, test_ev)

    @property
    def items(self) -> Optional[dict[str, list[int]]]:
        """Item ids a candidate is evaluated on (None = the full split)."""
        return None if self.anchors is None else self.anchors.items

    def prepare(self, model=None, tokenizer=None, merger=None, sources: Sequence[str] = (),
                base: Optional[str] = None, run_dir: Optional[str | Path] = None,
                progress: Optional[Callable[[str], None]] = None, space=None) -> None:
        """Load or build the item bank, pick anchors, build and tune the estimator (no-op for ``full``).

        ``space``: the run's search space; part of the bank population is drawn from it."""
        est_cls = ESTIMATORS.get(self.cfg.estimator)
        if self.cfg.online_mode:  # the run loop fits the bank and sends it with each candidate (score(request=))
            return
        if est_cls.full_split:
            self.estimator = est_cls(None, None, **self.cfg.estimator_params)
            return
        params = {"seed": self.cfg.seed, "items_per_task": self.cfg.items_per_task, **self.cfg.estimator_params}
        first = est_cls.first_round(self.cfg.items_per_task, params)
        if self.cfg.bank is None and not est_cls.needs_bank and self.cfg.anchors in NEEDS_NO_RESPONSES:
            # nothing reads a bank's answers: no base / parent evaluation on the whole split
            items = self.evaluator.all_items()
            self.anchors = select_anchors(ItemList(list(items), items), self.cfg.anchors, first, self.cfg.seed)
            self.estimator = est_cls(None, self.anchors, **params)
            log.info("fitness ready: %s on %d %s anchors, no item bank", self.cfg.estimator,
                     self.anchors.n_items(), self.anchors.method)
            return
        kept = self.cfg.bank not in (None, "build")
        bank_dir = Path(self.cfg.bank) if kept else (Path(run_dir) / "item_bank" if run_dir else None)
        if kept and not (bank_dir / "bank.json").exists():
            raise EvomergeError(f"no item bank in {self.cfg.bank}")
        if bank_dir is None:
            self.bank = self._build_bank(model, tokenizer, merger, sources, base, progress, space)
        else:
            # several workers (Ray actors) start at once: one builds the bank, the others wait and load it
            with file_lock(bank_dir.parent / f".{bank_dir.name}.lock"):
                if (bank_dir / "bank.json").exists():
                    self.bank = ItemBank.load(bank_dir)
                else:
                    self.bank = self._build_bank(model, tokenizer, merger, sources, base, progress, space)
                    self.bank.save(bank_dir)
        self.bank.check_tasks(self.evaluator.task_names, self.evaluator.fingerprint)
        self.anchors = select_anchors(self.bank, self.cfg.anchors, first, self.cfg.seed)
        self.estimator = est_cls(self.bank, self.anchors, **params)
        self.tuned = self.estimator.tune()
        log.info("fitness ready: %s on %d anchors (%s), tuned %s", self.cfg.estimator, self.anchors.n_items(),
                 self.anchors.method, self.tuned)

    def _build_bank(self, model, tokenizer, merger, sources, base, progress, space) -> ItemBank:
        if merger is None or model is None:
            raise EvomergeError("building an item bank needs the merger, a live model and the sources")
        n_space = round(self.cfg.population * self.cfg.population_space_share) if space is not None else 0
        from_space = space_samples(space, n_space, self.cfg.seed) if n_space else []
        cache = EndpointCache() if self.cfg.cache_endpoints else None
        results, endpoints = evaluate_population(self.evaluator, merger, model, tokenizer, sources, base,
                                                 self.cfg.population - len(from_space), self.cfg.seed, cache,
                                                 progress, space_recipes=from_space)
        return bank_from_results(results, self.evaluator.task_names, endpoints, self.cfg.irt_dim,
                                 self.evaluator.fingerprint, self.cfg.seed)

    def score(self, model, tokenizer, split: str = "search", request=None) -> tuple[dict[str, float], ItemResults]:
        """Objective values (one per search task) and the raw item results they came from.

        ``request``: the online bank's ``FitnessRequest`` (the run loop sends one with each candidate); the
        answers' fidelity (items, std error, racing level) is then in ``self.last_fidelity``."""
        if split == "test":
            if self.test_evaluator is None:
                raise EvomergeError("no test_tasks configured for the test split")
            raw = self.test_evaluator.evaluate(model, tokenizer)
            return {t: raw.metrics[tt] for t, tt in zip(self.cfg.tasks, self.cfg.test_tasks)}, raw
        if split != "search":
            raise EvomergeError(f"unknown split {split!r} (search or test)")
        if request is not None:
            from evomerge.fitness.online.request import answer_request

            vals, answers, self.last_fidelity = answer_request(
                request, lambda items: self.evaluator.evaluate(model, tokenizer, items).scores,
                self.evaluator.all_items)
            if request.bank is None:  # seed rows: the bank records which task settings it was built with
                self.last_fidelity["fingerprint"] = self.evaluator.fingerprint
            return vals, ItemResults.from_scores(answers)
        if self.cfg.online_mode:
            raise EvomergeError("fitness with bank: online is scored by the run loop (it sends the bank with "
                                "each candidate); use bank: build or a bank folder to score outside a search")
        if self.estimator is None:
            raise EvomergeError("Fitness.prepare() must run before score()")
        raw = self.evaluator.evaluate(model, tokenizer, self.items)
        while (more := self.estimator.next_items(raw.scores)) is not None:  # adaptive estimators: more rounds
            raw = raw.merged(self.evaluator.evaluate(model, tokenizer, more))
        return self.estimator.estimate(raw.scores), raw

    def state(self) -> dict[str, Any]:
        """What the ledger / checkpoint keeps: estimator, anchors and tuned settings."""
        return {"estimator": self.cfg.estimator, "anchors": self.anchors.to_dict() if self.anchors else None,
                "tuned": self.tuned}
