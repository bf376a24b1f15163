"""Data-flow merging on the CI zoo's trained models: exactness of the export, and lm-eval through the wrapper."""

import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from evomerge.dataflow import SourceModels, build_path_model, export_dataflow
from evomerge.recipe import recipe_from_dict

EXPERTS = ("base", "add", "reverse", "sort")


@pytest.fixture(scope="module")
def sources():
    return SourceModels()


def zoo_recipe(path, **kw):
    names = sorted({m for m, *_ in path} | {kw.get("embed"), kw.get("head")} - {None})
    return recipe_from_dict({"kind": "dataflow", "models": {n: f"zoo://ci/{n}" for n in names}, "path": path, **kw})


def prompts(ci_zoo):
    tok = AutoTokenizer.from_pretrained(ci_zoo / "add")
    tok.padding_side = "left"
    return tok(["12+34=", "reverse: abc ->", "sort: 3 1 2 ->"], return_tensors="pt", padding=True)


def test_whole_zoo_model_path_is_exact(ci_zoo, sources):
    ref = AutoModelForCausalLM.from_pretrained(ci_zoo / "add").eval()
    r = zoo_recipe([["add", i] for i in range(ref.config.num_hidden_layers)])
    batch = prompts(ci_zoo)
    with torch.no_grad():
        assert torch.equal(build_path_model(r, sources)(**batch).logits, ref(**batch).logits)


@pytest.mark.parametrize("seed", range(3))
def test_random_scaled_paths_export_exactly(ci_zoo, sources, tmp_path, seed):
    rng = random.Random(seed)
    n_layers = AutoModelForCausalLM.from_pretrained(ci_zoo / "base").config.num_hidden_layers
    path = [[rng.choice(EXPERTS), rng.randrange(n_layers), round(rng.lognormvariate(0, 0.5), 4)]
            for _ in range(rng.randint(2, 3 * n_layers))]
    r = zoo_recipe(path, embed=rng.choice(EXPERTS), head=rng.choice(EXPERTS))
    exported = AutoModelForCausalLM.from_pretrained(export_dataflow(r, tmp_path / "out")).eval()
    batch = prompts(ci_zoo)
    with torch.no_grad():
        got, want = build_path_model(r, sources)(**batch).logits, exported(**batch).logits
    assert (got - want).abs().max().item() < 1e-4


@pytest.mark.slow  # four lm-eval runs (~80 s); HFLM through the wrapper is also covered fast in test_dataflow.py
def test_lm_eval_zoo_task_through_wrapper(ci_zoo, sources, tmp_path):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from evomerge.resources import shipped_dir

    tasks = TaskManager(include_path=str(shipped_dir("fitness") / "zoo"))
    tok = AutoTokenizer.from_pretrained(ci_zoo / "add")
    n_layers = AutoModelForCausalLM.from_pretrained(ci_zoo / "add").config.num_hidden_layers

    def score(pretrained, **kw):
        lm = HFLM(pretrained=pretrained, batch_size=8, max_length=128, **kw)
        out = lm_eval.simple_evaluate(model=lm, tasks=["zoo_add"], task_manager=tasks, limit=16,
                                      log_samples=True, bootstrap_iters=0)
        return out["results"]["zoo_add"]["exact_match,none"], [s["resps"] for s in out["samples"]["zoo_add"]]

    whole = zoo_recipe([["add", i] for i in range(n_layers)])
    assert score(build_path_model(whole, sources), tokenizer=tok) == score(str(ci_zoo / "add"), device="cpu")
    spliced = zoo_recipe([["add", 0], ["sort", 1, 0.8], ["add", 1, 1.25]], head="add")
    assert score(build_path_model(spliced, sources), tokenizer=tok) == \
        score(str(export_dataflow(spliced, tmp_path / "spliced")), device="cpu")


def test_space_points_on_the_zoo_build_and_export_exactly(ci_zoo, sources, tmp_path):
    import numpy as np

    from evomerge.spaces.dataflow import DataFlowSpace

    sp = DataFlowSpace.from_config({"models": {"add": "zoo://ci/add", "sort": "zoo://ci/sort"}, "repeats": 2,
                                    "scaling": "factored", "first": {"model": "add", "layer": 0},
                                    "last": {"model": "add", "layer": -1}})
    rng = np.random.default_rng(1)
    batch = prompts(ci_zoo)
    for k in range(2):
        r = sp.decode(sp.from_unit(rng.random(sp.size())))
        exported = AutoModelForCausalLM.from_pretrained(export_dataflow(r, tmp_path / f"p{k}")).eval()
        with torch.no_grad():
            assert (build_path_model(r, sources)(**batch).logits - exported(**batch).logits).abs().max() < 1e-4
