"""``benchmarks/search_quality.py``: the per-build job rewrite and the issue-33 summary (no search run here)."""

import importlib.util
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "search_quality", Path(__file__).resolve().parent.parent / "benchmarks" / "search_quality.py")
sq = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sq)


def test_seed_lists():
    assert sq.parse_seeds("0-2,5") == [0, 1, 2, 5] and sq.parse_seeds("3") == [3]


def test_a_build_seed_and_overrides_rewrite_the_job():
    cfg = sq.job_config("zoo_demo", 3, 1, ["space.preset=ties_attn_mlp", "optimizer.population=12"], None)
    assert cfg.seed == 1 and cfg.base == "zoo://full@3/base"
    assert cfg.models == [f"zoo://full@3/{n}" for n in ("add", "reverse", "sort")]
    assert cfg.space["preset"] == "ties_attn_mlp" and cfg.optimizer.population == 12
    plain = sq.job_config("zoo_demo", 0, 0, [], 24)
    assert plain.base == "zoo://full/base" and plain.budget.evaluations == 24
    # the baselines are shared by every space and optimizer on one build, not across builds
    assert sq.baseline_key(cfg) == sq.baseline_key(sq.job_config("zoo_demo", 3, 0, [], None))
    assert sq.baseline_key(cfg) != sq.baseline_key(plain)
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        sq.job_config("zoo_demo", 0, 0, ["space.preset"], None)


def _row(job, zs, seed, winner, simple, ceiling):
    return {"job": job, "zoo_seed": zs, "seed": seed, "winner": winner, "best_simple": simple, "ceiling": ceiling,
            "margin": winner - simple, "headroom": ceiling - simple, "share": (winner - simple) / (ceiling - simple)}


def test_summary_and_targets():
    rows = [_row("a", 0, 0, 84, 80, 100), _row("a", 0, 1, 86, 80, 100),   # share 20%, 30%: build 25%
            _row("a", 1, 0, 91, 90, 95), _row("a", 1, 1, 92, 90, 95),     # headroom 5: no margin target
            _row("b", 0, 0, 70, 60, 80), _row("b", 0, 1, 66, 60, 80)]     # 50%, 30%
    s = sq.summarize(rows)
    builds = {(b["job"], b["zoo_seed"]): b for b in s["builds"]}
    assert math.isclose(builds["a", 0]["share"], 0.25) and math.isclose(builds["a", 1]["share"], 0.3)
    assert math.isclose(s["share_mean"], (0.2 + 0.3 + 0.2 + 0.4 + 0.5 + 0.3) / 6)
    assert math.isclose(s["margin_mean_wide"], (5 + 8) / 2)  # builds a/0 and b/0 only
    assert all(s["targets"].values())
    rows[1] = _row("a", 0, 1, 79, 80, 100)  # one run below the best simple merge: build a/0 share 7.5%
    s = sq.summarize(rows)
    t = s["targets"]
    assert not t["beats the best simple merge in every run"] and not t["share >= 10% in every build"]
    assert s["margin_min"] == -1


def test_the_space_bound_merge_is_evomerges_and_its_fit_lowers_the_loss(ci_zoo):
    import random
    from types import SimpleNamespace

    import torch

    spec = importlib.util.spec_from_file_location(
        "space_bound", Path(__file__).resolve().parent.parent / "benchmarks" / "space_bound.py")
    sb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sb)
    from evomerge.spaces import build_space
    from evomerge.zoo.train import encode_batch

    models = [f"zoo://ci/{n}" for n in ("add", "reverse", "sort")]
    cfg = SimpleNamespace(base="zoo://ci/base", models=models)
    space = build_space({"preset": "task_arithmetic_attn_mlp", "weight": {"low": 0, "high": 1, "default": 0.333}},
                        base=cfg.base, models=models)
    fit = sb.SpaceFit(cfg, space)
    assert (fit.index >= 0).all()  # every weight of every tensor is one of the space's dimensions
    assert fit.check_against_engine() < 1e-5
    rng = random.Random(0)
    items = [(d["prompt"], d["answer"]) for d in sb._items("zoo_sort", "search")]
    batch = encode_batch(rng.sample(items, 32))
    x = torch.tensor([space.default_point()[p.name] for p in fit.params], requires_grad=True)
    first = fit.loss(x, batch)
    first.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        x -= 0.05 * x.grad / x.grad.abs().max()
    assert fit.loss(x, batch) < first
