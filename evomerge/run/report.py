"""Read a run directory back: candidates, best, Pareto front, hypervolume per generation, test scores."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from evomerge.run.checkpoint import load_latest_checkpoint
from evomerge.run.config import RunConfig
from evomerge.run.ledger import Ledger
from evomerge.run.pareto import hypervolume, pareto_front
from evomerge.run.run_dir import load_run_dir_config

log = logging.getLogger(__name__)
#: ledger origin of the optimizer's recommendation; the finalists' scores (``run/finalists.py``) in the run dir
RECOMMENDED = "recommended"
FINALISTS_FILE = "finalists.json"


@dataclass
class RunReport:
    run_dir: Path
    config: RunConfig
    records: list[dict[str, Any]]
    generations_done: int

    @classmethod
    def load(cls, run_dir: str | Path) -> "RunReport":
        run_dir = Path(run_dir)
        cfg = load_run_dir_config(run_dir)
        led_path = run_dir / "ledger.jsonl"
        records = Ledger(led_path).records() if led_path.exists() else []
        ck = load_latest_checkpoint(run_dir / "checkpoints")
        return cls(run_dir, cfg, records, ck[1]["gen"] if ck else 0)

    @property
    def objectives(self) -> list[str]:
        return [o.metric for o in self.config.objectives]

    @property
    def directions(self) -> list[str]:
        return self.config.directions

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["status"] == "ok"]

    def ranked(self) -> list[dict[str, Any]]:
        """Successful candidates, best first by the first objective."""
        sign = -1.0 if self.directions[0] == "maximize" else 1.0
        return sorted(self.ok(), key=lambda r: (sign * r["values"][0], r["eval_id"]))

    def best(self) -> Optional[dict[str, Any]]:
        """The winner: the best finalist re-scored on fresh items (``run/finalists.py``; its record gets a
        ``finalist`` entry), else the candidate with the best told value."""
        ranked = self.ranked()
        if not ranked:
            return None
        fin = self.finalists(ranked)
        if fin:
            sign = 1.0 if self.directions[0] == "maximize" else -1.0
            eid = max(fin, key=lambda e: (sign * fin[e]["value"], -e))
            return {**next(r for r in ranked if r["eval_id"] == eid), "finalist": fin[eid]}
        return ranked[0]

    def finalist_candidates(self, top: int, ranked: Optional[list[dict[str, Any]]] = None) -> list[dict[str, Any]]:
        """What the finalists step scores: the ``top`` best told values, then the optimizer's recommendation (the
        ledger's last record when it is one, ``run/recommend.py``) if it is not among them."""

        out = list((self.ranked() if ranked is None else ranked)[:top])
        last = self.records[-1] if self.records else None
        if last is not None and is_recommendation(last) and last["status"] == "ok" and last not in out:
            out.append(last)
        return out

    def finalists(self, ranked: Optional[list[dict[str, Any]]] = None) -> dict[int, dict[str, Any]]:
        """Scored finalists by eval_id ({} when none, or when the ledger's top has changed since);
        ``ranked``: ``self.ranked()`` if the caller has it already."""

        data = load_finalists(self.run_dir)
        if data is None:
            return {}
        ids = data["settings"].get("candidates", [])
        top = data["settings"].get("top", len(ids))
        if not isinstance(top, int) or ids != [r["eval_id"] for r in self.finalist_candidates(top, ranked)]:
            return {}
        return {int(k): v for k, v in data["finalists"].items() if v["status"] == "ok"}

    def items_evaluated(self) -> dict[str, int]:
        """Items answered by the candidates (every ledger record) and by the scored finalists' fresh items
        (an item bank's own evaluations are not in the ledger: count them apart)."""
        cands = sum(len(v) for r in self.records for v in (r.get("item_results") or {}).values())
        fin = sum(sum(f["fresh_items"].values()) for f in self.finalists().values())
        return {"candidates": cands, "finalists": fin}

    def front(self) -> list[dict[str, Any]]:
        """The non-dominated successful candidates (duplicate recipes kept once)."""
        ok = self.ok()
        idx = pareto_front([r["values"] for r in ok], self.directions) if ok else []
        seen, out = set(), []
        for i in idx:
            key = json.dumps(ok[i]["point"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(ok[i])
        return out

    def reference(self) -> list[float]:
        """Hypervolume reference: the configured one, else the worst successful value of each objective."""
        ok = np.array([r["values"] for r in self.ok()], dtype=float).reshape(-1, len(self.objectives))
        ref = []
        for j, o in enumerate(self.config.objectives):
            if o.reference is not None:
                ref.append(o.reference)
            elif len(ok):
                worst = ok[:, j].min() if o.direction == "maximize" else ok[:, j].max()
                span = float(np.ptp(ok[:, j])) or 1.0
                ref.append(float(worst - 0.01 * span if o.direction == "maximize" else worst + 0.01 * span))
            else:
                ref.append(0.0)
        return ref

    def per_generation(self) -> list[dict[str, Any]]:
        """Per generation: candidates, failures, best-so-far of each objective, hypervolume so far."""
        ref = self.reference()
        out, seen = [], []
        gens = sorted({r["gen"] for r in self.records})
        best = [None] * len(self.objectives)
        for g in gens:
            recs = [r for r in self.records if r["gen"] == g]
            oks = [r for r in recs if r["status"] == "ok"]
            seen += [r["values"] for r in oks]
            for j, d in enumerate(self.directions):
                vals = [v[j] for v in seen]
                if vals:
                    best[j] = max(vals) if d == "maximize" else min(vals)
            out.append({"gen": g, "n": len(recs), "failed": len(recs) - len(oks), "best": list(best),
                        "hypervolume": hypervolume(seen, self.directions, ref) if seen else 0.0})
        return out

    def test_scores(self) -> dict[int, dict[str, float]]:
        """Test-split metrics of re-evaluated candidates (by eval_id), from ``pareto/test_scores.json``."""
        path = self.run_dir / "pareto" / "test_scores.json"
        if not path.exists():
            return {}
        return {int(k): v for k, v in json.loads(path.read_text()).items()}


def is_recommendation(record: dict[str, Any]) -> bool:
    """The ledger record of the optimizer's recommendation (``run/recommend.py``)."""
    return record.get("origin") == RECOMMENDED


def load_finalists(run_dir: str | Path) -> Optional[dict[str, Any]]:
    """``RUN_DIR/finalists.json`` if present and well-formed (else None: the step is redone on resume)."""
    path = Path(run_dir) / FINALISTS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        rows = data["finalists"]
        for row in rows.values():
            if row["status"] == "ok" and not isinstance(row["value"], (int, float)):
                raise TypeError("value")
        return data if isinstance(data["settings"], dict) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
