"""Vocabularies that differ (``evomerge.models.vocab``): a fine-tune that added two tokens (66 rows vs the
base's 64), one with fewer rows (62), merged under ``vocab: base`` and ``vocab: union``, in the search
(InMemoryMerger into a live model) and in the export, which stay bit-identical; what cannot be merged row by
row is one ``error:`` line before any compute."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from evomerge.cli import cli
from evomerge.errors import EvomergeError
from evomerge.merge import InMemoryMerger, export_recipe, from_mergekit_yaml, to_mergekit_yaml
from evomerge.recipe import recipe_from_dict, recipe_from_yaml, recipe_to_yaml
from vocab_models import ADDED, VOCAB, make_family

EMB, HEAD = "model.embed_tokens.weight", "lm_head.weight"


@pytest.fixture(scope="module")
def fam(tmp_path_factory) -> dict[str, str]:
    return make_family(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def tied_fam(tmp_path_factory) -> dict[str, str]:
    return make_family(tmp_path_factory.mktemp("vocab_tied"), tied=True)


def load(folder) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(glob.glob(str(Path(folder) / "*.safetensors"))):
        out.update(load_file(f))
    return out


def recipe(m: dict, method: str, rule: str, models=("ft1", "ft2", "short"), dtype: str = "float32"):
    extra = {"density": 0.6} if method == "ties" else {}
    return recipe_from_dict({
        "method": method, "base": m["base"], "vocab": rule, "dtype": dtype,
        "models": [{"model": m[k], "params": {"weight": 0.5 - 0.1 * i, **extra}} for i, k in enumerate(models)]})


@pytest.mark.parametrize("rule", ["base", "union"])
def test_rows_are_the_method_result_then_the_adding_models_rows(fam, rule, tmp_path):
    out = load(export_recipe(recipe(fam, "task_arithmetic", rule), tmp_path / "out"))
    base, ft1, ft2, short = (load(fam[k]) for k in ("base", "ft1", "ft2", "short"))
    for name in (EMB, HEAD):
        b = base[name].double()
        padded = torch.cat([short[name], base[name][VOCAB - 2:]]).double()  # no row: the base's (no change)
        want = b + 0.5 * (ft1[name].double() - b) + 0.4 * (ft2[name][:VOCAB].double() - b) + 0.3 * (padded - b)
        got = out[name]
        assert got.shape[0] == (VOCAB + 2 if rule == "union" else VOCAB)
        assert torch.allclose(got[:VOCAB].double(), want, atol=1e-6, rtol=0), name
        if rule == "union":
            assert torch.equal(got[VOCAB:], ft2[name][VOCAB:]), f"{name}: added rows are not ft2's"


def test_union_only_adds_rows_and_averages_shared_new_tokens(fam, tmp_path):
    """TIES (a whole-tensor top-k): the shared rows are the same bits under both rules; two models adding the
    same tokens give the float32 mean of their rows."""
    models = ("ft1", "ft2", "ft2b")
    by_rule = {r: load(export_recipe(recipe(fam, "ties", r, models), tmp_path / r)) for r in ("base", "union")}
    ft2, ft2b = load(fam["ft2"]), load(fam["ft2b"])
    for name in (EMB, HEAD):
        assert torch.equal(by_rule["union"][name][:VOCAB], by_rule["base"][name])
        assert torch.equal(by_rule["union"][name][VOCAB:], (ft2[name][VOCAB:] + ft2b[name][VOCAB:]) / 2)
    for name, t in by_rule["base"].items():
        assert torch.equal(t, by_rule["union"][name]) or name in (EMB, HEAD)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_in_memory_equals_export_bit_for_bit(fam, tied_fam, tied, dtype, tmp_path):
    from transformers import AutoModelForCausalLM

    m = tied_fam if tied else fam
    merger = InMemoryMerger([m[k] for k in ("base", "ft1", "ft2", "short")], cache_budget=0)
    live = AutoModelForCausalLM.from_pretrained(m["base"], dtype=getattr(torch, dtype))
    for rule in ("union", "base", "union"):  # the live model is resized to each recipe's rows and back
        r = recipe(m, "ties", rule, dtype=dtype)
        merger.merge_into(r, live)
        out = export_recipe(r, tmp_path / f"{rule}-{len(list(tmp_path.iterdir()))}")
        exported = AutoModelForCausalLM.from_pretrained(out, dtype=getattr(torch, dtype))
        got, want = live.state_dict(), exported.state_dict()
        assert set(got) == set(want)
        assert live.get_input_embeddings().weight.shape[0] == (VOCAB + 2 if rule == "union" else VOCAB)
        for k in got:
            assert got[k].dtype == want[k].dtype == getattr(torch, dtype)
            assert torch.equal(got[k], want[k]), f"{rule}: {k} differs between the scored and the exported model"
        assert live.config.vocab_size == exported.config.vocab_size


def test_a_single_model_recipe_gives_that_model(fam):
    """The search's endpoint recipes (linear, weight 1): the live model takes that model's rows, bit for bit."""
    from transformers import AutoModelForCausalLM

    from evomerge.fitness.population import endpoint_recipe

    merger = InMemoryMerger([fam[k] for k in ("base", "ft2", "short")], cache_budget=0)
    live = AutoModelForCausalLM.from_pretrained(fam["base"])
    for name in ("ft2", "short", "base"):
        merger.merge_into(endpoint_recipe(fam[name]), live)
        want = load(fam[name])
        assert all(torch.equal(v, want[k]) for k, v in live.state_dict().items()), name


@pytest.mark.parametrize("rule", ["base", "union"])
def test_exported_folder_loads_with_a_matching_tokenizer(fam, rule, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_recipe(recipe(fam, "ties", rule), tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    rows = VOCAB + 2 if rule == "union" else VOCAB
    assert len(tok) == model.config.vocab_size == json.loads((out / "config.json").read_text())["vocab_size"] == rows
    assert model.get_input_embeddings().weight.shape[0] == model.get_output_embeddings().weight.shape[0] == rows
    ids = tok("ab" + ADDED[0], add_special_tokens=False)["input_ids"]
    assert (ids[-1] == VOCAB) == (rule == "union")
    assert model(torch.tensor([ids])).logits.shape == (1, len(ids), rows)


@pytest.mark.parametrize("rule", ["base", "union"])
@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_against_mergekit(fam, method, rule, tmp_path):
    """mergekit (tokenizer_source: base | union) on the same recipe. Equal, except one documented case: under
    union, mergekit merges the added rows by the method too, with the model that has them standing in for the
    others, so a TIES top-k counts those rows (zero task vectors) in the tensor's size and keeps a few more
    entries of the shared rows than evomerge, whose shared rows are the same under both rules. The added rows
    themselves are equal (the method of equal inputs is that input)."""
    mergekit = pytest.importorskip("mergekit")  # noqa: F841
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    r = recipe(fam, method, rule)
    mk = to_mergekit_yaml(r)
    assert yaml.safe_load(mk)["tokenizer_source"] == rule
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(mk)), str(tmp_path / "mk"),
              MergeOptions(quiet=True, write_model_card=False))
    ours, theirs = load(export_recipe(r, tmp_path / "ours")), load(tmp_path / "mk")
    assert set(ours) == set(theirs)
    for k in ours:
        assert ours[k].shape == theirs[k].shape, k
        diff = (ours[k] - theirs[k].float()).abs()
        if method == "ties" and rule == "union" and k in (EMB, HEAD):
            assert diff[VOCAB:].max().item() == 0.0  # added rows: ft2's, both
            continue
        # task arithmetic: float32 rounding of another operation order (README "mergekit parity")
        assert diff.max().item() <= (0.0 if method == "ties" else 2.4e-7), (k, diff.max().item())
    mk_tok = json.loads((tmp_path / "mk" / "config.json").read_text())["vocab_size"]
    assert mk_tok == json.loads((tmp_path / "ours" / "config.json").read_text())["vocab_size"]


def test_mergekit_yaml_maps_tokenizer_source_both_ways(fam, tmp_path):
    same = recipe(fam, "ties", "base", models=("ft1",))
    assert "tokenizer_source" not in yaml.safe_load(to_mergekit_yaml(same))  # nothing to align
    for rule in ("base", "union"):
        mk = to_mergekit_yaml(recipe(fam, "ties", rule))
        assert yaml.safe_load(mk)["tokenizer_source"] == rule
        assert from_mergekit_yaml(mk).vocab == rule
    doc = yaml.safe_load(to_mergekit_yaml(recipe(fam, "ties", "union")))
    doc.pop("tokenizer_source")
    assert from_mergekit_yaml(yaml.safe_dump({**doc, "tokenizer": {"source": "union"}})).vocab == "union"
    with pytest.raises(EvomergeError, match="tokenizer source"):
        from_mergekit_yaml(yaml.safe_dump({**doc, "tokenizer_source": fam["ft2"]}))
    r = recipe(fam, "ties", "union")
    assert recipe_from_yaml(recipe_to_yaml(r)) == r


def test_a_search_space_passes_its_rule_to_the_recipes(fam):
    from evomerge.spaces import build_space

    space = build_space({"preset": "ties_layerwise", "num_layers": 2, "vocab": "union"},
                        base=fam["base"], models=[fam["ft1"], fam["ft2"]])
    assert space.vocab() == "union"
    assert space.decode(space.default_point()).vocab == "union"
    merger = InMemoryMerger(space.sources(), cache_budget=0)  # the search worker's tokenizer
    assert merger.tokenizer_folder(fam["base"], "union") == str(Path(fam["ft2"]).resolve())
    assert merger.tokenizer_folder(fam["base"], "base") == str(Path(fam["base"]).resolve())


# ---- refused in one line, before any compute ----------------------------------------------------------------

REFUSED = [  # (id, rule, models, message)
    ("added-tokens-differ", "union", ("ft2", "other"), "tokenizers disagree on token id 64"),
    ("shared-ids-differ", "base", ("ft1", "swapped"), "tokenizers disagree on token id 5"),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_merge_is_one_error_line_and_writes_nothing(fam, case, tmp_path):
    from test_bad_inputs import assert_one_error

    _, rule, models, message = case
    (tmp_path / "r.yaml").write_text(recipe_to_yaml(recipe(fam, "ties", rule, models)))
    res = CliRunner().invoke(cli, ["merge", str(tmp_path / "r.yaml"), str(tmp_path / "out")])
    assert message in assert_one_error(res, tmp_path / "out")


def test_base_rule_drops_added_tokens_that_differ(fam, tmp_path):
    """Under base the rows beyond the base's are dropped, so two fine-tunes adding other tokens merge."""
    out = load(export_recipe(recipe(fam, "ties", "base", ("ft2", "other")), tmp_path / "out"))
    assert out[EMB].shape[0] == VOCAB


def test_check_reports_it(fam, tmp_path, monkeypatch):
    """``evomerge check``: the job's space rule decides (union: refused; base: passes the model check)."""
    from test_bad_inputs import assert_one_error

    from evomerge.run.preflight import check_models

    monkeypatch.chdir(tmp_path)
    job = {"name": "vocab", "base": fam["base"], "models": [fam["ft2"], fam["other"]],
           "space": {"preset": "ties_layerwise", "num_layers": 2, "vocab": "union"},
           "fitness": {"kind": "lm_eval", "tasks": ["zoo_add"], "include_path": ["zoo"], "estimator": "full",
                       "population": 0},
           "objectives": [{"metric": "mean"}], "optimizer": {"name": "cma", "population": 4},
           "budget": {"evaluations": 4}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    res = CliRunner().invoke(cli, ["check", str(tmp_path / "job.yaml")])
    assert "tokenizers disagree on token id 64" in assert_one_error(res, tmp_path / "runs")
    assert "shapes agree" in check_models([fam["base"], fam["ft2"], fam["other"]], vocab="base")


@pytest.mark.parametrize("arch", ["GPT-2", "GPT-NeoX"])
def test_other_architectures_find_their_vocab_tensors(arch, tmp_path):
    """GPT-2 ``wte`` (tied), GPT-NeoX ``embed_in`` / ``embed_out``: found by shape, merged in memory == export."""
    import transformers
    from transformers import AutoModelForCausalLM

    from evomerge.models.safetensors_io import LazyCheckpoint
    from evomerge.models.vocab import vocab_tensors
    from test_architectures import ARCHS

    cls, fields = ARCHS[arch]
    refs = {}
    for i, rows in enumerate((96, 98)):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_config(getattr(transformers, cls)(**fields))
        model.resize_token_embeddings(rows, mean_resizing=False)
        model.save_pretrained(tmp_path / str(rows))
        refs[rows] = str(tmp_path / str(rows))
    names, rows = vocab_tensors([LazyCheckpoint(refs[96]), LazyCheckpoint(refs[98])])
    assert rows == [96, 98] and sorted(names) == (["transformer.wte.weight"] if arch == "GPT-2"
                                                  else ["embed_out.weight", "gpt_neox.embed_in.weight"])
    r = recipe_from_dict({"method": "task_arithmetic", "base": refs[96], "vocab": "union",
                          "models": [{"model": refs[98], "params": {"weight": 0.5}}]})
    live = AutoModelForCausalLM.from_pretrained(refs[96])
    InMemoryMerger(r.sources(), cache_budget=0).merge_into(r, live)
    exported = AutoModelForCausalLM.from_pretrained(export_recipe(r, tmp_path / "out")).state_dict()
    assert live.get_input_embeddings().weight.shape[0] == 98
    assert all(torch.equal(v, exported[k]) for k, v in live.state_dict().items())
