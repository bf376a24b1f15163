import json
import os

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import evomerge.zoo.cli  # noqa: F401  registers `evomerge zoo`
from evomerge.cli import cli
from evomerge.errors import EvomergeError
from evomerge.models import resolve_model
from evomerge.zoo import build_zoo, ensure_zoo, read_manifest
from evomerge.zoo import build as build_mod
from evomerge.zoo.decode import greedy_decode


def test_ci_zoo_layout_and_loading(ci_zoo):
    manifest = read_manifest(ci_zoo)
    assert manifest["skills"] == ["add", "reverse", "sort"] and manifest["variant"] == "ci"
    assert ci_zoo.name == f"ci-{manifest['hash']}"
    for name in ["base", "add", "reverse", "sort"]:
        folder = ci_zoo / name
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
            assert (folder / f).is_file(), f"{name}/{f}"
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        assert type(model).__name__ == "LlamaForCausalLM"
        assert AutoTokenizer.from_pretrained(str(folder)).decode([4]) == "\n"
    assert resolve_model("zoo://ci/add") == str(ci_zoo / "add")


def test_experts_differ_from_base(ci_zoo):
    base = load_file(str(ci_zoo / "base" / "model.safetensors"))
    for skill in ["add", "reverse", "sort"]:
        expert = load_file(str(ci_zoo / skill / "model.safetensors"))
        assert base.keys() == expert.keys()
        assert any(not torch.equal(base[k], expert[k]) for k in base)


def test_checkpoint_reload_gives_identical_outputs(ci_zoo, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(str(ci_zoo / "add")).eval()
    tok = AutoTokenizer.from_pretrained(str(ci_zoo / "add"))
    ids = tok(["12+34=", "rev:abcdef="], add_special_tokens=False, padding=True, return_tensors="pt")
    model.save_pretrained(str(tmp_path))
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, again(**ids).logits)


def test_batched_greedy_decode_matches_one_by_one(ci_zoo):
    model = AutoModelForCausalLM.from_pretrained(str(ci_zoo / "reverse")).eval()
    tok = AutoTokenizer.from_pretrained(str(ci_zoo / "reverse"))
    prompts = ["1+2=", "rev:abcdefgh=", "sort:zyx=", "4567+8901="]  # different lengths: left padding
    batched = greedy_decode(model, tok, prompts, max_new_tokens=8)
    single = [greedy_decode(model, tok, [p], max_new_tokens=8)[0] for p in prompts]
    assert batched == single
    # and the same as transformers' own greedy generate
    for p, out in zip(prompts, single):
        ids = tok(p, add_special_tokens=False, return_tensors="pt")
        gen = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(gen[0, ids["input_ids"].shape[1]:]).split("\n")[0] == out


def test_build_is_deterministic_and_seed_sensitive(ci_zoo, tmp_path):
    again = build_zoo(tmp_path / "again", variant="ci", seed=0)
    other = build_zoo(tmp_path / "other", variant="ci", seed=1)
    for name in ["base", "sort"]:
        ref = load_file(str(ci_zoo / name / "model.safetensors"))
        same = load_file(str(again / name / "model.safetensors"))
        diff = load_file(str(other / name / "model.safetensors"))
        assert all(torch.equal(ref[k], same[k]) for k in ref)
        assert any(not torch.equal(ref[k], diff[k]) for k in ref)
    assert read_manifest(again)["hash"] == read_manifest(ci_zoo)["hash"] != read_manifest(other)["hash"]


def test_cache_is_reused_without_training(ci_zoo, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("rebuilt a zoo that was already built")

    monkeypatch.setattr(build_mod, "_build_into", boom)
    assert ensure_zoo("ci") == ci_zoo
    assert build_zoo(ci_zoo, variant="ci", seed=0) == ci_zoo


def test_bad_output_dirs(tmp_path, ci_zoo):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(EvomergeError, match="non-empty folder that holds no zoo"):
        build_zoo(foreign, variant="ci")
    assert (foreign / "notes.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(EvomergeError, match="not writable"):
        build_zoo(a_file / "zoo", variant="ci")
    with pytest.raises(EvomergeError, match="other settings"):
        build_zoo(ci_zoo, variant="ci", seed=7)
    with pytest.raises(EvomergeError, match="unknown skill 'nope'"):
        build_zoo(tmp_path / "z", variant="ci", skills=["add", "nope"])
    with pytest.raises(EvomergeError, match="unknown zoo variant"):
        ensure_zoo("huge")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_dir_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(EvomergeError, match="not writable"):
            build_zoo(ro / "zoo", variant="ci")
    finally:
        ro.chmod(0o700)


def test_cli_errors_are_one_line(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("x")
    runner = CliRunner()
    for args, msg in [
        (["zoo", "build", str(foreign), "--variant", "ci"], "holds no zoo"),
        (["zoo", "build", str(tmp_path / "z"), "--variant", "ci", "--skills", "add,nope"], "unknown skill 'nope'"),
        (["zoo", "report", str(foreign)], "not a built zoo"),
    ]:
        res = runner.invoke(cli, args)
        assert res.exit_code == 2, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], res.output


def test_cli_build_reports_the_path(ci_zoo):
    res = CliRunner().invoke(cli, ["zoo", "build", str(ci_zoo), "--variant", "ci"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(ci_zoo)
    assert json.loads((ci_zoo / "zoo.json").read_text())["variant"] == "ci"


def test_second_zoo_is_the_full_recipe_over_other_skills():
    from evomerge.zoo.settings import SECOND_SKILLS, VARIANTS

    assert VARIANTS["full2"].skills == list(SECOND_SKILLS)
    assert VARIANTS["full2"].model_copy(update={"skills": VARIANTS["full"].skills}) == VARIANTS["full"]
