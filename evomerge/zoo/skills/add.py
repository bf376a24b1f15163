"""Multi-digit addition: ``"123+4567="`` -> ``"4690"``."""

from __future__ import annotations

import random

from evomerge.zoo.skills import SKILLS, Skill, swap_one


@SKILLS.register("add")
class Add(Skill):
    name = "add"
    lengths = {"easy": (1, 2), "hard": (2, 3)}

    def _sample(self, rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
        a, b = _number(rng, lo, hi), _number(rng, lo, hi)
        return f"{a}+{b}=", str(a + b)

    def distractors(self, rng: random.Random, prompt: str, answer: str) -> list[str]:
        n = int(answer)
        return [str(n + 1), str(max(n - 10, 0)), str(n + 100), swap_one(rng, answer), str(n + 1000)]


def _number(rng: random.Random, lo: int, hi: int) -> int:
    """A number with between ``lo`` and ``hi`` digits (no leading zeros)."""
    digits = rng.randint(lo, hi)
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)
