"""Warm start: the default point and the simple merges the space expresses are asked first, recorded with their
origin, counted in the budget, and a killed run resumes to the uninterrupted ledger."""


import pytest
import yaml

from evomerge.errors import ConfigError
from evomerge.optim import make_optimizer
from evomerge.run import run_config_from_dict, run_search
from evomerge.run.ledger import Ledger
from evomerge.run.staged import staged_config_from_dict, stage_config
from evomerge.run.warm_start import warm_start_points
from evomerge.spaces import build_space
from test_run_resume import config, killed_run_matches_uninterrupted

LAMBDA = {"preset": "ties_layerwise", "num_layers": 4,
          "extra": [{"type": "float", "name": "lambda", "low": 0.1, "high": 1.5, "default": 1.0}]}


def _space(cfg):
    return build_space(cfg.space, base=cfg.base, models=cfg.models)


def test_auto_is_the_default_point_then_the_expressible_simple_merges():
    cfg = run_config_from_dict(config(space=LAMBDA))
    labels = [label for label, _ in warm_start_points(cfg, _space(cfg))]
    # TIES at every coefficient (lambda is a parameter); TIES lambda=1.0 is not the default point (weights 1 vs 0.5)
    assert labels == ["warm_start:default"] + [f"warm_start:ties lambda={c} density=0.5"
                                               for c in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)]
    plain = run_config_from_dict(config())  # no lambda: only TIES lambda=1 is expressible
    assert [label for label, _ in warm_start_points(plain, _space(plain))] == [
        "warm_start:default", "warm_start:ties lambda=1.0 density=0.5"]
    mc = run_config_from_dict(config(space={"preset": "method_choice", "num_layers": 4}))
    got = [label for label, _ in warm_start_points(mc, _space(mc))]
    assert "warm_start:uniform average" in got and "warm_start:task_arithmetic lambda=0.5" in got
    ta = run_config_from_dict(config(space={"preset": "task_arithmetic_layerwise", "num_layers": 4}))
    points = dict(warm_start_points(ta, _space(ta)))  # the average, as task arithmetic with lambda 1/n
    n = len(ta.models)
    average = list(points["warm_start:uniform average"].values())
    assert average == pytest.approx([1 / n] * len(average))
    assert list(points) == ["warm_start:default", "warm_start:uniform average"] + [
        f"warm_start:task_arithmetic lambda={c}" for c in (0.25, 0.75, 1.0, 1.25, 1.5)]  # 0.5 is the default
    near = run_config_from_dict(config(space={"preset": "task_arithmetic_layerwise", "num_layers": 4,
                                              "weight": {"low": 0.0, "high": 1.0, "default": 0.333}}))
    assert [label for label, _ in warm_start_points(near, _space(near))] == ["warm_start:default"] + [
        f"warm_start:task_arithmetic lambda={c}" for c in (0.25, 0.5, 0.75, 1.0)]  # 1/3 ~ 0.333: asked once
    assert warm_start_points(run_config_from_dict(config(optimizer={"name": "cma", "warm_start": "none"})),
                             _space(plain)) == []


def test_named_entries_and_bad_entries(tmp_path):
    cfg = run_config_from_dict(config(space=LAMBDA))
    sp = _space(cfg)
    point = dict(sp.default_point(), **{"lambda": 0.5})
    recipe = sp.decode(dict(point, **{"a.weight": 0.9})).model_dump(mode="json")
    ws = ["default", {"point": point, "label": "mine"}, {"recipe": recipe, "label": "theirs"}, "default"]
    cfg = run_config_from_dict(config(space=LAMBDA, optimizer={"name": "cma", "warm_start": ws}))
    assert [label for label, _ in warm_start_points(cfg, sp)] == [
        "warm_start:default", "warm_start:mine", "warm_start:theirs"]
    again = run_config_from_dict(yaml.safe_load(cfg.to_yaml()))  # YAML round trip
    assert again == cfg and again.optimizer.warm_start[2].recipe == recipe
    bad = dict(recipe, method="task_arithmetic")
    cfg = run_config_from_dict(config(space=LAMBDA, optimizer={"name": "cma", "warm_start": [{"recipe": bad}]}))
    with pytest.raises(ConfigError, match="cannot be expressed"):
        run_search(cfg, tmp_path / "bad")
    with pytest.raises(ConfigError, match="warm_start"):
        run_config_from_dict(config(optimizer={"name": "cma", "warm_start": "sometimes"}))


@pytest.mark.parametrize("optimizer", [{"name": "cma", "population": 5}, {"name": "optuna", "population": 4},
                                       {"name": "nevergrad", "population": 4}, {"name": "random", "population": 4}])
def test_warm_start_points_are_evaluated_first_and_recorded(tmp_path, optimizer):
    cfg = run_config_from_dict(config(space=LAMBDA, optimizer=optimizer, budget={"evaluations": 12},
                                      fitness={"kind": "synthetic", "tasks": ["a", "b", "c"]}))
    expected = warm_start_points(cfg, _space(cfg))
    run_search(cfg, tmp_path / "r")
    recs = Ledger(tmp_path / "r" / "ledger.jsonl").records()
    assert len(recs) == 12
    assert [(r["origin"], r["point"]) for r in recs[:len(expected)]] == [(lab, p) for lab, p in expected]
    assert all("origin" not in r for r in recs[len(expected):])
    assert all(r["status"] == "ok" for r in recs)


def test_every_optimizer_plugin_supports_enqueue():
    cfg = run_config_from_dict(config(space=LAMBDA))
    sp = _space(cfg)
    for name in ("cma", "optuna", "nevergrad", "random"):
        assert make_optimizer(name, sp, ["maximize"]).supports_enqueue


@pytest.mark.parametrize("optimizer", [{"name": "cma", "population": 5},
                                       {"name": "optuna", "population": 4, "options": {"sampler": "tpe"}}])
def test_sigkill_during_warm_start_then_resume_gives_the_uninterrupted_ledger(tmp_path, optimizer):
    cfg = config(space=LAMBDA, optimizer=optimizer, budget={"evaluations": 20})
    # kills inside the warm start (before any checkpoint), at its end, after it
    reference = killed_run_matches_uninterrupted(cfg, tmp_path, (2, 6, 9))
    assert sum("origin" in r for r in reference) == 7


def test_a_later_stage_starts_from_the_previous_stage_winner(tmp_path):
    first = config(name="s1", space=LAMBDA, budget={"evaluations": 16},
                   optimizer={"name": "cma", "warm_start": "none"},
                   fitness={"kind": "synthetic", "tasks": ["a", "b", "c"]})
    job = staged_config_from_dict({"name": "job", "stages": [
        {"name": "one", "experiment": first},
        {"name": "two", "experiment": dict(first, name="s2", space=dict(LAMBDA, granularity=1),
                                           optimizer={"name": "cma"})}]})
    run_search(run_config_from_dict(first), tmp_path / "one")
    cfg = stage_config(job, 1, tmp_path)
    entries = cfg.optimizer.warm_start
    assert entries[:2] == ["default", "simple_merges"] and entries[2].label == "best_of:one"
    labels = [label for label, _ in warm_start_points(cfg, _space(cfg))]
    assert labels[-1] == "warm_start:best_of:one"
    best = max(Ledger(tmp_path / "one" / "ledger.jsonl").records(), key=lambda r: r["values"][0])
    point = dict(warm_start_points(cfg, _space(cfg)))["warm_start:best_of:one"]
    assert _space(cfg).decode(point).model_dump() != best["recipe"]  # finer groups ...
    assert all(point[f"a.L{i}-{i}.weight"] == best["point"][f"a.L{2 * (i // 2)}-{2 * (i // 2) + 1}.weight"]
               for i in range(4))  # ... holding the same values


def test_more_warm_starts_than_a_cma_generation_holds_are_spread_over_generations(tmp_path):
    # pycma adds its own injection (TPA's step-size probe) from the second generation on: with 7 warm starts and a
    # population of 3 it once returned 4 points for an ask of 3
    cfg = run_config_from_dict(config(space=LAMBDA, optimizer={"name": "cma", "population": 3},
                                      budget={"evaluations": 15}, fitness={"kind": "synthetic", "tasks": ["a", "b", "c"]}))
    expected = warm_start_points(cfg, _space(cfg))
    run_search(cfg, tmp_path / "r")
    recs = Ledger(tmp_path / "r" / "ledger.jsonl").records()
    assert len(recs) == 15 and all(r["status"] == "ok" for r in recs)
    assert [(r["origin"], r["point"]) for r in recs if "origin" in r] == [(lab, p) for lab, p in expected]
    assert [sum(r["gen"] == g for r in recs) for g in range(5)] == [3] * 5
