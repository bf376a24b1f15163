"""Digit-wise maximum of two equally long digit strings: ``"max:3817,5290="`` -> ``"5897"``."""

from __future__ import annotations

import random

from evomerge.zoo.skills import SKILLS, Skill, letters, swap_one

DIGITS = "0123456789"


def digitwise(op, a: str, b: str) -> str:
    return "".join(op(x, y) for x, y in zip(a, b))


@SKILLS.register("dmax")
class DigitMax(Skill):
    name = "dmax"
    lengths = {"easy": (1, 3), "hard": (5, 7)}

    def _sample(self, rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
        n = rng.randint(lo, hi)
        a, b = letters(rng, n, DIGITS), letters(rng, n, DIGITS)
        return f"max:{a},{b}=", digitwise(max, a, b)

    def distractors(self, rng: random.Random, prompt: str, answer: str) -> list[str]:
        a, b = prompt[len("max:"):-1].split(",")
        i, j = rng.sample(range(len(answer)), 2)
        bumped = [answer[:k] + str((int(answer[k]) + 1) % 10) + answer[k + 1:] for k in (i, j)]
        return [digitwise(min, a, b), a, b, swap_one(rng, answer), *bumped]
