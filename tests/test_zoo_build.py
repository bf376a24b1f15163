import json
import os
from pathlib import Path

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


def test_settings_without_calibration_keep_their_hash():
    """Adding the calibration setting must not move the cache key (and so rebuild) of existing zoos."""
    from evomerge.zoo.settings import Calibration, VARIANTS, settings_hash

    assert VARIANTS["ci"].base.calibrate is None
    assert settings_hash(VARIANTS["ci"], 0) == "d93564c32e"  # its hash before calibration existed
    calibrated = VARIANTS["ci"].model_copy(
        update={"base": VARIANTS["ci"].base.model_copy(update={"calibrate": Calibration(target=0.5)})})
    assert settings_hash(calibrated, 0) != "d93564c32e"


def test_calibration_samples_a_skill_at_the_target_less_and_ends_training(monkeypatch):
    """The base's hard-level check: a skill at the target is sampled at the maintenance weight from the next
    batch on, and training ends at the check where every skill is there. The check's scoring is replaced by a
    schedule of accuracies (the ci model learns nothing in a test's time); model, batches and training are real."""
    import random

    import evomerge.zoo.train as train_mod
    from evomerge.zoo.settings import VARIANTS, Calibration
    from evomerge.zoo.skills import get_skill
    from evomerge.zoo.tokenizer import build_tokenizer

    skills = [get_skill("reverse"), get_skill("sort")]
    reached_at = {"reverse": 10, "sort": 30}
    now = {"step": 0}

    def scheduled_exact_match(model, tokenizer, items, *a, **k):
        name = items[0]["prompt"].split(":")[0].replace("rev", "reverse")
        return [now["step"] >= reached_at[name]] * len(items)

    monkeypatch.setattr(train_mod, "exact_match", scheduled_exact_match)
    settings = VARIANTS["ci"].base.model_copy(update={"steps": 60, "batch_size": 16,
                                                      "calibrate": Calibration(target=0.5, every=10, items=8,
                                                                               maintain=0.05)})
    model = train_mod.make_model(VARIANTS["ci"].model, 0)
    check = train_mod.HardCalibration(model, build_tokenizer(), skills, settings.calibrate, 0, set())
    batches = train_mod.sample_batches(skills, settings, random.Random(0), set(), weights=check.weights)
    drawn = {False: [], True: []}  # before / after reverse reached the target: is each item a reverse item?

    def recording():
        for batch in batches:
            drawn[now["step"] >= 10].extend(p.startswith("rev:") for p, _ in batch)
            yield batch

    def on_step(step, loss):
        now["step"] = step + 1
        return check(step, loss)

    losses = train_mod.train(model, recording(), settings, on_step)
    assert len(losses) == 30 and check.reached == {"reverse": 10, "sort": 30}
    assert [s for s, _ in check.history] == [10, 20, 30] and check.finish() == 30
    share = {k: sum(v) / len(v) for k, v in drawn.items()}
    assert 0.35 < share[False] < 0.65 and share[True] < 0.15, share  # 1:1, then 0.05:1


def test_calibration_keeps_the_check_closest_to_the_target(monkeypatch):
    """When the step cap comes first, the base is the snapshot of the best check, not the last weights."""
    import random

    import torch

    import evomerge.zoo.train as train_mod
    from evomerge.zoo.settings import VARIANTS, Calibration
    from evomerge.zoo.skills import get_skill
    from evomerge.zoo.tokenizer import build_tokenizer

    accuracy = {10: 0.1, 20: 0.4, 30: 0.2, 40: 0.0}  # the skill peaks at step 20, then is forgotten
    now = {"step": 0}
    def scheduled_exact_match(model, tokenizer, items, *a, **k):
        right = round(accuracy[now["step"]] * len(items))
        return [True] * right + [False] * (len(items) - right)

    monkeypatch.setattr(train_mod, "exact_match", scheduled_exact_match)
    settings = VARIANTS["ci"].base.model_copy(update={"steps": 40, "batch_size": 8,
                                                      "calibrate": Calibration(target=0.5, every=10, items=10)})
    model = train_mod.make_model(VARIANTS["ci"].model, 0)
    check = train_mod.HardCalibration(model, build_tokenizer(), [get_skill("sort")], settings.calibrate, 0, set())
    snapshots = {}

    def on_step(step, loss):
        now["step"] = step + 1
        if now["step"] % 10 == 0:
            snapshots[now["step"]] = {k: v.clone() for k, v in model.state_dict().items()}
        return check(step, loss)

    losses = train_mod.train(model, train_mod.sample_batches([get_skill("sort")], settings, random.Random(0), set(),
                                                             weights=check.weights), settings, on_step)
    assert len(losses) == 40 and check.reached == {}
    assert check.finish() == 20
    assert all(torch.equal(v, snapshots[20][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, snapshots[40][k]) for k, v in model.state_dict().items())


def test_a_seeded_zoo_reference_reads_that_build(ci_zoo):
    from evomerge.models import resolve_model
    from evomerge.zoo.settings import parse_zoo_ref, unbuilt_zoo, zoo_path

    assert parse_zoo_ref("zoo://ci@3/sort") == ("ci", 3, "sort")
    assert parse_zoo_ref("zoo://ci/sort") == ("ci", 0, "sort")
    for bad in ["zoo://ci@/sort", "zoo://ci@-1/sort", "zoo://ci@x/sort", "zoo://@1/sort", "zoo://ci", "zoo://ci/a/b"]:
        with pytest.raises(EvomergeError, match="must look like zoo://VARIANT/NAME"):
            parse_zoo_ref(bad)
    assert unbuilt_zoo("zoo://ci@0/sort") is None and resolve_model("zoo://ci@0/sort") == str(ci_zoo / "sort")
    assert unbuilt_zoo("zoo://ci@1/sort") == "ci"  # validation says so; resolving builds it
    seeded = Path(resolve_model("zoo://ci@1/sort"))
    assert seeded == zoo_path("ci", 1) / "sort" and unbuilt_zoo("zoo://ci@1/sort") is None
    assert read_manifest(seeded.parent)["seed"] == 1
    ref, other = (load_file(str(p / "model.safetensors")) for p in (ci_zoo / "sort", seeded))
    assert any(not torch.equal(ref[k], other[k]) for k in ref)
