"""Steady-state schedule: partial tells as results arrive, out-of-order completion, crash + resume."""

from pathlib import Path

import pytest

from evomerge.errors import ConfigError, EvomergeError
from evomerge.execution.base import EXECUTORS, Executor, build_worker, safe_evaluate
from evomerge.run import resume, run_config_from_dict, run_search
from evomerge.run.checkpoint import load_latest_checkpoint
from evomerge.run.config import resolve_schedule
from evomerge.run.validate import validate_run
from evomerge.run.ledger import Ledger


@EXECUTORS.register("test_two_slots")
class TwoSlots(Executor):
    """Two candidates in flight; they finish out of ask order (newest first every other time), and the next one
    is pulled only when a slot frees, as the Ray executor does. ``crash_after``: raise after that many results
    of this executor's life (a driver crash: results already yielded are in the ledger, the rest are lost)."""

    def __init__(self, spec, crash_after=None, **options):
        super().__init__(spec, **options)
        self.crash_after = crash_after
        self.worker = build_worker(spec)

    def map(self, tasks, split="search"):
        source, flight, done = iter(tasks), [], 0

        def pull():
            for key, recipe in source:
                flight.append((key, recipe))
                return

        pull()
        pull()
        while flight:
            key, recipe = flight.pop(-1 if done % 2 == 0 else 0)
            if self.crash_after is not None and done >= self.crash_after:
                raise RuntimeError("driver crashed")
            done += 1
            yield key, safe_evaluate(self.worker, recipe, split)
            pull()


def config(optimizer, executor=None, **kw):
    cfg = {
        "name": "steady-test", "seed": 7, "base": "/m/base", "models": ["/m/a", "/m/b", "/m/c"],
        "space": {"preset": "ties_layerwise", "num_layers": 4},
        "fitness": {"kind": "synthetic", "tasks": ["a", "b", "c"]},
        "objectives": [{"metric": "mean"}],
        "optimizer": optimizer,
        "budget": {"evaluations": 21},
        "executor": executor or {"name": "test_two_slots"},
    }
    cfg.update(kw)
    return cfg


TPE = {"name": "optuna", "population": 4, "options": {"sampler": "tpe", "sampler_options": {"n_startup_trials": 3}}}


def records(run_dir):
    return Ledger(Path(run_dir) / "ledger.jsonl").records()


def saved_optimizer(run_dir):
    """The checkpoint, the optuna study it holds (as plain data, replayed into a study) and the pending asks."""
    import optuna

    from evomerge.optim.optuna_state import restore_study

    _, state = load_latest_checkpoint(Path(run_dir) / "checkpoints")
    opt = state["optimizer"]
    study = restore_study(opt["state"], optuna.samplers.TPESampler(seed=0), 1)
    return state, study, opt["pending"]


def test_schedule_follows_the_optimizer_and_refuses_steady_state_cma():
    for opt, want in [({"name": "cma"}, "generational"), (TPE, "steady_state"), ({"name": "random"}, "steady_state"),
                      ({**TPE, "schedule": "generational"}, "generational")]:
        cfg = run_config_from_dict(config(opt))
        assert resolve_schedule(cfg, validate_run(cfg)[1]) == want
    with pytest.raises(ConfigError, match="'cma' needs whole generations"):
        validate_run(run_config_from_dict(config({"name": "cma", "schedule": "steady_state"})))


def test_each_result_is_told_before_the_next_point_is_asked(tmp_path):
    run_search(run_config_from_dict(config(TPE)), tmp_path / "r")
    recs = records(tmp_path / "r")
    assert sorted(r["index"] for r in recs) == list(range(21))
    assert [r["index"] for r in recs] != list(range(21))  # completed out of ask order
    # two in flight: when a result is told, at most one other point is out (never a whole population ahead)
    assert all(r["n_asked"] <= r["eval_id"] + 2 for r in recs)
    assert [r["gen"] for r in sorted(recs, key=lambda r: r["index"])] == [i // 4 for i in range(21)]
    state, study, pending = saved_optimizer(tmp_path / "r")
    assert pending == [] and state["in_flight"] == [] and state["n_records"] == 21
    trials = {tuple(sorted(t.params.items())): t.values[0] for t in study.trials}
    assert len(study.trials) == 21
    for r in recs:  # the study holds exactly the ledger's points and (minimised) values
        assert trials[tuple(sorted(r["point"].items()))] == pytest.approx(-r["values"][0])


@pytest.mark.parametrize("crash_after", [1, 4, 9])
def test_crash_then_resume_loses_nothing_and_evaluates_nothing_twice(tmp_path, crash_after):
    run_dir = tmp_path / "r"
    with pytest.raises(RuntimeError, match="driver crashed"):
        run_search(run_config_from_dict(config(TPE, {"name": "test_two_slots",
                                                     "options": {"crash_after": crash_after}})), run_dir)
    before = records(run_dir)
    assert len(before) == crash_after
    # resume with a healthy executor (same run identity: executor options are part of it, so edit the config)
    cfg_path = run_dir / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace(f"crash_after: {crash_after}", "crash_after: null"))
    resume(run_dir)
    recs = records(run_dir)
    assert recs[:crash_after] == before
    assert [r["eval_id"] for r in recs] == list(range(21))
    assert sorted(r["index"] for r in recs) == list(range(21))
    _, study, pending = saved_optimizer(run_dir)
    assert pending == [] and len(study.trials) == 21
    assert sorted(tuple(sorted(t.params.items())) for t in study.trials) == \
        sorted(tuple(sorted(r["point"].items())) for r in recs)


def test_random_search_asks_the_same_points_whatever_the_completion_order(tmp_path):
    opt = {"name": "random", "population": 5}
    run_search(run_config_from_dict(config(opt, {"name": "local"})), tmp_path / "local")
    run_search(run_config_from_dict(config(opt)), tmp_path / "two")
    strip = ("eval_id", "time", "timings", "n_asked")
    key = {r["index"]: {k: v for k, v in r.items() if k not in strip} for r in records(tmp_path / "local")}
    assert key == {r["index"]: {k: v for k, v in r.items() if k not in strip} for r in records(tmp_path / "two")}


def test_budgets_in_steady_state(tmp_path):
    run_search(run_config_from_dict(config(TPE, budget={"generations": 2, "evaluations": 100})), tmp_path / "g")
    assert len(records(tmp_path / "g")) == 8
    cfg = config(TPE, budget={"wall_time_s": 0.3}, fitness={"kind": "synthetic", "tasks": ["a"], "sleep_s": 0.05})
    run_search(run_config_from_dict(cfg), tmp_path / "w")
    # no new point is asked once the wall time is spent; the ones out finish and are recorded
    assert 4 <= len(records(tmp_path / "w")) <= 10
    resume(tmp_path / "g", budget={"evaluations": 11, "generations": 10})
    assert [r["eval_id"] for r in records(tmp_path / "g")] == list(range(11))


def test_resuming_a_steady_state_run_as_generational_is_refused(tmp_path):
    run_search(run_config_from_dict(config(TPE, budget={"evaluations": 5})), tmp_path / "r")
    with pytest.raises(EvomergeError, match="different run"):
        run_search(run_config_from_dict(config({**TPE, "schedule": "generational"}, budget={"evaluations": 5})),
                   tmp_path / "r")
