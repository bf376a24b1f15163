"""Caesar shift by one letter (z wraps to a): ``"rot:abz="`` -> ``"bca"``."""

from __future__ import annotations

import random

from evomerge.zoo.skills import SKILLS, Skill, letters, swap_one


def caesar(s: str, k: int = 1) -> str:
    """``s`` with every lowercase letter moved ``k`` places along the alphabet (wrapping)."""
    return "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in s)


@SKILLS.register("shift")
class Shift(Skill):
    name = "shift"
    lengths = {"easy": (2, 6), "hard": (9, 12)}

    def _sample(self, rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
        s = letters(rng, rng.randint(lo, hi))
        return f"rot:{s}=", caesar(s)

    def distractors(self, rng: random.Random, prompt: str, answer: str) -> list[str]:
        src = prompt[len("rot:"):-1]
        return [src, caesar(src, 2), swap_one(rng, answer), caesar(src, -1), answer[:-1]]
