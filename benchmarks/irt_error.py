"""How well each estimator predicts full search-split accuracy from a few items, on the full zoo.

Fits an item bank on a population (base, parents, P random merges), then evaluates C *other* random merges on
the full search split and compares their true accuracy with every estimator fed only the anchor answers (for
``adaptive``: the anchors, then the items it asks for round by round), at 10/20/50/100 items per task: MAE, max
error, Spearman rank correlation (mean over tasks) and cost ratio (full items / items evaluated). Target:
>= 50x fewer items with MAE <= 0.02 and Spearman >= 0.9.

Top of the population (target |bias| <= 0.01): random held-out merges are not where an optimizer looks.
``--top-of FULL_RUN`` takes the top ``--top`` candidates of a real full-split search (their full-split answers
are in its ledger) and prints each estimator's bias on them (mean estimate - full accuracy, 20 items per
task); the bank is ``--bank DIR`` (a kept bank, e.g. a search's ``item_bank``) or the population's.
``--runs RUN ...`` does the same for searches that ran with reduced fitness (online bank, racing, ...): their
top candidates' told values against the full split (those are evaluated once, cached in the run dir).

    python benchmarks/irt_error.py [--population 100] [--candidates 50] [--variant full] [--out results.json]
                                   [--reuse results.json]   # evaluate only the members it lacks
    python benchmarks/irt_error.py --bank RUN/item_bank --top-of FULL_RUN [--runs RUN ...] [--top 10]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from evomerge.fitness import ESTIMATORS, LMEvalEvaluator, select_anchors
from evomerge.fitness.irt.bank import ItemBank
from evomerge.fitness.cache import EndpointCache
from evomerge.fitness.population import bank_from_results, evaluate_merges, evaluate_population, random_recipes
from evomerge.fitness.results import ItemResults
from evomerge.resources import shipped_dir
from top_bias import full_split_results, summarise, told_bias

SKILLS = ["add", "reverse", "sort"]
SIZES = [10, 20, 50, 100]
COMBOS = [("subset_mean", "random"), ("anchor", "kmeans_correct"), ("anchor", "kmeans_irt"), ("pirt", "random"),
          ("pirt", "kmeans_irt"), ("gpirt", "random"), ("gpirt", "kmeans_irt"), ("mpirt", "random"),
          ("mpirt", "kmeans_irt"), ("gmpirt", "random"), ("gmpirt", "kmeans_irt"), ("adaptive", "random"),
          ("adaptive", "kmeans_correct")]


def answer(est, cand: ItemResults, anchors) -> ItemResults:
    """What the worker does: the anchors' answers, then every round an adaptive estimator asks for (looked up
    in the candidate's full-split results)."""
    got = cand.subset(anchors.items)
    while (more := est.next_items(got.scores)) is not None:
        got = got.merged(cand.subset(more))
    return got


def evaluate_all(args, tasks, pop, cands):
    """Evaluate whatever of the population and held-out candidates is not in ``pop`` / ``cands`` yet (an
    earlier, smaller run is extended: random merge k is the same recipe for any population size > k)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.merge import InMemoryMerger
    from evomerge.models import resolve_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = f"zoo://{args.variant}/base"
    sources = [f"zoo://{args.variant}/{s}" for s in SKILLS]
    ev = LMEvalEvaluator(tasks, include_path=str(shipped_dir("fitness") / "zoo"), batch_size=args.batch_size)
    merger = InMemoryMerger([base] + sources, device=device)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(base)).to(device).eval()
    tok = AutoTokenizer.from_pretrained(resolve_model(base))

    def save():
        Path(args.out).write_text(json.dumps({
            "population": {k: v.to_dict() for k, v in pop.items()},
            "candidates": {k: v.to_dict() for k, v in cands.items()}, "endpoints": endpoints,
            "fingerprint": ev.fingerprint}, default=str))

    endpoints = [base] + sources
    held_out = [(f"cand-{k:03d}", r) for k, r in enumerate(random_recipes(sources, base, args.candidates, seed=12345))]
    cands.update(evaluate_merges(ev, merger, model, tok, held_out, cands, lambda m: print(m, flush=True)))
    save()
    for n in [*range(10, args.population, 10), args.population]:  # saved every 10 members (random merges only)
        grown, endpoints = evaluate_population(ev, merger, model, tok, sources, base, n, seed=0,
                                               cache=EndpointCache(), progress=lambda m: print(m, flush=True),
                                               known=pop)
        pop.update(grown)
        save()
    return pop, cands, endpoints, ev.fingerprint


def predict(bank, est_name: str, anchor_method: str, n: int, cands: list[ItemResults], tasks: list[str]):
    """Each candidate's estimated accuracy per task, and the items it answered."""
    est_cls = ESTIMATORS.get(est_name)
    params = {"seed": 0, "items_per_task": n}
    anchors = select_anchors(bank, anchor_method, est_cls.first_round(n, params), seed=0)
    est = est_cls(bank, anchors, **params)
    est.tune()
    answered = [answer(est, c, anchors) for c in cands]
    return np.array([[est.estimate(a.scores)[t] for t in tasks] for a in answered]), answered


def combos(args) -> list[tuple[str, str]]:
    """(estimator, anchors) pairs to print: all, or those of ``--estimators``."""
    return [c for c in COMBOS if not args.estimators or c[0] in args.estimators.split(",")]


def held_out_table(args, bank, cands: dict[str, ItemResults], tasks: list[str]) -> None:
    n_full = sum(len(v) for v in bank.item_ids.values())
    truth = np.array([[c.metrics[t] for t in tasks] for c in cands.values()])
    print(f"held-out true accuracy: mean {truth.mean(0).round(3).tolist()}, std {truth.std(0).round(3).tolist()}")
    header = f"{'estimator':<9} {'anchors':<15} {'items/task':>10} {'cost x':>7} {'MAE':>7} {'max':>7} {'spearman':>9}"
    print(header + "\n" + "-" * len(header))
    for n in SIZES:
        for est_name, anchor_method in combos(args):
            pred, answered = predict(bank, est_name, anchor_method, n, list(cands.values()), tasks)
            err = np.abs(pred - truth)
            rho = np.nanmean([spearmanr(pred[:, k], truth[:, k])[0] for k in range(len(tasks))])
            cost = n_full / np.mean([a.n_items() for a in answered])
            ok = " *" if cost >= 50 and err.mean() <= 0.02 and rho >= 0.9 else ""
            print(f"{est_name:<9} {anchor_method:<15} {n:>10} {cost:>7.1f} {err.mean():>7.4f} {err.max():>7.4f} "
                  f"{rho:>9.3f}{ok}", flush=True)
    print("\n* = meets the target (>= 50x fewer items, MAE <= 0.02, Spearman >= 0.9)")


def top_of_table(args, bank, tasks: list[str]) -> None:
    """Each estimator's bias on the top candidates of a full-split search (answers looked up in its ledger)."""
    from evomerge.run.report import RunReport

    report = RunReport.load(args.top_of)
    top = report.ranked()[:args.top]
    cands = list(full_split_results(report, top).values())
    truth = np.array([[c.metrics[t] for t in tasks] for c in cands])
    print(f"\ntop {len(top)} of the full-split search {args.top_of} (full mean {truth.mean(1).min():.3f}-"
          f"{truth.mean(1).max():.3f}); bank: {len(bank.models)} models; 20 items per task")
    header = f"{'estimator':<9} {'anchors':<15} {'bias':>8} {'MAE':>7} {'max':>7}  bias per task"
    print(header + "\n" + "-" * len(header))
    for est_name, anchor_method in combos(args):
        pred, _ = predict(bank, est_name, anchor_method, 20, cands, tasks)
        m = summarise(pred, truth)
        ok = " *" if abs(m["bias"]) <= 0.01 else ""
        print(f"{est_name:<9} {anchor_method:<15} {m['bias']:>+8.4f} {m['mae']:>7.4f} {m['max']:>7.4f}  "
              f"{m['bias_per_task']}{ok}", flush=True)
    print("* = meets the target (|bias| <= 0.01)")


def runs_table(args) -> None:
    """The values searches with reduced fitness told the optimizer for their top candidates vs the full split."""
    from evomerge.run.report import RunReport

    print(f"\ntop {args.top} candidates of each search: told value vs full search split")
    header = (f"{'run':<28} {'bias':>8} {'estimator':>9} {'sample':>8} {'MAE':>7} {'max':>7} {'pick':>6} "
              f"{'best':>6}  bias per task")
    print(header + "\n" + "-" * len(header))
    for run in args.runs:
        m = told_bias(RunReport.load(run), args.top)
        print(f"{Path(run).name:<28} {m['bias']:>+8.4f} {m['estimator_bias']:>+9.4f} {m['items_offset']:>+8.4f} "
              f"{m['mae']:>7.4f} {m['max']:>7.4f} {m['picked_full']:>6.3f} {m['best_full']:>6.3f}  "
              f"{m['bias_per_task']}", flush=True)
    print("bias = estimator (told - accuracy on the items the value is over) + sample (those items' offset from "
          "the whole split); pick / best: the full-split accuracy of the run's pick and of the best of its top")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="full")
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--dim", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--out", default="irt_error_results.json")
    ap.add_argument("--reuse", help="a results JSON of an earlier run: evaluate only what it lacks")
    ap.add_argument("--estimators", help="comma-separated estimator names to print (default: all)")
    ap.add_argument("--save-bank", help="also save the fitted item bank in this folder (a search can reuse it: "
                                        "fitness.bank)")
    ap.add_argument("--bank", help="a kept item bank: skips the population (and the held-out table unless "
                                   "--reuse gives candidates)")
    ap.add_argument("--top-of", help="a full-split search's run dir: estimators' bias on its top candidates")
    ap.add_argument("--runs", nargs="*", default=[], help="reduced-fitness searches' run dirs: told-value bias")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    tasks = [f"zoo_{s}" for s in SKILLS]
    t0 = time.perf_counter()
    pop, cands = {}, {}
    if args.reuse:
        saved = json.loads(Path(args.reuse).read_text())
        pop = {k: ItemResults.from_dict(v) for k, v in saved["population"].items()}
        cands = {k: ItemResults.from_dict(v) for k, v in saved["candidates"].items()}
        endpoints, fingerprint = saved["endpoints"], saved["fingerprint"]
    if args.bank:
        bank = ItemBank.load(args.bank)
        cands = {k: v for k, v in cands.items() if k in {f"cand-{i:03d}" for i in range(args.candidates)}}
    else:
        want_pop = [f"random-{k:03d}" for k in range(args.population)]
        want_cands = [f"cand-{k:03d}" for k in range(args.candidates)]
        if not args.reuse or any(k not in pop for k in want_pop) or any(k not in cands for k in want_cands):
            pop, cands, endpoints, fingerprint = evaluate_all(args, tasks, pop, cands)
        pop = {k: v for k, v in pop.items() if k in endpoints or k in want_pop}
        cands = {k: cands[k] for k in want_cands}
        bank = bank_from_results(pop, tasks, endpoints, args.dim, fingerprint)
        print(f"\npopulation {len(pop)} models, {len(cands)} held-out candidates, evaluations took "
              f"{time.perf_counter() - t0:.0f}s")
    if args.save_bank:
        print(f"item bank saved in {bank.save(args.save_bank)}")
    print(f"bank: {len(bank.models)} models, {sum(len(v) for v in bank.item_ids.values())} search items "
          f"({', '.join(f'{t}={len(bank.item_ids[t])}' for t in tasks)})")
    if cands:
        held_out_table(args, bank, cands, tasks)
    if args.top_of:
        top_of_table(args, bank, tasks)
    if args.runs:
        runs_table(args)
    print("search with an IRT estimator vs full fitness at an equal candidate budget: benchmarks/irt_search.py")


if __name__ == "__main__":
    main()
