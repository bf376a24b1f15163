"""Which candidate to call the winner of a noisy search: the test mean of the pick under three rules.

    python benchmarks/winner_pick.py RUN_DIR [RUN_DIR ...]      # e.g. the irt_search run dirs of one row
    python benchmarks/winner_pick.py --regret FULL_RUN [...]   # full-split searches (irt_search row full)

Rules (no new search-split items; each pick is evaluated on the test split, cached in the run dir):

- ``told``: the candidate with the best value the optimizer was told (what ``evomerge`` reports);
- ``gp``: the evaluated candidate with the best posterior mean of a Gaussian process (RBF with one length
  scale per parameter, plus white noise) fitted to every told value over the unit-cube points, so a value
  is judged with its neighbours' (smooths out item noise, if neighbours share it);
- ``cma_mean``: CMA-ES runs only: the mean of the search distribution at the last checkpoint (a point the
  search never evaluated; the usual recommendation of CMA-ES under noise).

Prints one line per run and, per row of the irt_search table (``result.json``'s ``fitness``), the mean +- std
over runs. Test scores of the picks go to ``RUN_DIR/pareto/test_scores.json`` (``cma_mean`` under
``RUN_DIR/pareto/cma_mean_test.json``), so a second call evaluates nothing.

``--regret``: the pick's noise alone, without the search. A full-split search's ledger holds every
candidate's answer to every search item; a reduced fitness is simulated on those same candidates by
drawing k items per skill (``fixed``: one sample for all candidates, like ``subset_mean`` or a pool;
``fresh``: a sample per candidate), and the regret is the full-split mean of the best candidate minus that
of the candidate the reduced values pick (plain best, or the GP's best), averaged over draws. No evaluation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from pathlib import Path

import numpy as np


def test_mean(metrics: dict, tasks: list[str]) -> float:
    return float(np.mean([metrics[t] for t in tasks]))


def gp_mean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Posterior mean at ``x`` of a GP fitted to ``y`` (ARD RBF + white noise, hyper-parameters by ML)."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    kernel = ConstantKernel(0.01) * RBF(np.full(x.shape[1], 0.3), (0.05, 10)) + WhiteKernel(1e-3, (1e-6, 1e-1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianProcessRegressor(kernel, normalize_y=True, random_state=0).fit(x, y).predict(x)


def gp_pick(report, space) -> dict:
    recs = report.ok()
    mu = gp_mean(np.array([space.to_unit(r["point"]) for r in recs]), np.array([r["values"][0] for r in recs]))
    sign = 1.0 if report.directions[0] == "maximize" else -1.0
    return recs[int(np.argmax(sign * mu))]


def cma_mean_test(report, space, tasks: list[str]) -> float | None:
    """Test mean of the CMA-ES distribution's mean at the last checkpoint (None for another optimizer)."""
    from evomerge.execution import EXECUTORS
    from evomerge.optim.registry import make_optimizer
    from evomerge.run.checkpoint import load_latest_checkpoint
    from evomerge.run.context import worker_spec

    cfg = report.config
    if cfg.optimizer.name != "cma":
        return None
    cache = report.run_dir / "pareto" / "cma_mean_test.json"
    if cache.exists():
        return json.loads(cache.read_text())["test_mean"]
    opt = make_optimizer("cma", space, report.directions, seed=cfg.seed, population=cfg.optimizer.population,
                         options=cfg.optimizer.options)
    opt.load_state_dict(load_latest_checkpoint(report.run_dir / "checkpoints")[1]["optimizer"])
    es = opt._es
    unit = np.clip(es.boundary_handler.transform(es.mean), 0.0, 1.0)
    recipe = space.decode(space.from_unit(unit))
    with EXECUTORS.get("local")(worker_spec(cfg, space, report.run_dir)) as ex:
        [(_, res)] = list(ex.map([(0, recipe)], split="test"))
    if res.status != "ok":
        raise RuntimeError(f"test evaluation of the CMA-ES mean failed: {res.reason}")
    value = test_mean(res.objectives, tasks)
    cache.write_text(json.dumps({"unit_point": unit.tolist(), "test_mean": value}))
    return value


def picks(run_dir: Path) -> dict:
    from evomerge.run.export import evaluate_on_test
    from evomerge.run.report import RunReport
    from evomerge.spaces import build_space

    report = RunReport.load(run_dir)
    cfg = report.config
    space = build_space(cfg.space, base=cfg.base, models=cfg.models)
    tasks = list(cfg.fitness["tasks"])
    told, smoothed = report.best(), gp_pick(report, space)
    test = evaluate_on_test(report, [told, smoothed])
    result = run_dir / "result.json"
    row = json.loads(result.read_text())["fitness"] if result.exists() else run_dir.name
    return {"run": str(run_dir), "row": row, "told": test_mean(test[told["eval_id"]], tasks),
            "gp": test_mean(test[smoothed["eval_id"]], tasks), "cma_mean": cma_mean_test(report, space, tasks)}


def regret(run_dir: Path, k: int, mode: str, draws: int, smooth: bool) -> float:
    """Mean full-split regret (points) of picking among a full-split search's candidates from k items/skill."""
    from evomerge.run.report import RunReport
    from evomerge.spaces import build_space

    report = RunReport.load(run_dir)
    if report.config.fitness.get("estimator") != "full":
        raise SystemExit(f"error: {run_dir} is not a full-split search (estimator: full)")
    recs = report.ok()
    cfg = report.config
    space = build_space(cfg.space, base=cfg.base, models=cfg.models)
    x = np.array([space.to_unit(r["point"]) for r in recs])
    answers = [np.array([[r["item_results"][t][i] for i in sorted(recs[0]["item_results"][t], key=int)]
                         for r in recs]) for t in cfg.fitness["tasks"]]
    full = np.mean([a.mean(1) for a in answers], 0)
    out = []
    for d in range(draws):
        rng = np.random.default_rng(d)
        if mode == "fixed":
            told = np.mean([a[:, rng.choice(a.shape[1], k, replace=False)].mean(1) for a in answers], 0)
        else:
            told = np.mean([[row[rng.choice(a.shape[1], k, replace=False)].mean() for row in a] for a in answers], 0)
        pick = np.argmax(gp_mean(x, told) if smooth else told)
        out.append(full.max() - full[pick])
    return 100 * float(np.mean(out))


def regret_table(runs: list[Path], draws: int) -> None:
    print("| items per skill | sample | pick | regret, runs " + " / ".join(d.name for d in runs) + " | mean |")
    print("|---:|---|---|---|---:|")
    for k in (50, 100, 200, 300):
        for mode in ("fixed", "fresh"):
            for smooth in (False, True):
                if smooth and k != 100:
                    continue
                r = [regret(d, k, mode, draws if not smooth else max(draws // 5, 1), smooth) for d in runs]
                print(f"| {k} | {mode} | {'gp' if smooth else 'told'} | {' / '.join(f'{x:.2f}' for x in r)} | "
                      f"{statistics.mean(r):.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--regret", action="store_true", help="simulate reduced picks on full-split searches")
    ap.add_argument("--draws", type=int, default=200, help="item draws per cell of --regret (gp: a fifth)")
    args = ap.parse_args()
    if args.regret:
        regret_table(args.runs, args.draws)
        return
    rows = []
    for d in args.runs:
        p = picks(d)
        rows.append(p)
        cma = "-" if p["cma_mean"] is None else f"{100 * p['cma_mean']:.1f}"
        print(f"{d}: told {100 * p['told']:.1f}  gp {100 * p['gp']:.1f}  cma_mean {cma}", flush=True)
    print("\n| row | runs | told: TEST mean | gp | cma_mean |\n|---|---:|---:|---:|---:|")
    for row in dict.fromkeys(p["row"] for p in rows):
        ps = [p for p in rows if p["row"] == row]

        def ms(key):
            xs = [100 * p[key] for p in ps if p[key] is not None]
            return "-" if not xs else f"{statistics.mean(xs):.1f}" + (
                f" +- {statistics.stdev(xs):.1f}" if len(xs) > 1 else "")
        print(f"| {row} | {len(ps)} | {ms('told')} | {ms('gp')} | {ms('cma_mean')} |")


if __name__ == "__main__":
    main()
