"""A battery of bad inputs, as a new user would make them: each ends in exactly one ``error:`` line, exit 2,
no traceback, and writes nothing (no run directory, no merge output). Broken model folders are built here
from the tiny Llama fixtures (truncated / garbled safetensors, config.json that is not JSON, shape and
architecture mismatches)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from evomerge.cli import cli

SYN = {"name": "bad", "base": "/m/base", "models": ["/m/a", "/m/b"],
       "space": {"preset": "ties_layerwise", "num_layers": 4}, "fitness": {"kind": "synthetic"},
       "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma", "population": 4},
       "budget": {"evaluations": 4}}
LM = {"kind": "lm_eval", "tasks": ["zoo_add"], "include_path": ["zoo"], "estimator": "full", "population": 0}


# 460 bytes whose aliases expand to 12 billion nodes (every later walk of the config would expand them)
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefghi", "bcdefghij"))


def inside_valid_config(block: str) -> str:
    """A valid job whose free-form ``architecture:`` mapping holds ``block`` (indented under it)."""
    return yaml.safe_dump(SYN) + "architecture:\n" + "".join(f"  {line}\n" for line in block.splitlines())


def syn(**kw):
    return {**SYN, **kw}


def lm(models, **kw):
    return {**SYN, "base": models["base"], "models": [models["a"], models["b"]], "fitness": {**LM, **kw}}


def opt(**kw):
    return {"name": "cma", "population": 4, **kw}


# (id, config) for `evomerge run CONFIG`: a mapping (written as YAML), a str (written verbatim), or a
# callable(models) -> mapping for the cases that need the broken model folders
CONFIGS = [
    ("yaml-broken", "name: [unclosed\nmodels: {"),
    ("yaml-not-mapping", "- a\n- b\n"),
    ("yaml-empty", ""),
    ("yaml-tab-indent", "name: x\n\tmodels: []\n"),
    ("yaml-alias-bomb", inside_valid_config(ALIAS_BOMB)),
    ("yaml-recursive-alias", inside_valid_config("a: &n [x, *n]")),
    ("yaml-nested-too-deep", inside_valid_config("a: " + "[" * 5000 + "]" * 5000)),
    ("yaml-oversized", inside_valid_config("a: 1\n" + "# padding\n" * 500_000)),
    ("unknown-key", syn(modles=["/m/a"])),
    ("models-wrong-type", syn(models=5)),
    ("models-empty", syn(models=[])),
    ("objectives-empty", syn(objectives=[])),
    ("objective-unknown-metric", syn(objectives=[{"metric": "accuracy"}])),
    ("objective-bad-direction", syn(objectives=[{"metric": "mean", "direction": "up"}])),
    ("objective-twice", syn(objectives=[{"metric": "mean"}, {"metric": "mean"}])),
    ("budget-missing", {k: v for k, v in SYN.items() if k != "budget"}),
    ("budget-zero", syn(budget={"evaluations": 0})),
    ("budget-wrong-type", syn(budget={"evaluations": "many"})),
    ("budget-empty", syn(budget={})),
    ("seed-wrong-type", syn(seed="abc")),
    ("seed-beyond-64-bits", syn(seed=2**70)),
    ("fitness-no-kind", syn(fitness={"tasks": ["a"]})),
    ("fitness-unknown-kind", syn(fitness={"kind": "bleu"})),
    ("fitness-extra-key", syn(fitness={"kind": "synthetic", "bogus": 1})),
    ("space-unknown-preset", syn(space={"preset": "nosuch"})),
    ("space-missing-file", syn(space="no/such/space.yaml")),
    ("space-bad-bounds", syn(space={"preset": "ties_layerwise", "num_layers": 4, "weight": {"low": 2, "high": 1}})),
    ("optimizer-unknown", syn(optimizer=opt(name="adam"))),
    ("optimizer-population-zero", syn(optimizer=opt(population=0))),
    ("optimizer-unknown-option", syn(optimizer=opt(options={"sigma": 0.3}))),
    ("tracker-unknown", syn(tracking=["tensorboardx"])),
    ("tracker-twice", syn(tracking=["mlflow", {"name": "mlflow"}])),
    ("tracker-unknown-option", syn(tracking=[{"name": "mlflow", "options": {"uri": "http://x"}}])),
    ("tracker-bad-mode", syn(tracking=[{"name": "wandb", "options": {"mode": "sometimes"}}])),
    ("tracker-not-a-list", syn(tracking="wandb")),
    ("cma-option-misspelled", syn(optimizer=opt(options={"cma_options": {"popsizee": 3}}))),
    ("cma-option-string", syn(optimizer=opt(options={"cma_options": {"tolfun": "1e-3"}}))),
    ("cma-option-code", syn(optimizer=opt(options={"cma_options": {"maxiter": "__import__('os').getcwd()"}}))),
    ("cma-sigma-out-of-bounds", syn(optimizer=opt(options={"sigma0": 2.0}))),
    ("cma-two-objectives", syn(objectives=[{"metric": "a"}, {"metric": "b"}])),
    ("cma-steady-state", syn(optimizer=opt(schedule="steady_state"))),
    ("optuna-unknown-sampler", syn(optimizer={"name": "optuna", "options": {"sampler": "bayes"}})),
    ("optuna-bad-sampler-option", syn(optimizer={"name": "optuna", "options": {"sampler_options": {"x": 1}}})),
    ("nevergrad-unknown", syn(optimizer={"name": "nevergrad", "options": {"name": "NoSuchOpt"}})),
    ("executor-unknown", syn(executor={"name": "slurm"})),
    ("ray-option-misspelled", syn(executor={"name": "ray", "options": {"num_worker": 2}})),
    ("ray-unreachable", syn(executor={"name": "ray", "options": {"address": "127.0.0.1:1"}})),
    ("ray-bad-address", syn(executor={"name": "ray", "options": {"address": "no port here"}})),
    ("ray-too-many-gpus", syn(executor={"name": "ray", "options": {"num_gpus": 64}})),
    ("ray-too-many-cpus", syn(executor={"name": "ray", "options": {"num_cpus": 4096}})),
    ("name-dotdot", syn(name="../../etc/x")),
    ("name-absolute", syn(name="/tmp/evomerge-abs")),
    ("name-code", syn(name="__import__('os').system('true')")),
    ("run-dir-absolute", syn(run_dir="/tmp/evomerge-elsewhere")),
    ("run-dir-escapes", syn(run_dir="../outside")),
    ("model-missing", lambda m: lm(m, ) | {"models": [m["a"], "/no/such/model"]}),
    ("model-no-config", lambda m: lm(m) | {"models": [m["a"], m["no_config"]]}),
    ("model-config-not-json", lambda m: lm(m) | {"models": [m["a"], m["bad_json"]]}),
    ("model-truncated-safetensors", lambda m: lm(m) | {"models": [m["a"], m["truncated"]]}),
    ("model-garbled-safetensors", lambda m: lm(m) | {"models": [m["a"], m["garbled"]]}),
    ("model-config-a-list", lambda m: lm(m) | {"models": [m["a"], m["list_config"]]}),
    ("model-index-not-json", lambda m: lm(m) | {"models": [m["a"], m["bad_index"]]}),
    ("model-shape-mismatch", lambda m: lm(m) | {"models": [m["a"], m["wide"]]}),
    ("model-arch-mismatch", lambda m: lm(m) | {"models": [m["a"], m["other_arch"]]}),
    ("model-zoo-bad-seed", lambda m: lm(m) | {"models": [m["a"], "zoo://ci@one/add"]}),
    ("fitness-include-path-missing", lambda m: lm(m, include_path=["no_such_task_folder"])),
    ("fitness-unknown-task", lambda m: lm(m, tasks=["zoo_addd"])),
    ("fitness-unknown-test-task", lambda m: lm(m, test_tasks=["zoo_nope_test"])),
]


@pytest.fixture(scope="module")
def broken_models(tiny_models, tmp_path_factory):
    """The tiny models plus broken copies of model ``b``."""
    root = tmp_path_factory.mktemp("broken")
    out = dict(tiny_models)

    def copy(name: str) -> Path:
        dst = root / name
        shutil.copytree(tiny_models["b"], dst)
        out[name] = str(dst)
        return dst

    (copy("no_config") / "config.json").unlink()
    (copy("bad_json") / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    shard = sorted(copy("truncated").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:200])
    shard = sorted(copy("garbled").glob("*.safetensors"))[0]
    shard.write_bytes(b"\x99" * 64 + shard.read_bytes()[64:])
    (copy("list_config") / "config.json").write_text("[1, 2]")
    (copy("bad_index") / "model.safetensors.index.json").write_text("{not json")
    cfg_path = copy("other_arch") / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    cfg_path.write_text(json.dumps(cfg))
    from tiny_llama import make_tiny_llama

    make_tiny_llama(root / "wide", 9, hidden=48)
    out["wide"] = str(root / "wide")
    return out


def assert_one_error(res, *must_not_exist: Path) -> str:
    text = res.output + (res.stderr if res.stderr_bytes is not None and res.stderr not in res.output else "")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert res.exit_code == 2, text
    assert len(errors) == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert not any("gen 0" in ln or ln.startswith("WARNING") for ln in lines), text
    for p in must_not_exist:
        assert not p.exists(), f"{p} was written: {text}"
    return errors[0]


# every case through `run`; through `check` too, except the model folder and task cases (callables: the same
# preflight code, and the slowest cases)
RUN_CHECK = [("run", c) for c in CONFIGS] + [("check", c) for c in CONFIGS if not callable(c[1])]


@pytest.mark.parametrize("verb, case", RUN_CHECK, ids=[f"{v}-{c[0]}" for v, c in RUN_CHECK])
def test_bad_config_is_one_error_line_and_writes_nothing(verb, case, broken_models, tmp_path, monkeypatch):
    name, cfg = case
    monkeypatch.chdir(tmp_path)
    if callable(cfg):
        cfg = cfg(broken_models)
    path = tmp_path / "job.yaml"
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    res = CliRunner().invoke(cli, [verb, str(path)])
    assert_one_error(res, tmp_path / "runs", Path("/tmp/evomerge-abs"), Path("/tmp/evomerge-elsewhere"),
                     tmp_path.parent / "outside")


def test_a_missing_task_folder_names_the_shipped_ones(broken_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(lm(broken_models, include_path=["zooo"])))
    line = assert_one_error(CliRunner().invoke(cli, ["run", "job.yaml"]), tmp_path / "runs")
    assert "fitness folder 'zooo' is neither a path nor a shipped name (shipped: zoo)" in line


def test_a_bad_model_file_is_named(broken_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(lm(broken_models) | {"models": [broken_models["truncated"]]}))
    line = assert_one_error(CliRunner().invoke(cli, ["run", "job.yaml"]), tmp_path / "runs")
    assert str(sorted(Path(broken_models["truncated"]).glob("*.safetensors"))[0]) in line


@pytest.mark.parametrize("argv, words", [
    (["plan", "job.yaml", "--gpus", "-1"], "Invalid value for '--gpus': -1 is not in the range x>=0"),
    (["plan", "job.yaml", "--gpu-memory", "lots"], "cannot read --gpu-memory 'lots'"),
    (["plan", "job.yaml", "--host-memory", "-2GB"], "cannot read --host-memory '-2GB'"),
    (["check", "job.yaml"], "cache_budget must be positive, got -3"),
])
def test_sizes_are_named_as_the_user_wrote_them(broken_models, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(lm(broken_models, cache_budget=-3 if argv[0] == "check" else 0)))
    assert words in assert_one_error(CliRunner().invoke(cli, argv), tmp_path / "runs")


@pytest.mark.parametrize("argv, fitness", [
    (["plan", "gpu_llama_ties"], None), (["plan", "gpu_llama_ties", "--gpus", "0"], None),
    (["check", "job.yaml"], {"device": "cuda"}), (["run", "job.yaml"], {"device": "cuda"}),
    (["plan", "job.yaml"], {"device": "cuda:0"}),
])
def test_a_gpu_job_on_a_node_without_gpus_is_refused_before_anything_runs(broken_models, tmp_path, monkeypatch,
                                                                         argv, fitness):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    if fitness is not None:
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(lm(broken_models, **fitness)))
    line = assert_one_error(CliRunner().invoke(cli, argv), tmp_path / "runs")
    assert "this node shows none" in line and "device: cpu and num_gpus: 0" in line


@pytest.mark.parametrize("verb", ["check", "run"])
def test_a_space_with_more_layers_than_the_model_is_refused_before_anything_runs(broken_models, tmp_path,
                                                                                 monkeypatch, verb):
    monkeypatch.chdir(tmp_path)
    job = lm(broken_models) | {"space": {"preset": "ties_layerwise", "num_layers": 40}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    line = assert_one_error(CliRunner().invoke(cli, [verb, "job.yaml"]), tmp_path / "runs")
    assert "is outside the model (4 layers: model.layers.0..3)" in line and len(line) < 300


ARCH = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
        "intermediate_size": 128, "vocab_size": 100}


@pytest.mark.parametrize("arch, words", [
    ({**ARCH, "model_type": "nosuch"}, "unknown model_type 'nosuch' (e.g. llama"),
    ({**ARCH, "model_type": "lama"}, "unknown model_type 'lama' (did you mean: llama"),
    ({**ARCH, "num_attention_heads": 0}, "num_attention_heads must be a positive whole number, got 0"),
    ({**ARCH, "hidden_size": "lots"}, "hidden_size must be a positive whole number, got 'lots'"),
    ({**ARCH, "num_attention_heads": 5}, "hidden size (64) is not a multiple of the number of attention heads (5)"),
], ids=["unknown", "near-miss", "zero-heads", "not-a-number", "heads-do-not-divide"])
def test_plan_of_a_bad_architecture_block_is_one_short_line(tmp_path, monkeypatch, arch, words):
    """Models not on this machine are planned from ``architecture:``; a bad block is one line of at most a few
    hundred characters, never the list of every transformers model type or an internal error."""
    monkeypatch.chdir(tmp_path)
    job = {**syn(fitness=LM, base="org/base", models=["org/a", "org/b"]), "architecture": arch}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    line = assert_one_error(CliRunner().invoke(cli, ["plan", "job.yaml", "--gpus", "1", "--gpu-memory", "80GB"]))
    assert words in line and len(line) < 400


def test_a_failed_preflight_leaves_the_corrected_config_free_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(syn(executor={"name": "slurm"})))
    assert_one_error(CliRunner().invoke(cli, ["run", "job.yaml"]), tmp_path / "runs")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(syn()))
    res = CliRunner().invoke(cli, ["run", "job.yaml"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "bad" / "ledger.jsonl").exists()


def test_run_dir_holding_another_run_is_refused_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(syn()))
    assert CliRunner().invoke(cli, ["run", "job.yaml"]).exit_code == 0
    before = (tmp_path / "runs" / "bad" / "config.yaml").read_text()
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(syn(seed=9)))
    line = assert_one_error(CliRunner().invoke(cli, ["run", "job.yaml"]))
    assert "already holds a different run (differs in: seed)" in line
    assert (tmp_path / "runs" / "bad" / "config.yaml").read_text() == before


@pytest.mark.parametrize("argv", [
    ["status", "{tmp}/nowhere"], ["status", "{tmp}/empty"], ["resume", "{tmp}/empty"],
    ["resume", "{tmp}/nowhere"], ["export", "{tmp}/empty", "{tmp}/out"], ["run", "{tmp}/missing.yaml"],
    ["check", "{tmp}/missing.yaml"], ["run", "{tmp}/job.yaml", "--run-dir", "{tmp}/afile"],
    ["zoo", "report", "{tmp}/empty"], ["zoo", "build", "--skills", "add"], ["nosuchverb"],
    ["run"], ["status", "{tmp}/empty", "--top", "many"],
    ["bank", "show", "{tmp}/nowhere"], ["bank", "show", "{tmp}/empty"], ["bank", "show", "{tmp}/afile"],
    ["bank", "merge", "{tmp}/empty", "{tmp}/nowhere", "{tmp}/out"],
    ["dashboard", "{tmp}/nowhere"], ["dashboard", "{tmp}/empty"], ["dashboard", "{tmp}/empty", "--port", "99999"],
    ["report", "{tmp}/nowhere"], ["report", "{tmp}/empty"],
], ids=lambda a: "-".join(x.replace("{tmp}/", "") for x in a))
def test_bad_cli_arguments_are_one_error_line(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(syn()))
    res = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in argv])
    assert_one_error(res, tmp_path / "runs", tmp_path / "out")


def _recipe(models, **kw):
    return {"method": "ties", "base": models["base"],
            "models": [{"model": models["a"], "params": {"weight": 0.5}},
                       {"model": models["b"], "params": {"weight": 0.5}}],
            "params": {"density": 0.5}, **kw}


MERGES = [
    ("missing-file", None),
    ("yaml-broken", "method: [ties"),
    ("yaml-alias-bomb", ALIAS_BOMB),
    ("not-a-mapping", "- ties\n"),
    ("unknown-method", lambda m: _recipe(m, method="frankenmerge")),
    ("unknown-kind", lambda m: _recipe(m, kind="quantum")),
    ("bad-density", lambda m: _recipe(m, params={"density": 1.5})),
    ("model-missing", lambda m: _recipe(m, base="/no/such/base")),
    ("model-truncated", lambda m: _recipe(m, base=m["truncated"])),
    ("model-config-not-json", lambda m: _recipe(m, base=m["bad_json"])),
    ("model-shape-mismatch", lambda m: _recipe(m, base=m["wide"])),
    ("mergekit-unknown-method", lambda m: {"merge_method": "model_stock_plus", "models": [{"model": m["a"]}]}),
    ("mergekit-bad-passthrough", lambda m: {"merge_method": "passthrough", "slices": [{"sources": []}]}),
    ("mergekit-truncated-model", lambda m: {"merge_method": "linear", "models": [
        {"model": m["a"], "parameters": {"weight": 0.5}}, {"model": m["truncated"], "parameters": {"weight": 0.5}}]}),
    ("dataflow-unknown-model", lambda m: {"kind": "dataflow", "models": {"a": m["a"]}, "path": [["b", 0]]}),
    ("seed-beyond-64-bits", lambda m: _recipe(m, method="dare_ties", seed=2**70, random_stream="mergekit")),
    ("mergekit-models-bare-strings", lambda m: {"merge_method": "linear", "models": [m["a"], m["b"]]}),
]


@pytest.mark.parametrize("case", MERGES, ids=[c[0] for c in MERGES])
def test_bad_merge_input_is_one_error_line_and_writes_nothing(case, broken_models, tmp_path):
    name, recipe = case
    path = tmp_path / "recipe.yaml"
    if recipe is not None:
        if callable(recipe):
            recipe = recipe(broken_models)
        path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    res = CliRunner().invoke(cli, ["merge", str(path), str(tmp_path / "out")])
    assert_one_error(res, tmp_path / "out")


def test_an_output_folder_below_a_file_is_one_error_line(broken_models, tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(_recipe(broken_models)))
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "recipe.yaml"), str(tmp_path / "afile" / "out")])
    assert f"{tmp_path / 'afile'} is a file, not a folder" in assert_one_error(res)


def test_same_size_tokenizers_that_number_tokens_differently_are_refused(ci_zoo, tmp_path):
    """Row counts agree, token ids do not (two tokens swapped): merging by id would mix the two tokens' rows."""
    import json
    import shutil

    shutil.copytree(ci_zoo / "add", tmp_path / "swapped")
    tok = json.loads((tmp_path / "swapped" / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (tmp_path / "swapped" / "tokenizer.json").write_text(json.dumps(tok))
    recipe = {"method": "task_arithmetic", "base": str(ci_zoo / "base"),
              "models": [{"model": str(ci_zoo / "reverse")}, {"model": str(tmp_path / "swapped")}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "recipe.yaml"), str(tmp_path / "out")])
    assert "tokenizers disagree on token id" in assert_one_error(res, tmp_path / "out")


@pytest.mark.parametrize("verb", ["merge", "check"])
def test_a_config_vocab_size_that_disagrees_with_the_embedding_is_refused(ci_zoo, tmp_path, monkeypatch, verb):
    import json
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(ci_zoo / "add", tmp_path / "odd")
    conf = json.loads((tmp_path / "odd" / "config.json").read_text())
    rows, conf["vocab_size"] = conf["vocab_size"], conf["vocab_size"] + 2
    (tmp_path / "odd" / "config.json").write_text(json.dumps(conf))
    models = [str(ci_zoo / "reverse"), str(tmp_path / "odd")]
    if verb == "merge":
        recipe = {"method": "task_arithmetic", "base": str(ci_zoo / "base"), "models": [{"model": m} for m in models]}
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(recipe))
        argv = ["merge", "job.yaml", "out"]
    else:
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(syn(fitness=LM, base=str(ci_zoo / "base"), models=models)))
        argv = ["check", "job.yaml"]
    line = assert_one_error(CliRunner().invoke(cli, argv), tmp_path / "out", tmp_path / "runs")
    assert f"config.json says vocab_size {rows + 2}, but lm_head.weight has {rows} rows" in line


def test_merge_from_mergekit_flag_on_an_evomerge_recipe(broken_models, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(broken_models)))
    res = CliRunner().invoke(cli, ["merge", str(path), str(tmp_path / "out"), "--from-mergekit"])
    assert "is not a mergekit config" in assert_one_error(res, tmp_path / "out")


def test_an_internal_error_is_one_line_with_a_log_file(tmp_path, monkeypatch):
    import evomerge.run.preflight as pf

    def boom(*a, **k):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(pf, "preflight", boom)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(syn()))
    res = CliRunner().invoke(cli, ["check", "job.yaml"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: internal error (ZeroDivisionError: deliberate); traceback in ")
    log = Path(lines[0].rsplit(" ", 1)[1])
    assert "Traceback" in log.read_text() and "deliberate" in log.read_text()


def test_an_error_mid_run_leaves_no_progress_bar(tmp_path, monkeypatch):
    """The bar is up (candidates done) when the error comes: only the error line remains."""
    from evomerge.errors import EvomergeError
    from evomerge.run.context import SearchContext

    def fail(self, *a, **k):
        raise EvomergeError("cannot write checkpoint: disk full")

    monkeypatch.setattr(SearchContext, "checkpoint", fail)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(syn()))
    res = CliRunner().invoke(cli, ["run", "job.yaml"])
    assert [ln for ln in res.output.splitlines() if ln.strip()] == ["error: cannot write checkpoint: disk full"]


@pytest.mark.parametrize("arch", ["GPT-2", "GPT-NeoX"])
def test_a_module_filter_the_architecture_does_not_use_is_refused(arch, tmp_path, monkeypatch):
    """``self_attn`` names nothing in GPT-2 (attn.c_attn) or NeoX (attention.query_key_value): the group would
    silently keep the model-level weight. The shipped presets name the role instead, and pass."""
    from test_architectures import make_set

    monkeypatch.chdir(tmp_path)
    m = make_set(tmp_path / "models", arch, "float32")
    job = {**SYN, "base": m["base"], "models": [m["ft1"], m["ft2"]], "fitness": LM,
           "space": {"preset": "ties_attn_mlp", "modules": [["self_attn"], ["mlp"]]}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    line = assert_one_error(CliRunner().invoke(cli, ["check", "job.yaml"]), tmp_path / "runs")
    assert "module filter 'self_attn' matches no tensor" in line and "attention" in line
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({**job, "space": {"preset": "ties_attn_mlp"}}))
    res = CliRunner().invoke(cli, ["check", "job.yaml"])
    assert res.exit_code == 0, res.output


def test_a_task_yaml_alias_bomb_in_the_include_path_is_refused(ci_zoo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "bomb.yaml").write_text("task: bomb\n" + ALIAS_BOMB)
    job = {**syn(fitness={**LM, "include_path": [str(tmp_path / "tasks")]}), "base": "zoo://ci/base",
           "models": ["zoo://ci/add", "zoo://ci/sort"], "space": {"preset": "ties_layerwise"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    line = assert_one_error(CliRunner().invoke(cli, ["check", "job.yaml"]), tmp_path / "runs")
    assert "bomb.yaml is too large" in line


def test_items_per_task_beyond_the_split_then_the_corrected_config_runs_in_the_same_folder(ci_zoo, tmp_path,
                                                                                         monkeypatch):
    """A task's size is known only once lm-eval builds it (in the worker): the run stops with one line before
    any candidate, and its folder, which holds no result, takes the corrected config."""
    monkeypatch.chdir(tmp_path)
    fit = {**LM, "estimator": "subset_mean", "anchors": "random", "gen_kwargs": {"max_gen_toks": 5}}
    job = {**syn(fitness={**fit, "items_per_task": 100_000}, base="zoo://ci/base",
                 models=["zoo://ci/add", "zoo://ci/sort"]), "space": {"preset": "ties_layerwise"},
           "budget": {"evaluations": 2}, "finalists": {"top": 0, "recommended": False}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    line = assert_one_error(CliRunner().invoke(cli, ["run", "job.yaml"]))
    assert "which has only 1000 items" in line
    assert not (tmp_path / "runs" / "bad" / "ledger.jsonl").exists()
    job["fitness"]["items_per_task"] = 5
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    res = CliRunner().invoke(cli, ["run", "job.yaml"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "runs" / "bad" / "ledger.jsonl").read_text().splitlines()) == 2


def test_plan_takes_a_staged_job_that_check_takes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["plan", "zoo_ps_dfs", "--host-memory", "16GB"])
    assert res.exit_code == 0, res.output
    assert "stage ps:" in res.output and "stage dfs (best_of ps planned as that stage's lead model):" in res.output
