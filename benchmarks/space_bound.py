"""What a search space can reach on a zoo build, found by gradient descent instead of search: an upper reference
for the share of headroom a black-box search can close in that space.

    python benchmarks/space_bound.py [--job zoo_demo@0-4] [--job zoo2_demo@0-2] [--set KEY=JSON ...]
                                     [--label NAME] [--steps 100] [--restarts 2]
                                     [--runs-dir runs/search_quality] [--write-docs]

The zoo models are small enough to differentiate through the merge: every weight of a task-arithmetic (or
linear) space is a tensor the merged model depends on linearly (``base + sum_i w_i (theta_i - base)``, the
weight of each model and tensor read from the space's own decoder, so the fit covers exactly the recipes the
search can propose; checked against evomerge's merge engine at a random point). The weights are fitted with
Adam on the answer tokens' cross-entropy of the job's search split (all items; the zoo's training loss), each
step clipped to the space's bounds, from the space's default point and ``--restarts - 1`` random points; the
restart with the best exact-match mean on 200 search items per skill is scored on the test split like any
candidate (``compare_with_baselines``' executor). Per build: the uniform average, the fitted recipe, the best
simple merge and the ceiling (from the cached baselines of ``search_quality.py``, scored here if missing) and
the share of headroom the fitted recipe closes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("TQDM_DISABLE", "1")
from search_quality import baseline_key, job_config, parse_seeds, references, variant_label  # noqa: E402


def _weight_map(space, recipe_of, models: list[str], names: list[str]):
    """(n_models, n_tensors) index of the space dimension that sets each weight (-1: fixed at ``fixed``)."""
    import torch

    params = space.params
    if any(type(p).__name__ != "FloatParam" for p in params):
        raise SystemExit("error: space_bound.py fits real-valued spaces only (no categorical or integer parameter)")
    marks = {k: p.low + (k + 1) / (len(params) + 1) * (p.high - p.low) for k, p in enumerate(params)}
    recipe = recipe_of({p.name: marks[k] for k, p in enumerate(params)})
    if recipe.method not in ("task_arithmetic", "linear"):
        raise SystemExit(f"error: space_bound.py fits task_arithmetic and linear spaces, not {recipe.method}")
    by_value = {v: k for k, v in marks.items()}
    index = torch.full((len(models), len(names)), -1, dtype=torch.long)
    fixed = torch.zeros((len(models), len(names)))
    for t, name in enumerate(names):
        if set(recipe.global_params(name)) - {"weight"}:
            raise SystemExit(f"error: {name}: a global method parameter is searched; space_bound.py fits weights")
        for i, m in enumerate(models):
            w = float(recipe.resolve_params(m, name).get("weight", 1.0))
            if w in by_value:
                index[i, t] = by_value[w]
            else:
                fixed[i, t] = w
    return index, fixed


class SpaceFit:
    """The merged model as a differentiable function of the space's weights."""

    def __init__(self, cfg, space):
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        from evomerge.models import resolve_model

        self.space = space
        folders = [resolve_model(r) for r in [cfg.base, *cfg.models]]
        tensors = [load_file(str(Path(f) / "model.safetensors")) for f in folders]
        self.names = sorted(tensors[0])
        self.base = {n: tensors[0][n].float() for n in self.names}
        self.deltas = [{n: t[n].float() - self.base[n] for n in self.names} for t in tensors[1:]]
        self.model = AutoModelForCausalLM.from_pretrained(folders[0], dtype=torch.float32).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.linear = space.decode(space.default_point()).method == "linear"
        self.index, self.fixed = _weight_map(space, space.decode, list(cfg.models), self.names)
        self.params = space.params
        self.low = torch.tensor([p.low for p in self.params])
        self.high = torch.tensor([p.high for p in self.params])

    def weights(self, x):
        """(n_models, n_tensors) weights for the dimension values ``x``."""
        import torch

        return torch.where(self.index >= 0, x[self.index.clamp(min=0)], self.fixed)

    def merged(self, x) -> dict:
        w = self.weights(x)
        out = {}
        for t, n in enumerate(self.names):
            acc = sum(w[i, t] * d[n] for i, d in enumerate(self.deltas))
            # linear: sum_i w_i theta_i / sum_i w_i = base + sum_i w_i delta_i / sum_i w_i
            out[n] = self.base[n] + (acc / w[:, t].sum().clamp(min=1e-8) if self.linear else acc)
        return out

    def point(self, x) -> dict:
        return {p.name: float(v) for p, v in zip(self.params, x)}

    def check_against_engine(self) -> float:
        """Largest difference between this merge and evomerge's at a random point (must be float noise)."""
        import numpy as np
        import torch

        from evomerge.merge import InMemoryMerger

        rng = np.random.default_rng(0)
        point = self.space.sample(rng)
        x = torch.tensor([point[p.name] for p in self.params], dtype=torch.float32)
        ours = self.merged(x)
        recipe = self.space.decode(point)
        theirs = InMemoryMerger(self.space.sources()).merge_state_dict(recipe, dtype=torch.float32)
        return max(float((ours[n] - theirs[n].float()).abs().max()) for n in self.names)

    def loss(self, x, batch):
        from torch.func import functional_call

        return functional_call(self.model, self.merged(x), args=(), kwargs=batch).loss


def _items(task: str, split: str) -> list[dict]:
    from evomerge.zoo.data import data_dir

    path = data_dir() / f"{task.removeprefix('zoo_')}_{split}.jsonl"
    if not path.exists():
        raise SystemExit(f"error: no zoo data for task {task} ({path})")
    return [json.loads(line) for line in path.read_text().splitlines()]


def mean_exact_match(fit: SpaceFit, x, items: dict[str, list[dict]]) -> float:
    """Mean over tasks of greedy exact match (the zoo's decoder), to pick among restarts."""
    import torch

    from evomerge.zoo.decode import exact_match
    from evomerge.zoo.tokenizer import build_tokenizer

    with torch.no_grad():
        fit.model.load_state_dict(fit.merged(x), strict=False)
    tok = build_tokenizer()
    return statistics.fmean(statistics.fmean(exact_match(fit.model, tok, v)) for v in items.values())


def fit_build(cfg, steps: int, restarts: int, lr: float, batch: int) -> dict:
    import numpy as np
    import torch

    from evomerge.spaces import build_space
    from evomerge.zoo.train import encode_batch

    space = build_space(cfg.space, base=cfg.base, models=cfg.models)
    fit = SpaceFit(cfg, space)
    gap = fit.check_against_engine()
    if gap > 1e-4:
        raise SystemExit(f"error: the differentiable merge differs from evomerge's by {gap:.2g}")
    data = {t: _items(t, "search") for t in cfg.fitness.tasks}
    pick = {t: v[:200] for t, v in data.items()}
    rng = random.Random(cfg.seed)
    best = None
    t0 = time.perf_counter()
    for r in range(restarts):
        start = fit.space.default_point() if r == 0 else fit.space.sample(np.random.default_rng(r))
        x = torch.tensor([start[p.name] for p in fit.params], dtype=torch.float32, requires_grad=True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            pairs = [(d["prompt"], d["answer"]) for v in data.values() for d in rng.sample(v, batch)]
            loss = fit.loss(x, encode_batch(pairs))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, fit.high), fit.low))
        em = mean_exact_match(fit, x.detach(), pick)
        if best is None or em > best[0]:
            best = (em, x.detach().clone(), loss.item())
    return {"space": space, "point": fit.point(best[1]), "pick_em": 100 * best[0], "loss": best[2],
            "fit_s": time.perf_counter() - t0, "engine_gap": gap}


def score_build(cfg, space, points: dict[str, dict], cache: Path, run_dir: Path) -> tuple[dict, dict[str, dict]]:
    """The build's baselines as ``search_quality.py`` caches them (scored here if that file is missing) and the
    test-split scores of ``points``, from one worker."""
    from evomerge.execution.base import EXECUTORS
    from evomerge.run.context import worker_spec
    from evomerge.run.demo import cached_baselines

    with EXECUTORS.get("local")(worker_spec(cfg, space, run_dir)) as ex:
        base = cached_baselines(cfg, ex, cache, say=lambda s: None)
        res = dict(ex.map([(k, space.decode(p)) for k, p in points.items()], split="test"))
    return base, {k: r.objectives for k, r in res.items()}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", action="append", help="JOB[@ZOOSEEDS], repeatable (default zoo_demo@0-4 zoo2_demo@0-2)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--label", default=None, help="name of this variant's runs (default: from the overrides)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--batch", type=int, default=32, help="items per task per step")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/search_quality"))
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.manual_seed(0)
    label = args.label or variant_label(args.overrides)
    rows = []
    for spec in args.job or ["zoo_demo@0-4", "zoo2_demo@0-2"]:
        job, _, zs = spec.partition("@")
        for zoo_seed in parse_seeds(zs or "0"):
            cfg = job_config(job, zoo_seed, 0, args.overrides, None)
            run_dir = args.runs_dir / "space_bound" / label / f"{cfg.name}-zoo{zoo_seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            settings = {"steps": args.steps, "restarts": args.restarts, "lr": args.lr, "batch": args.batch}
            done = run_dir / "space_bound.json"
            if done.exists() and json.loads(done.read_text()).get("settings") == settings:
                rows.append(json.loads(done.read_text()))  # fitted and scored before with these settings
                continue
            res = fit_build(cfg, args.steps, args.restarts, args.lr, args.batch)
            space = res["space"]
            base, test = score_build(cfg, space, {"fitted": res["point"], "start": space.default_point()},
                                     args.runs_dir / "baselines" / f"{baseline_key(cfg)}.json", run_dir)
            tasks = list(cfg.fitness.tasks)
            simple, ceiling = references(base["rows"], tasks)
            bs, fitted = 100 * simple["test"]["mean"], 100 * test["fitted"]["mean"]
            row = {"job": cfg.name, "zoo_seed": zoo_seed, "start": 100 * test["start"]["mean"], "fitted": fitted,
                   "fitted_tasks": {t: 100 * test["fitted"][t] for t in tasks}, "best_simple": bs,
                   "ceiling": ceiling, "share": (fitted - bs) / (ceiling - bs), "pick_em": res["pick_em"],
                   "fit_s": res["fit_s"], "engine_gap": res["engine_gap"], "point": res["point"], "settings": settings}
            done.write_text(json.dumps(row, indent=1))
            rows.append(row)
            print(f"{cfg.name} zoo {zoo_seed}: start {row['start']:.1f}, fitted {fitted:.1f} "
                  f"({', '.join(f'{t} {v:.1f}' for t, v in row['fitted_tasks'].items())}), best simple {bs:.1f}, "
                  f"ceiling {ceiling:.1f}, share {row['share']:.0%} ({row['fit_s']:.0f} s)", flush=True)
    head = ["job", "zoo seed", "default point", "fitted (test)", "per task", "best simple", "ceiling",
            "share closed", "fit s"]
    body = [[r["job"], str(r["zoo_seed"]), f"{r['start']:.1f}", f"{r['fitted']:.1f}",
             " / ".join(f"{v:.1f}" for v in r["fitted_tasks"].values()), f"{r['best_simple']:.1f}",
             f"{r['ceiling']:.1f}", f"{r['share']:.0%}", f"{r['fit_s']:.0f}"] for r in rows]
    body.append(["all", "", f"{statistics.fmean(r['start'] for r in rows):.1f}",
                 f"{statistics.fmean(r['fitted'] for r in rows):.1f}", "", "", "",
                 f"{statistics.fmean(r['share'] for r in rows):.0%} (min {min(r['share'] for r in rows):.0%})", ""])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(b) + " |" for b in body)]
    print("\n".join(lines))
    if args.write_docs:
        from docs_section import write_section

        write_section(f"space_bound.py {label}", [
            f"### What the space can reach: `{label}` (`benchmarks/space_bound.py`)", "",
            f"`python benchmarks/space_bound.py {shlex.join(argv)}` on {os.cpu_count()} CPU cores: the space's "
            "weights fitted by gradient descent on the search split's answer cross-entropy (method: the script's "
            "docstring); test-split exact match %.", "", *lines, ""])


if __name__ == "__main__":
    main()
