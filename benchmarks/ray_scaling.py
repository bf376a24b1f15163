"""Ray scaling: candidates/min in-process vs Ray actors, worker utilisation and per-candidate overhead, one run.

    python benchmarks/ray_scaling.py [--fitness lm_eval|synthetic] [--candidates 12] [--generations 3]

Rows (the same recipes, warm workers: the Worker build is not timed):
  in-process (2 threads)        LocalExecutor, torch with 2 threads (the reference); also with 1 thread
  ray 1 actor / 2 actors        RayExecutor, single-thread actors (num_cpus=1, torch_threads=1)
Utilisation, population 5 on 2 actors:
  executor, one map per generation   a barrier at each generation (what a generational optimizer needs)
  executor, one lazy stream          one ``map`` over a lazy stream of candidates
  run loop, generational (cma)       ``run_search``: ask 5, evaluate, tell 5 (ledger + checkpoints included)
  run loop, steady-state (optuna)    ``run_search``: tell each result as it arrives, ask one per free worker
  (run-loop rows: busy = merge + evaluate time of the ledger's candidates, over 2 x the span from the first
  dispatch to the last result; the driver's ask/tell/ledger/checkpoint time counts as idle)
Overhead per candidate: driver round-trip time minus the time spent inside the actor's ``evaluate``.

``--fitness lm_eval`` (default) merges the CI zoo and scores it with lm-eval (zoo_add, exact match, full split);
``synthetic`` is CPU-free (a sleep), which isolates the scheduling from the compute.
Targets (issue 6): 2 actors >= 1.6x one process; utilisation >= 90% with a population of 5 on 2 workers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _fitness(kind: str, sleep_s: float) -> dict:
    if kind == "synthetic":
        return {"kind": "synthetic", "tasks": ["add", "reverse", "sort"], "num_layers": 2, "sleep_s": sleep_s}
    return {"kind": "lm_eval", "tasks": ["zoo_add"], "include_path": ["zoo"],
            "estimator": "full", "population": 0, "batch_size": 32}


def _recipes(n: int, seed: int = 0):
    from evomerge.optim import make_optimizer
    from evomerge.spaces import build_space

    models = [f"zoo://ci/{m}" for m in ("add", "reverse", "sort")]
    space = build_space({"preset": "ties_layerwise", "num_layers": 2}, base="zoo://ci/base", models=models)
    opt = make_optimizer("random", space, ["maximize"], seed=seed, population=n)
    return space, [space.decode(p) for p in opt.ask(n)]


def _throughput(executor, recipes) -> tuple[float, float]:
    t0 = time.perf_counter()
    results = list(executor.map(list(enumerate(recipes))))
    wall = time.perf_counter() - t0
    bad = [r.reason for _, r in results if r.status != "ok"]
    if bad:
        raise SystemExit(f"benchmark candidate failed: {bad[0]}")
    return len(results) / wall * 60.0, wall


def _run_loop_utilisation(optimizer: dict, fitness: dict, n: int, tmp: str) -> tuple[float, float]:
    """Utilisation of 2 Ray actors under the real run loop (see the module docstring)."""
    from evomerge.run import run_config_from_dict, run_search
    from evomerge.run.ledger import Ledger

    cfg = run_config_from_dict({
        "name": f"util-{optimizer['name']}", "seed": 1, "base": "zoo://ci/base",
        "models": [f"zoo://ci/{m}" for m in ("add", "reverse", "sort")],
        "space": {"preset": "ties_layerwise", "num_layers": 2}, "fitness": fitness,
        "objectives": [{"metric": "mean"}], "optimizer": optimizer, "budget": {"evaluations": n},
        "executor": {"name": "ray", "options": {"num_workers": 2, "num_cpus": 1, "torch_threads": 1}}})
    run_dir = Path(tmp) / cfg.name
    run_search(cfg, run_dir)
    recs = Ledger(run_dir / "ledger.jsonl").records()
    if any(r["status"] != "ok" for r in recs):
        raise SystemExit(f"benchmark candidate failed: {next(r['reason'] for r in recs if r['status'] != 'ok')}")
    work = [r["timings"]["merge_s"] + r["timings"]["eval_s"] for r in recs]
    start = min(r["time"] - w for r, w in zip(recs, work))
    span = max(r["time"] for r in recs) - start
    return sum(work) / (2 * span), span


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fitness", choices=["lm_eval", "synthetic"], default="lm_eval")
    ap.add_argument("--candidates", type=int, default=12, help="candidates per throughput row")
    ap.add_argument("--generations", type=int, default=3, help="generations of 5 for the utilisation rows")
    ap.add_argument("--sleep-s", type=float, default=0.5, help="synthetic evaluation time")
    args = ap.parse_args(argv)

    import ray
    import torch
    from rich.console import Console
    from rich.table import Table

    from evomerge.execution import EXECUTORS, WorkerSpec
    from evomerge.zoo import ensure_zoo

    ensure_zoo("ci")
    space, recipes = _recipes(args.candidates)
    spec = WorkerSpec(fitness=_fitness(args.fitness, args.sleep_s), sources=space.sources(), base="zoo://ci/base")
    rows = []

    local = EXECUTORS.get("local")(spec)
    list(local.map([(0, recipes[0])]))  # build the worker (and warm caches) before timing
    for threads in (2, 1):  # 2 threads is the reference; 1 thread shows what oversubscription costs
        torch.set_num_threads(threads)
        rate, wall = _throughput(local, recipes)
        rows.append((f"in-process ({threads} thread{'s' if threads > 1 else ''})", rate, wall, None, None))
    rate_local = rows[0][1]
    local.close()

    with tempfile.TemporaryDirectory(prefix="evr-") as tmp:
        ray.init(num_cpus=2, _temp_dir=str(Path(tmp) / "ray"), include_dashboard=False, log_to_driver=False)
        try:
            util = {}
            for n in (1, 2):
                ex = EXECUTORS.get("ray")(spec, run_dir=tmp, num_workers=n, num_cpus=1, torch_threads=1)
                ex.wait_ready()
                list(ex.map([(i, recipes[i]) for i in range(n)]))  # first candidate per actor warms it up
                rate, wall = _throughput(ex, recipes)
                st = ex.last_stats
                rows.append((f"ray {n} actor{'s' if n > 1 else ''} (1 thread each)", rate, wall, st["utilisation"],
                             st["overhead_s_per_candidate"]))
                if n == 2:
                    _, pop = _recipes(5 * args.generations, seed=1)
                    busy = cap = 0.0
                    t0 = time.perf_counter()
                    for g in range(args.generations):
                        list(ex.map(list(enumerate(pop[5 * g:5 * g + 5]))))
                        busy += ex.last_stats["busy_s"]
                        cap += ex.last_stats["busy_s"] / max(ex.last_stats["utilisation"], 1e-9)
                    util["executor, one map per generation"] = (busy / cap, time.perf_counter() - t0)
                    list(ex.map(iter(list(enumerate(pop)))))
                    util["executor, one lazy stream"] = (ex.last_stats["utilisation"], ex.last_stats["wall_s"])
                ex.close()
            fitness, n = spec.fitness, 5 * args.generations
            util["run loop, generational (cma)"] = _run_loop_utilisation({"name": "cma", "population": 5}, fitness,
                                                                         n, tmp)
            util["run loop, steady-state (optuna tpe)"] = _run_loop_utilisation(
                {"name": "optuna", "population": 5, "options": {"sampler": "tpe"}}, fitness, n, tmp)
        finally:
            ray.shutdown()

    con = Console(width=120)
    t = Table(title=f"Ray scaling ({args.fitness} fitness, {args.candidates} candidates, warm workers, "
                    f"{os.cpu_count()} CPUs)")
    for col in ("executor", "candidates/min", "wall s", "vs in-process", "utilisation", "overhead/cand ms"):
        t.add_column(col, justify="left" if col == "executor" else "right")
    for name, rate, wall, u, ov in rows:
        t.add_row(name, f"{rate:.1f}", f"{wall:.2f}", f"{rate / rate_local:.2f}x",
                  "" if u is None else f"{100 * u:.1f}%", "" if ov is None else f"{1000 * ov:.1f}")
    con.print(t)
    u = Table(title=f"Worker utilisation, population 5 on 2 actors, {args.generations} generations")
    for col in ("scheduling", "utilisation", "wall s"):
        u.add_column(col, justify="left" if col == "scheduling" else "right")
    for name, (val, wall) in util.items():
        u.add_row(name, f"{100 * val:.1f}%", f"{wall:.2f}")
    con.print(u)
    speedup = rows[3][1] / rate_local
    steady = util["run loop, steady-state (optuna tpe)"][0]
    con.print(f"targets: 2 actors vs in-process {speedup:.2f}x (>= 1.6x: {'met' if speedup >= 1.6 else 'NOT met'}); "
              f"steady-state run loop utilisation {100 * steady:.1f}% "
              f"(>= 90%: {'met' if steady >= 0.9 else 'NOT met'})")


if __name__ == "__main__":
    main()
