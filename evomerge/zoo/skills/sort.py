"""Sorting the letters of a string: ``"sort:dbca="`` -> ``"abcd"``."""

from __future__ import annotations

import random

from evomerge.zoo.skills import SKILLS, Skill, letters, swap_one


@SKILLS.register("sort")
class Sort(Skill):
    name = "sort"
    lengths = {"easy": (2, 6), "hard": (7, 10)}

    def _sample(self, rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
        s = letters(rng, rng.randint(lo, hi))
        return f"sort:{s}=", "".join(sorted(s))

    def distractors(self, rng: random.Random, prompt: str, answer: str) -> list[str]:
        src = prompt[len("sort:"):-1]
        return [src, swap_one(rng, answer), answer[::-1], answer[:-1], "".join(sorted(set(answer)))]
