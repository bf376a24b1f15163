"""The shipped lm-eval tasks run offline on a zoo model, from any working directory, with per-item results."""

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from evomerge.resources import shipped_dir
from evomerge.zoo.data import load_split
from evomerge.zoo.decode import greedy_decode

SKILLS = ["add", "reverse", "sort", "shift", "dup", "dmax"]
TASKS = [f"zoo_{s}{suffix}" for s in SKILLS for suffix in ("", "_test", "_mc", "_mc_test", "_ll")]
LIMIT = 6


@pytest.fixture(scope="module")
def lm_eval_run(ci_zoo, tmp_path_factory, monkeypatch_module):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    monkeypatch_module.chdir(tmp_path_factory.mktemp("elsewhere"))  # data found relative to the YAMLs
    model = AutoModelForCausalLM.from_pretrained(str(ci_zoo / "add")).eval()
    tok = AutoTokenizer.from_pretrained(str(ci_zoo / "add"))
    tm = TaskManager(include_path=str(shipped_dir("fitness") / "zoo"), include_defaults=False)
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=16), tasks=TASKS,
                                  task_manager=tm, log_samples=True, limit=LIMIT)
    return out, model, tok


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_every_task_is_registered(ci_zoo):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(shipped_dir("fitness") / "zoo"), include_defaults=False)
    assert set(TASKS) | {"zoo", "zoo_test", "zoo2", "zoo2_test"} <= set(tm.all_tasks)


def test_every_task_gives_per_item_results(lm_eval_run):
    out, _, _ = lm_eval_run
    for task in TASKS:
        samples = out["samples"][task]
        assert len(samples) == LIMIT, task
        metric = "acc" if "_mc" in task or task.endswith("_ll") else "exact_match"
        assert all(s[metric] in (0.0, 1.0) for s in samples)
        split = "test" if task.endswith("_test") else "search"
        skill = task.split("_")[1]
        assert [s["doc"]["id"] for s in samples] == [it["id"] for it in load_split(skill, split)[:LIMIT]]
        assert out["results"][task][f"{metric},none"] == pytest.approx(sum(s[metric] for s in samples) / LIMIT)


def test_lm_eval_generations_match_the_zoo_decoder(lm_eval_run):
    out, model, tok = lm_eval_run
    for task in ["zoo_add", "zoo_reverse_test", "zoo_sort", "zoo_shift", "zoo_dup_test", "zoo_dmax"]:
        samples = out["samples"][task]
        ours = greedy_decode(model, tok, [s["doc"]["prompt"] for s in samples], max_new_tokens=16)
        assert [s["filtered_resps"][0] for s in samples] == ours, task
        assert [float(o == s["target"]) for o, s in zip(ours, samples)] == [s["exact_match"] for s in samples]
        if not task.endswith("_test"):  # the loglikelihood twin's verdict is exact match's
            assert [s["acc"] for s in out["samples"][f"{task}_ll"]] == [s["exact_match"] for s in samples]
