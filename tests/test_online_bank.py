"""Online item bank: masked fits recover known 2PL items, racing spends fewer items on bad candidates,
kill -9 + resume reproduces the ledger, ``evomerge bank show / merge`` and their error lines."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from scipy.special import expit

from evomerge.fitness.irt.bank import ItemBank
from evomerge.fitness.irt.fit import fit_mirt_2pl
from evomerge.fitness.online.config import FidelityConfig, OnlineBankConfig
from evomerge.fitness.online.request import BankView, FitnessRequest, answer_request
from evomerge.run import run_config_from_dict, run_search
from evomerge.run.ledger import Ledger

from tests.test_run_resume import killed_run_matches_uninterrupted


def test_masked_fit_recovers_known_items_from_a_sparse_matrix():
    rng = np.random.default_rng(0)
    n_models, n_items = 600, 120
    a, b = rng.uniform(0.6, 2.0, n_items), rng.normal(0, 1, n_items)
    theta = rng.normal(0, 1, n_models)
    y = (rng.random((n_models, n_items)) < expit(np.outer(theta, a) - b)).astype(float)
    y[rng.random(y.shape) < 0.6] = np.nan  # 60% of the answers missing, as in a search's sparse matrix
    fit = fit_mirt_2pl(y, dim=1, seed=0)
    sign = np.sign(np.corrcoef(fit.a[:, 0], a)[0, 1])
    assert np.corrcoef(sign * fit.a[:, 0], a)[0, 1] > 0.8
    assert np.corrcoef(fit.b, b)[0, 1] > 0.95
    assert np.corrcoef(sign * fit.theta[:, 0], theta)[0, 1] > 0.9
    again = fit_mirt_2pl(y, dim=1, seed=0)  # deterministic: the same matrix gives the same fit
    assert np.array_equal(again.a, fit.a) and np.array_equal(again.b, fit.b)


def _bank(n=100):
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.8, 2.0, (n, 1)), rng.normal(0, 1, n)
    return BankView(tasks=["t"], item_ids={"t": list(range(n))}, a=a, b=b, mean=np.zeros(1), cov=np.eye(1)), a, b


def _answers_of(theta, a, b):
    u = np.random.default_rng(7).random(len(b))
    truth = (u < expit(a[:, 0] * theta - b)).astype(float)
    calls = []

    def evaluate(items):
        calls.append(sum(map(len, items.values())))
        return {t: {i: truth[i] for i in ids} for t, ids in items.items()}
    return evaluate, truth, calls


def test_racing_spends_fewer_items_on_clearly_bad_candidates():
    view, a, b = _bank()
    req = FitnessRequest(bank=view, levels=[8, 20], full_pool=True, threshold=0.7, z=1.0)
    n_items = {}
    for name, theta in (("bad", -2.0), ("good", 2.5)):
        evaluate, truth, _ = _answers_of(theta, a, b)
        vals, answers, fid = answer_request(req, evaluate, lambda: {"t": list(range(100))})
        n_items[name] = fid["items"]
        if name == "bad":
            assert fid["stopped"] and fid["level"] == 0 and vals["t"] < 0.5
        else:  # it could be among the best: it answered the whole pool, so its value is exact
            assert fid["level"] == "pool" and vals["t"] == pytest.approx(truth.mean()) and fid["se"] == 0
    assert n_items["bad"] == 8 and n_items["good"] == 100


def search_cfg(**fit):
    return {
        "name": "online-test", "seed": 3, "base": "/m/base", "models": ["/m/a", "/m/b", "/m/c"],
        "space": {"preset": "ties_layerwise", "num_layers": 4},
        "fitness": {"kind": "synthetic_irt", "tasks": ["a", "b", "c"], "items_per_task": 60,
                    "online": {"pool_per_task": 40}, "fidelity": {"levels": [4, 10], "top_k": 2, "z": 1.0}, **fit},
        "objectives": [{"metric": "mean"}],
        "optimizer": {"name": "cma", "population": 4},
        "budget": {"evaluations": 16},
    }


def test_online_search_records_fidelity_and_keeps_a_bank(tmp_path):
    run_search(run_config_from_dict(search_cfg()), tmp_path / "r")
    recs = Ledger(tmp_path / "r" / "ledger.jsonl").records()
    assert len(recs) == 17 and all(r["status"] == "ok" for r in recs)
    fid = [r["fidelity"] for r in recs]
    assert all(f["items"] == sum(map(len, r["item_results"].values())) for f, r in zip(fid, recs))
    assert {f["bank_rows"] for f in fid[:16]} == {0, 4, 8, 12}  # refitted every generation
    assert recs[16]["origin"] == "recommended" and fid[16]["bank_rows"] == 16  # after the budget: every row
    assert any(f["stopped"] for f in fid) and min(f["items"] for f in fid) == 12
    bank = ItemBank.load(tmp_path / "r" / "item_bank")
    assert sorted(bank.endpoints) == ["/m/a", "/m/b", "/m/base", "/m/c"] and bank.n_items == 120
    assert np.isnan(bank.responses).any()  # sparse: candidates answered a few pool items


@pytest.mark.parametrize("optimizer", [{"name": "cma", "population": 4},
                                       {"name": "optuna", "population": 4, "options": {"sampler": "tpe"}}])
def test_sigkill_then_resume_gives_the_uninterrupted_ledger_with_the_online_bank(tmp_path, optimizer):
    cfg = search_cfg(sleep_s=0.03)
    cfg["optimizer"] = optimizer
    killed_run_matches_uninterrupted(cfg, tmp_path, wait_s=240, timeout=600)  # slow start-up when loaded


def _cli(*args):
    from evomerge.cli import _load_verbs, cli

    _load_verbs()
    return CliRunner().invoke(cli, list(args))


def _toy_bank(folder, models, items, seed):
    rng = np.random.default_rng(seed)
    pop = {m: {"t": {i: float(rng.random() < 0.5) for i in items}} for m in models}
    from evomerge.fitness.irt.bank import fit_item_bank

    return fit_item_bank(pop, ["t"], dim=1, fingerprint={"tasks": ["t"]}).save(folder)


def test_bank_show_and_merge(tmp_path):
    a = _toy_bank(tmp_path / "a", ["m1", "m2", "m3"], range(0, 10), 0)
    b = _toy_bank(tmp_path / "b", ["m3", "m4"], range(5, 15), 1)
    res = _cli("bank", "show", str(a))
    assert res.exit_code == 0 and "t " in res.output and "m1, m2, m3" in res.output
    res = _cli("bank", "merge", str(a), str(b), str(tmp_path / "ab"))
    assert res.exit_code == 0, res.output
    merged = ItemBank.load(tmp_path / "ab")
    assert merged.models == ["m1", "m2", "m3", "m4"] and merged.item_ids["t"] == list(range(15))
    assert np.isnan(merged.responses[0, 10:]).all()  # m1 never saw B's new items
    s = json.loads(_cli("bank", "show", str(tmp_path / "ab"), "--json").output)
    assert s["tasks"]["t"]["items"] == 15 and s["models"] == ["m1", "m2", "m3", "m4"]


def test_bank_cli_bad_inputs_are_one_error_line(tmp_path):
    a = _toy_bank(tmp_path / "a", ["m1", "m2"], range(5), 0)
    other = tmp_path / "o"
    from evomerge.fitness.irt.bank import fit_item_bank

    fit_item_bank({"m": {"u": {0: 1.0, 1: 0.0}}, "n": {"u": {0: 0.0, 1: 1.0}}}, ["u"], dim=1).save(other)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bank.json").write_text("{not json")
    (tmp_path / "bad" / "bank.npz").write_bytes(b"junk")
    cases = [(["bank", "show", str(tmp_path / "nope")], "no item bank"),
             (["bank", "show", str(tmp_path / "bad")], "unreadable"),
             (["bank", "merge", str(a), str(other), str(tmp_path / "x")], "different tasks"),
             (["bank", "merge", str(a), str(a), str(a)], "not empty"),
             (["bank", "frobnicate"], "No such command")]
    for args, want in cases:
        proc = subprocess.run([sys.executable, "-m", "evomerge.cli", *args], capture_output=True, text=True)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and want in lines[0], \
            (args, proc.stderr)


def test_bank_show_does_not_import_torch(tmp_path):
    a = _toy_bank(tmp_path / "a", ["m1", "m2"], range(5), 0)
    code = ("import sys; from evomerge.cli import main\ntry:\n    main(['bank', 'show', sys.argv[1]])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules, 'lm_eval' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(a)], capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_online_configs_round_trip():
    f = FidelityConfig(levels=[8, 20], top_k=3, z=1.0)
    assert FidelityConfig.model_validate(yaml.safe_load(yaml.safe_dump(f.model_dump()))) == f
    o = OnlineBankConfig(pool_per_task=50, start_from="kept/bank")
    assert OnlineBankConfig.model_validate(yaml.safe_load(yaml.safe_dump(o.model_dump()))) == o
    with pytest.raises(ValueError):
        FidelityConfig(levels=[20, 8])
