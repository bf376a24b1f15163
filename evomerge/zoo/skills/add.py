"""Multi-digit addition with every number written lowest digit first and zero-padded to a fixed width:
``"321+540="`` -> ``"6600"`` (123 + 45 = 0066; read each string backwards).

Little-endian, fixed-width numbers put the two operand digits and the carry for every output digit at fixed
offsets, the layout in which small transformers learn addition in a few hundred steps.
"""

from __future__ import annotations

import random

from evomerge.zoo.skills import SKILLS, Skill, swap_one

WIDTH = 3  # operand digits (the sum gets one more)


def little_endian(n: int, width: int) -> str:
    return f"{n:0{width}d}"[::-1]


@SKILLS.register("add")
class Add(Skill):
    name = "add"
    lengths = {"easy": (1, 2), "hard": (3, 3)}

    def _sample(self, rng: random.Random, lo: int, hi: int) -> tuple[str, str]:
        a, b = _number(rng, lo, hi), _number(rng, lo, hi)
        return f"{little_endian(a, WIDTH)}+{little_endian(b, WIDTH)}=", little_endian(a + b, WIDTH + 1)

    def distractors(self, rng: random.Random, prompt: str, answer: str) -> list[str]:
        n = int(answer[::-1])
        wrong = [n + 1, max(n - 10, 0), n + 100, (n + 500) % 2000]
        return [little_endian(w, WIDTH + 1) for w in wrong] + [swap_one(rng, answer), answer[::-1]]


def _number(rng: random.Random, lo: int, hi: int) -> int:
    """A number with between ``lo`` and ``hi`` digits (no leading zeros)."""
    digits = rng.randint(lo, hi)
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)
