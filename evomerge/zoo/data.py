"""The zoo's evaluation data: per skill a ``search`` and a disjoint ``test`` split (JSONL), generated
deterministically and shipped in ``fitness/zoo/data``. Training data must avoid every item in them."""

from __future__ import annotations

import json
import random
from pathlib import Path

from evomerge.resources import shipped_dir
from evomerge.zoo.skills import SKILLS, Skill, get_skill

DATA_SEED = 20240611
SPLIT_SIZES = {"search": 1000, "test": 500}
N_CHOICES = 4


def data_dir() -> Path:
    """Where the shipped JSONL files live."""
    return shipped_dir("fitness") / "zoo" / "data"


def make_splits(skill: Skill, sizes: dict[str, int] = SPLIT_SIZES, seed: int = DATA_SEED) -> dict[str, list[dict]]:
    """Items at the hard level, unique prompts across all splits; each item carries MC choices and a gold index."""
    rng = random.Random(f"{seed}-{skill.name}")
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {}
    for split, n in sizes.items():
        items = []
        while len(items) < n:
            prompt, answer = skill.sample(rng, "hard")
            if prompt in seen:
                continue
            seen.add(prompt)
            choices = _choices(rng, skill, prompt, answer)
            items.append({"id": f"{skill.name}-{split}-{len(items):04d}", "prompt": prompt, "answer": answer,
                          "choices": choices, "gold": choices.index(answer)})
        splits[split] = items
    return splits


def _choices(rng: random.Random, skill: Skill, prompt: str, answer: str) -> list[str]:
    wrong = [d for d in dict.fromkeys(skill.distractors(rng, prompt, answer)) if d and d != answer]
    while len(wrong) < N_CHOICES - 1:  # degenerate inputs (e.g. "aaaaaa"): pad with other hard answers
        cand = skill.sample(rng, "hard")[1]
        if cand != answer and cand not in wrong:
            wrong.append(cand)
    choices = [answer] + wrong[: N_CHOICES - 1]
    rng.shuffle(choices)
    return choices


def write_data(out_dir: str | Path | None = None, skills: list[str] | None = None) -> list[Path]:
    """(Re)generate the JSONL files ``<skill>_<split>.jsonl``; returns the paths written."""
    out = Path(out_dir) if out_dir is not None else data_dir()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in skills or SKILLS.names():
        for split, items in make_splits(get_skill(name)).items():
            path = out / f"{name}_{split}.jsonl"
            path.write_text("".join(json.dumps(it, sort_keys=True) + "\n" for it in items))
            written.append(path)
    return written


def load_split(skill: str, split: str, directory: str | Path | None = None) -> list[dict]:
    """The items of one shipped split."""
    path = Path(directory or data_dir()) / f"{skill}_{split}.jsonl"
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def heldout_prompts(skill: str) -> set[str]:
    """Every prompt in the evaluation splits of ``skill``: training must never see these."""
    return {it["prompt"] for split in SPLIT_SIZES for it in load_split(skill, split)}
