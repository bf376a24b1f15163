import json
import random

import pytest

from evomerge.errors import EvomergeError
from evomerge.zoo import SKILLS, get_skill
from evomerge.zoo.data import SPLIT_SIZES, data_dir, heldout_prompts, load_split, write_data
from evomerge.zoo.train import TrainSettings, encode_batch, sample_batches


def test_regenerating_the_data_gives_the_shipped_files(tmp_path):
    for path in write_data(tmp_path):
        assert path.read_bytes() == (data_dir() / path.name).read_bytes(), path.name


@pytest.mark.parametrize("skill", ["add", "reverse", "sort", "shift", "dup", "dmax"])
def test_splits_are_large_disjoint_and_correct(skill):
    search, test = load_split(skill, "search"), load_split(skill, "test")
    assert len(search) == SPLIT_SIZES["search"] >= 1000 and len(test) == SPLIT_SIZES["test"]
    prompts = [it["prompt"] for it in search + test]
    assert len(set(prompts)) == len(prompts)  # unique, hence search and test disjoint
    assert len({it["id"] for it in search + test}) == len(prompts)
    for it in search[:50]:
        assert it["choices"][it["gold"]] == it["answer"] and len(set(it["choices"])) == 4
        assert "\n" not in it["answer"] and it["prompt"].endswith("=")
    if skill == "add":
        a, b = search[0]["prompt"][:-1].split("+")  # little-endian, zero-padded
        assert int(search[0]["answer"][::-1]) == int(a[::-1]) + int(b[::-1])


def test_training_batches_never_contain_heldout_items():
    skills = [get_skill(s) for s in SKILLS.names()]
    exclude = set().union(*(heldout_prompts(s.name) for s in skills))
    settings = TrainSettings(steps=1, batch_size=256, lr=1e-3, hard_fraction=0.5)
    batches = sample_batches(skills, settings, random.Random(0), exclude)
    assert not exclude.intersection(p for _ in range(20) for p, _ in next(batches))


def test_exclusion_filters_items_the_generator_does_produce():
    heldout = load_split("add", "test")[:5]

    class Planted(type(get_skill("add"))):  # every other sample is a held-out item
        def sample(self, rng, level):
            if rng.random() < 0.5:
                it = heldout[rng.randrange(len(heldout))]
                return it["prompt"], it["answer"]
            return super().sample(rng, level)

    settings = TrainSettings(steps=1, batch_size=64, lr=1e-3, hard_fraction=1.0)
    planted = {it["prompt"] for it in heldout}
    unfiltered = [p for p, _ in next(sample_batches([Planted()], settings, random.Random(0), set()))]
    assert planted.intersection(unfiltered)
    filtered = [p for p, _ in next(sample_batches([Planted()], settings, random.Random(0), planted))]
    assert len(filtered) == 64 and not planted.intersection(filtered)


def test_encode_batch_masks_prompt_and_padding():
    enc = encode_batch([("1+2=", "3"), ("rev:ab=", "ba")])
    labels = enc["labels"]
    assert labels[0].tolist()[:4] == [-100] * 4 and (labels[0] != -100).sum() == 2  # "3\n"
    assert (labels[1] != -100).sum() == 3 and enc["attention_mask"][0].sum() == 6


def test_unknown_skill_is_one_clear_error():
    with pytest.raises(EvomergeError, match="unknown skill 'nope'"):
        get_skill("nope")


def test_jsonl_is_valid_json_lines():
    for path in data_dir().glob("*.jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line)


def _check_answer(skill: str, prompt: str, answer: str) -> None:
    """An independent statement of each second-zoo skill's rule."""
    if skill == "shift":
        src = prompt.removeprefix("rot:").removesuffix("=")
        assert answer == "".join("abcdefghijklmnopqrstuvwxyz"[("abcdefghijklmnopqrstuvwxyz".index(c) + 1) % 26]
                                 for c in src)
    elif skill == "dup":
        src = prompt.removeprefix("dup:").removesuffix("=")
        assert answer[::2] == src and answer[1::2] == src
    elif skill == "dmax":
        a, b = prompt.removeprefix("max:").removesuffix("=").split(",")
        assert len(a) == len(b) == len(answer) and all(c == max(x, y) for x, y, c in zip(a, b, answer))


@pytest.mark.parametrize("skill", ["shift", "dup", "dmax"])
def test_second_zoo_skills_are_deterministic_correct_and_leveled(skill):
    sk = get_skill(skill)
    draws = [sk.sample(random.Random(3), "hard") for _ in range(2)]
    assert draws[0] == draws[1]  # same seed, same item
    rng = random.Random(0)
    for level in ("easy", "hard"):
        lo, hi = sk.lengths[level]
        for _ in range(200):
            prompt, answer = sk.sample(rng, level)
            _check_answer(skill, prompt, answer)
            assert prompt.endswith("=") and "\n" not in answer and 0 < len(answer) <= 16
            src = prompt.split(":", 1)[1][:-1].split(",")[0]
            assert lo <= len(src) <= hi
    assert max(sk.lengths["easy"]) < min(sk.lengths["hard"])  # the experts' level is out of the base's reach
    for it in load_split(skill, "test"):
        _check_answer(skill, it["prompt"], it["answer"])


@pytest.mark.parametrize("skill", ["shift", "dup", "dmax"])
def test_second_zoo_distractors_are_near_misses(skill):
    sk, rng = get_skill(skill), random.Random(1)
    for _ in range(100):
        prompt, answer = sk.sample(rng, "hard")
        wrong = [d for d in sk.distractors(rng, prompt, answer) if d != answer]
        assert len(set(wrong)) >= 3  # enough for 4 distinct choices without padding, almost always
        for d in wrong:
            with pytest.raises(AssertionError):
                _check_answer(skill, prompt, d)
    for it in load_split(skill, "search")[:100]:
        assert len(set(it["choices"])) == 4 and it["choices"][it["gold"]] == it["answer"]
        assert sum(c == it["answer"] for c in it["choices"]) == 1


def test_tokenizer_covers_every_skill():
    from evomerge.zoo.tokenizer import CHARS

    for name in SKILLS.names():
        for it in load_split(name, "test")[:200]:
            assert set(it["prompt"] + it["answer"]) <= set(CHARS), name
