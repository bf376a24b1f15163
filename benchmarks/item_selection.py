"""Can choosing the items make a small per-generation sample rank a generation like the whole split?

    python benchmarks/item_selection.py FULL_RUN [FULL_RUN ...]   # full-split searches (irt_search row full)
                                        [--k 10,20,30,50,100,200] [--draws 20]

A full-split search's ledger holds every candidate's answer to every search item, so a per-generation
sample (``resample: generation``) can be replayed on its candidates without evaluating anything. For each
generation after the first (the first is the warm start), the candidates are ranked by their mean accuracy
on a sample of k items per skill and compared with their ranking on the whole split:

- ``random``: k random items per skill (what ``resample: generation`` draws);
- ``carry``: up to k/2 items per skill on which the previous generation's candidates disagreed within their
  own sample (what a run could know), the rest random;
- ``oracle``: k items per skill on which the previous generation disagreed on the whole split (a run cannot
  know this without the whole split: the ceiling of choosing items by the previous generation).

After the first generation only about 30% of a random sample's items separate a generation's candidates
(the rest all of them answer alike), so choosing the separating items looks like a cheap gain. Printed per k and
strategy: the share of sampled items on which the generation's candidates do not all answer alike, the
Spearman correlation of the sample's ranking with the whole split's, and the top-4 regret
(whole-split mean of the true top 4 minus that of the sample's top 4, in points; CMA-ES recombines its best
4 of 8), averaged over generations, draws and runs. Generations are the run's ``optimizer.population``
consecutive ledger records.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import spearmanr


def load_answers(run: Path) -> tuple[dict[str, np.ndarray], int]:
    """Per task, the (candidates x items) answer matrix of a full-split search; and its population."""
    recs = [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines() if line.strip()]
    recs = [r for r in recs if r["status"] == "ok"]
    answers = {}
    for t in sorted(recs[0]["item_results"]):
        ids = sorted(recs[0]["item_results"][t], key=int)
        answers[t] = np.array([[r["item_results"][t][i] for i in ids] for r in recs], dtype=float)
    population = (yaml.safe_load((run / "config.yaml").read_text()).get("optimizer") or {}).get("population") or 8
    return answers, int(population)


def sample(strategy: str, k: int, answers: dict[str, np.ndarray], prev, rng) -> dict[str, np.ndarray]:
    """The item sample per task for one generation; ``prev`` = (previous rows, previous sample) or None."""
    out = {}
    for t, m in answers.items():
        fresh = rng.choice(m.shape[1], k, replace=False)
        if prev is None or strategy == "random":
            out[t] = fresh
            continue
        rows, items = prev
        if strategy == "carry":
            seen = m[rows][:, items[t]]
            split = items[t][seen.min(0) != seen.max(0)][: k // 2]
            carried = set(split.tolist())
            rest = [i for i in fresh if i not in carried][: k - len(split)]
            out[t] = np.concatenate([split, rest]).astype(int)
        else:  # oracle
            split = np.flatnonzero(m[rows].min(0) != m[rows].max(0))
            out[t] = rng.choice(split, min(k, len(split)), replace=False) if len(split) else fresh
    return out


def replay(answers: dict[str, np.ndarray], population: int, k: int, strategy: str, draws: int, rng
           ) -> tuple[float, float, float]:
    """(mean Spearman, mean top-4 regret in points, share of sampled items that separate the generation's
    candidates) over generations 1.. and draws."""
    tasks = list(answers)
    n = next(iter(answers.values())).shape[0]
    gens = [list(range(g, min(g + population, n))) for g in range(0, n, population)]
    whole = [np.mean([answers[t][g].mean(1) for t in tasks], axis=0) for g in gens]
    rhos, regrets, separating = [], [], []
    for _ in range(draws):
        prev = None
        for gi, rows in enumerate(gens):
            items = sample(strategy, k, answers, prev, rng)
            prev = (rows, items)
            if gi == 0 or len(rows) < 4:
                continue
            seen = [answers[t][rows][:, items[t]] for t in tasks]
            separating.append(np.mean([(m.min(0) != m.max(0)).mean() for m in seen]))
            v = np.mean([m.mean(1) for m in seen], axis=0)
            f = whole[gi]
            rhos.append(spearmanr(v, f)[0] if np.ptp(v) > 0 else 0.0)
            regrets.append(np.sort(f)[::-1][:4].mean() - f[np.argsort(-v, kind="stable")[:4]].mean())
    return float(np.nanmean(rhos)), 100 * float(np.mean(regrets)), float(np.mean(separating))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path, help="run dirs of full-split searches (population 8)")
    ap.add_argument("--k", default="10,20,30,50,100,200", help="items per skill, comma-separated")
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_args()
    for run in args.runs:
        if not (run / "ledger.jsonl").exists():
            raise SystemExit(f"error: {run} is not a run directory (no ledger.jsonl)")
    runs = [load_answers(r) for r in args.runs]
    rng = np.random.default_rng(0)
    print(f"{len(args.runs)} full-split searches, {args.draws} draws each")
    print("| items per skill | sample | items that separate the candidates | Spearman with the whole split |"
          " top-4 regret (points) |")
    print("|---:|---|---:|---:|---:|")
    for k in (int(x) for x in args.k.split(",")):
        for strategy in ("random", "carry", "oracle"):
            res = [replay(answers, population, k, strategy, args.draws, rng) for answers, population in runs]
            share, rho, regret = (np.mean([x[i] for x in res]) for i in (2, 0, 1))
            print(f"| {k} | {strategy} | {100 * share:.0f}% | {rho:.3f} | {regret:.2f} |", flush=True)


if __name__ == "__main__":
    main()
