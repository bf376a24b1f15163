"""Hub model names, offline, through a Hugging Face cache built from the CI zoo in huggingface_hub's own layout:
resolution, ``check`` / ``plan`` / ``merge`` / ``run`` / kill -9 + ``resume`` / ``export``, pinned commits, and the
refusals (not cached, a pinned commit gone, a pickle-only repository, header-only folders)."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

from evomerge.cli import cli
from evomerge.errors import EvomergeError
from evomerge.models import hub as hub_mod
from evomerge.models import resolve_model
from hub_cache import seed_hub_cache

LM = {"kind": "lm_eval", "tasks": ["zoo_add"], "include_path": ["zoo"], "estimator": "subset_mean",
      "anchors": "random", "items_per_task": 12, "test_tasks": ["zoo_add_test"], "gen_kwargs": {"max_gen_toks": 5}}


@pytest.fixture
def hub(ci_zoo, tmp_path, monkeypatch):
    """``org/base``, ``org/add``, ``org/sort``, ``org/reverse`` in a fresh offline hub cache."""
    cache = tmp_path / "hf-cache"
    commits = {n: seed_hub_cache(cache, f"org/{n}", ci_zoo / n) for n in ("base", "add", "sort", "reverse")}
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_mod, "_PINS", {})
    monkeypatch.chdir(tmp_path)
    return SimpleNamespace(cache=cache, commits=commits, zoo=ci_zoo)


def job(**kw):
    return {"name": "hubjob", "seed": 1, "base": "org/base", "models": ["org/add", "org/sort"],
            "space": {"preset": "ties_layerwise"}, "fitness": LM, "objectives": [{"metric": "mean"}],
            "optimizer": {"name": "cma", "population": 3, "warm_start": "none"}, "budget": {"evaluations": 6},
            "finalists": {"top": 0, "recommended": False}, **kw}


def one_error(res) -> str:
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


def test_names_revisions_and_commits_resolve_to_the_cached_snapshot(hub):
    snap = hub.cache / "models--org--add" / "snapshots" / hub.commits["add"]
    for ref in ("org/add", "org/add@main", f"org/add@{hub.commits['add']}"):
        assert Path(resolve_model(ref)) == snap
    assert hub_mod.pin("org/add") == f"org/add@{hub.commits['add']}"
    assert hub_mod.pin(str(hub.zoo / "add")) == str(hub.zoo / "add")  # local folders are never pinned


def test_a_model_not_in_the_cache_offline_is_one_line_naming_it_and_what_to_do(hub, tmp_path):
    with pytest.raises(EvomergeError) as ei:
        resolve_model("org/missing")
    msg = str(ei.value)
    assert "org/missing" in msg and "HF_HUB_OFFLINE" in msg and "hf download org/missing" in msg and "\n" not in msg
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job(models=["org/add", "org/missing"])))
    for verb in ("check", "plan", "run"):
        assert "org/missing" in one_error(CliRunner().invoke(cli, [verb, "job.yaml"]))
    assert not (tmp_path / "runs").exists()


def test_check_plan_and_merge_take_hub_names_and_the_merge_records_the_commits(hub, tmp_path):
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job()))
    res = CliRunner().invoke(cli, ["check", "job.yaml"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["plan", "job.yaml"])
    assert res.exit_code == 0 and "hub downloads" not in res.output, res.output  # all in the cache
    recipe = {"method": "task_arithmetic", "base": "org/base",
              "models": [{"model": "org/add", "params": {"weight": 0.7}}, {"model": "org/sort@main"}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    res = CliRunner().invoke(cli, ["merge", "r.yaml", "out"])
    assert res.exit_code == 0, res.output
    written = yaml.safe_load((tmp_path / "out" / "merge_recipe.yaml").read_text())
    assert written["base"] == f"org/base@{hub.commits['base']}"
    assert [m["model"] for m in written["models"]] == [f"org/add@{hub.commits['add']}",
                                                       f"org/sort@{hub.commits['sort']}"]
    assert f"org/add@{hub.commits['add']}" in (tmp_path / "out" / "mergekit_config.yml").read_text()
    assert "base_model: [org/base, org/add, org/sort]" in (tmp_path / "out" / "README.md").read_text()
    # the same merge from the local folders gives the same bits
    local = {**recipe, "base": str(hub.zoo / "base"),
             "models": [{"model": str(hub.zoo / "add"), "params": {"weight": 0.7}}, {"model": str(hub.zoo / "sort")}]}
    (tmp_path / "l.yaml").write_text(yaml.safe_dump(local))
    assert CliRunner().invoke(cli, ["merge", "l.yaml", "out_local"]).exit_code == 0
    shards = [sorted((tmp_path / d).glob("*.safetensors")) for d in ("out", "out_local")]
    assert shards[0] and [p.read_bytes() for p in shards[0]] == [p.read_bytes() for p in shards[1]]


def _stable(run_dir):
    from evomerge.run.ledger import Ledger

    return [{k: v for k, v in r.items() if k not in ("time", "timings")} for r in Ledger(Path(run_dir) / "ledger.jsonl")]


def test_kill_and_resume_keep_the_pinned_commits_when_main_moves(hub, tmp_path):
    """A run pins each hub model to the commit main named at its start; after kill -9, main moves to other
    weights, and the resumed run still merges the pinned commit: its ledger equals the uninterrupted run's."""
    from test_run_resume import _spawn, kill_at_ledger_sizes

    from evomerge.run import run_config_from_dict, run_search

    run_search(run_config_from_dict(job()), tmp_path / "ref")
    reference = _stable(tmp_path / "ref")
    assert len(reference) == 6
    stored = yaml.safe_load((tmp_path / "ref" / "config.yaml").read_text())
    assert stored["models"] == [f"org/add@{hub.commits['add']}", f"org/sort@{hub.commits['sort']}"]
    assert reference[0]["recipe"]["models"][0]["model"] == f"org/add@{hub.commits['add']}"

    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job()))
    killed, args = kill_at_ledger_sizes(tmp_path / "job.yaml", tmp_path / "killed", [2], wait_s=120)
    moved = seed_hub_cache(hub.cache, "org/add", hub.zoo / "reverse")  # main now holds other weights
    assert moved != hub.commits["add"]
    proc = _spawn(args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    assert killed == 1 and _stable(tmp_path / "killed") == reference
    # `evomerge run` again on the same folder also keeps the run's pins (it is the same run, not a new one)
    res = CliRunner().invoke(cli, ["run", "job.yaml", "--run-dir", "killed"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["export", "killed", "exported", "--materialize"])
    assert res.exit_code == 0, res.output
    text = "".join(p.read_text() for p in (tmp_path / "exported").rglob("*") if p.suffix in (".yaml", ".yml", ".md"))
    assert f"org/add@{hub.commits['add']}" in text and moved not in text
    assert "base_model: [org/base, org/add, org/sort]" in text  # the exported model's card

    # the pinned commit gone from the cache: resume refuses in one line naming the model and both commits
    shutil.rmtree(hub.cache / "models--org--add" / "snapshots" / hub.commits["add"])
    line = one_error(CliRunner().invoke(cli, ["resume", "killed", "--evaluations", "8"]))
    assert "org/add" in line and hub.commits["add"] in line and moved in line


def test_a_pickle_only_repository_is_refused_before_anything_is_read(hub, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(hub.zoo / "add" / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02not really a pickle")
    seed_hub_cache(hub.cache, "org/pickled", pickled)
    with pytest.raises(EvomergeError, match="org/pickled has no safetensors weights .*pickle-only"):
        resolve_model("org/pickled")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job(models=["org/add", "org/pickled"])))
    assert "pickle-only" in one_error(CliRunner().invoke(cli, ["check", "job.yaml"]))


def test_gated_and_unknown_repositories_are_one_line(hub, monkeypatch):
    import httpx
    from huggingface_hub import errors

    response = httpx.Response(403, request=httpx.Request("GET", "https://huggingface.co/api/models/org/gated"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for exc, words in [(errors.GatedRepoError("gated", response=response), "is gated on the Hub"),
                       (errors.RepositoryNotFoundError("404", response=response), "neither a local folder nor")]:
        def raise_it(*a, _exc=exc, **k):
            raise _exc
        monkeypatch.setattr("huggingface_hub.snapshot_download", raise_it)
        with pytest.raises(EvomergeError, match=words):
            resolve_model("org/gated")


def test_check_and_plan_read_headers_only_when_the_weights_are_not_cached(hub, tmp_path, monkeypatch):
    """Online, with only config and tokenizer in the cache: check and plan read the safetensors headers (range
    requests, faked here from the zoo's files) and fetch no weights; the plan equals the one from full folders."""
    from huggingface_hub.utils import SafetensorsFileMetadata, SafetensorsRepoMetadata, TensorInfo

    from evomerge.models.safetensors_io import LazyCheckpoint, read_header

    small = ["config.json", "generation_config.json", "tokenizer*"]
    for n in ("base", "add", "sort"):
        seed_hub_cache(hub.cache, f"remote/{n}", hub.zoo / n, only=small)
    asked = []

    def fake_metadata(repo_id, revision=None, **_):
        asked.append(repo_id)
        meta, _ = read_header(hub.zoo / repo_id.split("/")[1] / "model.safetensors")
        tensors = {k: TensorInfo(dtype=v["dtype"], shape=v["shape"], data_offsets=tuple(v["data_offsets"]))
                   for k, v in meta.items()}
        return SafetensorsRepoMetadata(metadata=None, sharded=False, weight_map={k: "model.safetensors" for k in meta},
                                       files_metadata={"model.safetensors": SafetensorsFileMetadata(metadata={},
                                                                                                    tensors=tensors)})

    monkeypatch.setattr("huggingface_hub.get_safetensors_metadata", fake_metadata)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: every Hub call fails at once
    remote = job(base="remote/base", models=["remote/add", "remote/sort"])
    (tmp_path / "remote.yaml").write_text(yaml.safe_dump(remote))
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(job()))
    res = CliRunner().invoke(cli, ["check", "remote.yaml"])
    assert res.exit_code == 0, res.output
    plans = [CliRunner().invoke(cli, ["plan", f, "--host-memory", "8GB"]) for f in ("remote.yaml", "local.yaml")]
    assert all(p.exit_code == 0 for p in plans), plans[0].output
    assert "hub downloads" in plans[0].output and "hub downloads" not in plans[1].output
    strip = [[ln for ln in p.output.splitlines() if "hub downloads" not in ln] for p in plans]
    assert strip[0] == strip[1]
    assert sorted(set(asked)) == ["remote/add", "remote/base", "remote/sort"]
    # a cache disk too small: refused for this node; a plan for another node (sizes given) only says so
    import shutil
    with monkeypatch.context() as m:
        m.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
        for argv in (["check", "remote.yaml"], ["plan", "remote.yaml"]):
            line = one_error(CliRunner().invoke(cli, argv))
            assert "still to fetch" in line and "HF_HUB_CACHE" in line
        res = CliRunner().invoke(cli, ["plan", "remote.yaml", "--host-memory", "8GB"])
        assert res.exit_code == 0 and "(0 GB free here)" in res.output, res.output
    assert not any(p.name.endswith(".safetensors") for n in ("base", "add", "sort")
                   for p in (hub.cache / f"models--remote--{n}").rglob("*"))
    # a header-only folder never gives tensor data
    with hub_mod.headers_only():
        ck = LazyCheckpoint("remote/add")
    with pytest.raises(EvomergeError, match="only the headers"):
        ck.get(ck.names()[0])
    # a merge, which needs the weights, cannot fetch them here: one line naming the model, nothing written
    recipe = {"method": "linear", "models": [{"model": "remote/add"}, {"model": "remote/sort"}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    line = one_error(CliRunner().invoke(cli, ["merge", "r.yaml", "out"]))
    assert "remote/add" in line and "not in the Hugging Face cache" in line and not (tmp_path / "out").exists()


def test_ray_actors_follow_the_drivers_hub_settings(monkeypatch):
    from evomerge.execution.ray_cluster import hub_env, parse_options

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert hub_env(parse_options({})) == {"HF_HUB_OFFLINE": "1"}
    assert hub_env(parse_options({"hf_hub_cache": "/shared/hf"})) == {"HF_HUB_OFFLINE": "1",
                                                                       "HF_HUB_CACHE": "/shared/hf"}
