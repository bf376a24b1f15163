"""Duplicating every letter: ``"dup:abc="`` -> ``"aabbcc"``."""

from __future__ import annotations

import random

from evomerge.zoo.skills import SKILLS, Skill, letters, swap_one


def doubled(s: str) -> str:
    return "".join(c + c for c in s)


@SKILLS.register("dup")
class Dup(Skill):
    name = "dup"
    # answers stay within the 16 generated tokens of the lm-eval tasks
    lengths = {"easy": (2, 4), "hard": (6, 8)}

    def _sample(self, rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
        s = letters(rng, rng.randint(lo, hi))
        return f"dup:{s}=", doubled(s)

    def distractors(self, rng: random.Random, prompt: str, answer: str) -> list[str]:
        src = prompt[len("dup:"):-1]
        i = rng.randrange(len(src))
        dropped = doubled(src[:i] + src[i + 1:])  # one letter left out
        single = answer[: 2 * i + 1] + answer[2 * i + 2:]  # one letter not doubled
        return [dropped, single, swap_one(rng, answer), src + src, doubled(src[::-1])]
