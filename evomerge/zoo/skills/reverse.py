"""String reversal: ``"rev:abcde="`` -> ``"edcba"``."""

from __future__ import annotations

import random

from evomerge.zoo.skills import SKILLS, Skill, letters, swap_one


@SKILLS.register("reverse")
class Reverse(Skill):
    name = "reverse"
    lengths = {"easy": (2, 6), "hard": (9, 12)}

    def _sample(self, rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
        s = letters(rng, rng.randint(lo, hi))
        return f"rev:{s}=", s[::-1]

    def distractors(self, rng: random.Random, prompt: str, answer: str) -> list[str]:
        src = answer[::-1]
        return [src, swap_one(rng, answer), answer[1:] + answer[0], answer[:-1], swap_one(rng, src)]
