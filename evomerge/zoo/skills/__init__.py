"""Skills of the tiny zoo: each one generates (prompt, answer) pairs at an easy and a hard level.

The base model pre-trains on every skill at the easy level; each expert fine-tunes on its own skill at the hard
level; the search/test splits (shipped in ``fitness/zoo/data``) are drawn from the hard level.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

from evomerge.registry import Registry

LEVELS = ("easy", "hard")


class Skill(ABC):
    """A generator of exact-match items. Prompts end with "="; answers never contain a newline."""

    name: str = ""
    # (min, max) operand/string length at each level; part of the zoo's settings hash.
    lengths: dict[str, tuple[int, int]] = {}

    def sample(self, rng: random.Random, level: str) -> tuple[str, str]:
        """One (prompt, answer) pair at ``level`` ("easy" or "hard")."""
        lo, hi = self.lengths[level]
        return self._sample(rng, lo, hi)

    @abstractmethod
    def _sample(self, rng: random.Random, lo: int, hi: int) -> tuple[str, str]: ...

    @abstractmethod
    def distractors(self, rng: random.Random, prompt: str, answer: str) -> list[str]:
        """Plausible wrong answers for the multiple-choice variant (may repeat or include the answer)."""

    def settings(self) -> dict:
        return {"name": self.name, "lengths": {k: list(v) for k, v in self.lengths.items()}}


SKILLS: Registry[type[Skill]] = Registry(
    "skill",
    entry_point_group="evomerge.zoo_skills",
    modules=tuple(f"evomerge.zoo.skills.{m}" for m in ("add", "reverse", "sort", "shift", "dup", "dmax")),
)


def get_skill(name: str) -> Skill:
    """An instance of the named skill; unknown names raise EvomergeError listing the known ones."""
    return SKILLS.get(name)()


def letters(rng: random.Random, n: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def swap_one(rng: random.Random, s: str) -> str:
    """``s`` with two adjacent characters swapped (a near miss)."""
    if len(s) < 2:
        return s
    i = rng.randrange(len(s) - 1)
    return s[:i] + s[i + 1] + s[i] + s[i + 2:]


__all__ = ["LEVELS", "SKILLS", "Skill", "get_skill"]
