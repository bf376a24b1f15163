"""Parity with mergekit on zoo models with per-layer / per-module coefficients (fp32, CPU).

The default run uses mergekit's in-process ``run_merge`` (one import, ~0.3 s per merge); the slow run calls
the real ``mergekit-yaml`` CLI on the YAML that ``to_mergekit_yaml`` writes.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from evomerge.merge import export_recipe, to_mergekit_yaml
from evomerge.recipe import recipe_from_dict

mergekit = pytest.importorskip("mergekit")

PARITY_METHODS = ["linear", "task_arithmetic", "ties", "slerp", "breadcrumbs"]


def load_folder(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(glob.glob(str(Path(path) / "*.safetensors"))):
        out.update(load_file(f))
    return out


def parity_recipe(method: str, zoo: Path):
    """Global, per-model, per-layer-range and per-module parameters all in play."""
    base, add, rev, srt = (str(zoo / n) for n in ("base", "add", "reverse", "sort"))
    if method == "slerp":
        return recipe_from_dict({
            "method": "slerp", "base": base, "models": [{"model": add}], "params": {"t": 0.3},
            "overrides": [{"layers": [1, 2], "params": {"t": 0.7}},
                          {"layers": [0, 1], "modules": ["mlp"], "params": {"t": 0.55}},
                          {"modules": ["lm_head"], "params": {"t": 0.9}}]})
    per_model = {"linear": {}, "task_arithmetic": {}, "ties": {"density": 0.6}, "breadcrumbs": {"density": 0.8,
                                                                                              "gamma": 0.05}}
    models = [{"model": add, "params": {"weight": 0.5, **per_model[method]}},
              {"model": rev, "params": {"weight": 0.3}},
              {"model": srt, "params": {"weight": 0.4}}]
    if method == "linear":
        models.insert(0, {"model": base, "params": {"weight": 0.2}})
    overrides = [{"layers": [1, 2], "params": {"weight": 0.8}},
                 {"layers": [0, 1], "modules": ["self_attn"], "model": srt, "params": {"weight": 0.1}},
                 {"modules": ["embed_tokens"], "params": {"weight": 0.25}}]
    if method in ("ties", "breadcrumbs"):
        overrides.append({"layers": [1, 2], "modules": ["mlp"], "model": rev, "params": {"density": 0.35}})
    params = {"lambda": 0.9} if method in ("task_arithmetic", "ties", "breadcrumbs") else {}
    if method == "breadcrumbs":
        params["density"] = 0.7
    return recipe_from_dict({"method": method, "base": base, "models": models, "params": params,
                             "overrides": overrides})


@pytest.fixture(scope="module")
def ours(ci_zoo, tmp_path_factory):
    root = tmp_path_factory.mktemp("ours")
    out = {}
    for m in PARITY_METHODS:
        export_recipe(parity_recipe(m, ci_zoo), root / m)
        out[m] = load_folder(root / m)
    return out


def assert_parity(ours: dict, theirs: dict, label: str) -> None:
    assert set(ours) == set(theirs), f"{label}: tensor names differ"
    worst = max((ours[k] - theirs[k].float()).abs().max().item() for k in ours)
    assert worst <= 1e-6, f"{label}: max |ours - mergekit| = {worst}"
    # the recipe must actually vary per layer, else parity would not test per-layer coefficients
    assert not torch.equal(ours["model.layers.0.mlp.up_proj.weight"], theirs["model.layers.1.mlp.up_proj.weight"])


def run_mergekit_inprocess(mk_yaml: str, out: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    cfg = MergeConfiguration.model_validate(yaml.safe_load(mk_yaml))
    run_merge(cfg, str(out), MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False))


@pytest.mark.parametrize("method", PARITY_METHODS)
def test_parity_with_mergekit_run_merge(method, ci_zoo, ours, tmp_path):
    run_mergekit_inprocess(to_mergekit_yaml(parity_recipe(method, ci_zoo)), tmp_path / "mk")
    assert_parity(ours[method], load_folder(tmp_path / "mk"), method)


@pytest.mark.slow
def test_parity_with_mergekit_yaml_cli(ci_zoo, ours, tmp_path):
    exe = shutil.which("mergekit-yaml") or str(Path(sys.executable).parent / "mergekit-yaml")

    def run(method: str) -> subprocess.CompletedProcess:
        cfg = tmp_path / f"{method}.yaml"
        cfg.write_text(to_mergekit_yaml(parity_recipe(method, ci_zoo)))
        return subprocess.run([exe, str(cfg), str(tmp_path / method), "--no-copy-tokenizer"],
                              capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(PARITY_METHODS, pool.map(run, PARITY_METHODS)))
    for method, res in results.items():
        assert res.returncode == 0, f"{method}: mergekit-yaml failed: {res.stderr[-2000:]}"
        assert_parity(ours[method], load_folder(tmp_path / method), f"{method} (CLI)")


def test_imported_mergekit_config_matches_mergekit(ci_zoo, tmp_path):
    """A classic mergekit slerp config (gradients + filters, slices) imported with from_mergekit_yaml."""
    from evomerge.merge import from_mergekit_yaml

    mk = f"""
slices:
  - sources:
      - model: {ci_zoo / 'base'}
        layer_range: [0, 2]
      - model: {ci_zoo / 'add'}
        layer_range: [0, 2]
merge_method: slerp
base_model: {ci_zoo / 'base'}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float32
"""
    recipe = from_mergekit_yaml(mk)
    export_recipe(recipe, tmp_path / "ours")
    run_mergekit_inprocess(mk, tmp_path / "mk")
    ours, theirs = load_folder(tmp_path / "ours"), load_folder(tmp_path / "mk")
    assert set(ours) == set(theirs)
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    assert worst <= 1e-6, worst


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_statistics_match_mergekit(method, ci_zoo, tmp_path):
    """Same kept fraction (density) and the same L1-preserving rescale as mergekit's DARE."""
    base, add = str(ci_zoo / "base"), str(ci_zoo / "add")
    recipe = recipe_from_dict({"method": method, "base": base, "seed": 1,
                               "models": [{"model": add, "params": {"weight": 1.0, "density": 0.4}}]})
    export_recipe(recipe, tmp_path / "ours")
    run_mergekit_inprocess(to_mergekit_yaml(recipe), tmp_path / "mk")
    b, a = load_folder(ci_zoo / "base"), load_folder(ci_zoo / "add")
    stats = {}
    for label in ("ours", "mk"):
        out = load_folder(tmp_path / label)
        kept = sum(int(((out[k] - b[k]) != 0).sum()) for k in out)
        total = sum(int(((a[k] - b[k]) != 0).sum()) for k in out)  # the zoo experts leave some entries as is
        l1_ratio = [float((out[k] - b[k]).abs().sum() / (a[k] - b[k]).abs().sum()) for k in out
                    if (a[k] - b[k]).abs().sum() > 0]
        stats[label] = (kept / total, min(l1_ratio), max(l1_ratio))
    for label, (frac, lo, hi) in stats.items():
        assert abs(frac - 0.4) < 0.02, (label, frac)
        assert 0.999 < lo <= hi < 1.001, (label, lo, hi)
    assert abs(stats["ours"][0] - stats["mk"][0]) < 0.02, stats


# ---- the mergekit user's path: a mergekit YAML given straight to `evomerge merge` ------------------------------

def evomerge_merge_cli(*args: str) -> str:
    from click.testing import CliRunner

    from evomerge.cli import cli

    res = CliRunner().invoke(cli, ["merge", *map(str, args)])
    assert res.exit_code == 0, res.output
    return res.output.strip().splitlines()[-1]


@pytest.mark.parametrize("method", PARITY_METHODS)
def test_mergekit_yaml_straight_to_evomerge_merge_matches_mergekit(method, ci_zoo, tmp_path):
    """No --from-mergekit: the config is detected by its merge_method; the weights equal mergekit's."""
    mk_yaml = to_mergekit_yaml(parity_recipe(method, ci_zoo))
    (tmp_path / "mk.yml").write_text(mk_yaml)
    line = evomerge_merge_cli(tmp_path / "mk.yml", tmp_path / "ours")
    n = 2 if method == "slerp" else 4
    assert line.startswith(f"merged {method} of {n} model(s)"), line
    run_mergekit_inprocess(mk_yaml, tmp_path / "mk")
    assert_parity(load_folder(tmp_path / "ours"), load_folder(tmp_path / "mk"), f"{method} (evomerge merge CLI)")


def test_mergekit_passthrough_yaml_to_evomerge_merge_matches_mergekit(ci_zoo, tmp_path):
    """Layer stacking: mergekit passthrough (slices of two models) through `evomerge merge`."""
    mk = f"""
slices:
  - sources:
      - model: {ci_zoo / 'add'}
        layer_range: [0, 2]
  - sources:
      - model: {ci_zoo / 'sort'}
        layer_range: [1, 2]
merge_method: passthrough
dtype: float32
"""
    (tmp_path / "stack.yml").write_text(mk)
    line = evomerge_merge_cli(tmp_path / "stack.yml", tmp_path / "ours")
    assert line.startswith("merged a data-flow path of 3 layer(s) from 2 model(s)"), line
    run_mergekit_inprocess(mk, tmp_path / "mk")
    ours, theirs = load_folder(tmp_path / "ours"), load_folder(tmp_path / "mk")
    assert set(ours) == set(theirs)
    assert max((ours[k] - theirs[k].float()).abs().max().item() for k in ours) == 0.0
    import json

    assert json.loads((tmp_path / "ours" / "config.json").read_text())["num_hidden_layers"] == 3


def test_evomerge_merge_takes_a_seed_for_dare(ci_zoo, tmp_path):
    mk = f"""
merge_method: dare_ties
base_model: {ci_zoo / 'base'}
models:
  - model: {ci_zoo / 'add'}
    parameters: {{weight: 1.0, density: 0.4}}
dtype: float32
"""
    (tmp_path / "dare.yml").write_text(mk)
    outs = {}
    for seed in ("0", "7", "7"):
        out = tmp_path / f"seed{seed}-{len(outs)}"
        evomerge_merge_cli(tmp_path / "dare.yml", out, "--seed", seed)
        outs[out.name] = load_folder(out)
        from evomerge.recipe import recipe_from_yaml

        assert recipe_from_yaml(str(out / "merge_recipe.yaml")).seed == int(seed)
    a, b, c = outs.values()
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(a[name], b[name]) and torch.equal(b[name], c[name])


# ---- dare / della with mergekit's random stream: the same masks, bit for bit ------------------------------------

RANDOM_METHODS = ["dare_ties", "dare_linear", "della", "della_linear"]


def random_recipe(method: str, zoo: Path, seed: int):
    """Per-model densities, per-layer / per-module overrides, and tensors where a source keeps everything
    (density 1: mergekit draws nothing there, so the stream must skip them too)."""
    base, add, rev, srt = (str(zoo / n) for n in ("base", "add", "reverse", "sort"))
    eps = {"epsilon": 0.1} if method.startswith("della") else {}
    models = [{"model": srt, "params": {"weight": 0.5, "density": 0.7, **eps}},  # not in name order
              {"model": add, "params": {"weight": 0.3, "density": 0.4, **eps}},
              {"model": rev, "params": {"weight": 0.4, "density": 0.55, **eps}}]
    overrides = [{"layers": [1, 2], "params": {"weight": 0.8}},
                 {"layers": [0, 1], "modules": ["mlp"], "model": rev, "params": {"density": 1.0}},
                 {"modules": ["embed_tokens"], "model": add, "params": {"density": 0.3}}]
    return recipe_from_dict({"method": method, "base": base, "models": models, "overrides": overrides,
                             "params": {"lambda": 0.9}, "seed": seed, "random_stream": "mergekit"})


@pytest.mark.parametrize("method", RANDOM_METHODS)
def test_mergekit_random_stream_through_evomerge_merge_equals_mergekit(method, ci_zoo, tmp_path):
    """`evomerge merge mk.yml out --seed S --random-stream mergekit` == mergekit's merge with random_seed S
    (what `mergekit-yaml mk.yml out --random-seed S` runs): max abs diff 0."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    mk_yaml = to_mergekit_yaml(random_recipe(method, ci_zoo, 0))
    (tmp_path / "mk.yml").write_text(mk_yaml)
    line = evomerge_merge_cli(tmp_path / "mk.yml", tmp_path / "ours", "--seed", "11", "--random-stream", "mergekit")
    assert "masks from mergekit's random stream (seed 11)" in line, line
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(mk_yaml)), str(tmp_path / "mk"),
              MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False, random_seed=11))
    ours, theirs = load_folder(tmp_path / "ours"), load_folder(tmp_path / "mk")
    assert set(ours) == set(theirs)
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    assert worst == 0.0, f"{method}: max |ours - mergekit| = {worst}"
    base = load_folder(ci_zoo / "base")
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"])


def test_mergekit_random_stream_in_memory_equals_export(ci_zoo, tmp_path):
    """The search's merge draws the export's masks, whatever order the tensors come in (here against
    mergekit's: every draw is first fast-forwarded over, then replayed)."""
    from evomerge.merge import InMemoryMerger
    from evomerge.merge.engine import geometry, row_writer
    from evomerge.merge.plan import MergePlan

    recipe = random_recipe("dare_ties", ci_zoo, 5)
    exported = load_folder(export_recipe(recipe, tmp_path / "out"))
    assert all(torch.equal(t, exported[n]) for n, t in InMemoryMerger(recipe.sources(), cache_budget=0)
               .merge_state_dict(recipe).items())
    merger = InMemoryMerger(recipe.sources(), cache_budget=0)
    plan = MergePlan(recipe, merger.ckpts)
    for name in sorted(plan.names, reverse=True):
        t = torch.empty(plan.shape(name))
        plan.merge(name, row_writer(t.view(geometry(t.shape))), merger.workspace, merger.cache)
        assert torch.equal(t, exported[name]), name
    evo = export_recipe(recipe.model_copy(update={"random_stream": "evomerge"}), tmp_path / "evo")
    assert not torch.equal(load_folder(evo)["model.norm.weight"], exported["model.norm.weight"])


@pytest.mark.slow
def test_mergekit_random_stream_matches_the_mergekit_yaml_cli(ci_zoo, tmp_path):
    exe = shutil.which("mergekit-yaml") or str(Path(sys.executable).parent / "mergekit-yaml")
    (tmp_path / "mk.yml").write_text(to_mergekit_yaml(random_recipe("dare_ties", ci_zoo, 0)))
    res = subprocess.run([exe, str(tmp_path / "mk.yml"), str(tmp_path / "mk"), "--random-seed", "3",
                          "--no-copy-tokenizer"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    evomerge_merge_cli(tmp_path / "mk.yml", tmp_path / "ours", "--seed", "3", "--random-stream", "mergekit")
    ours, theirs = load_folder(tmp_path / "ours"), load_folder(tmp_path / "mk")
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) == 0.0
