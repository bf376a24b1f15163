"""The tiny model zoo: a char-level Llama base pre-trained on a mixture of skills and one expert per skill,
built deterministically from a seed and cached by settings hash.

``ensure_zoo("ci"|"full"|"full2") -> Path`` (cached build), ``build_zoo(out_dir, variant, seed)``, ``SKILLS``.
"""

from evomerge.zoo.skills import SKILLS, Skill, get_skill

_BUILD = ("VARIANTS", "ZooSettings", "build_zoo", "ensure_zoo", "read_manifest", "zoo_path")


def __getattr__(name: str):
    """The build API on first use: it imports torch and transformers, which ``evomerge zoo --help`` and the
    CLI's quick errors should not wait for."""
    if name in _BUILD:
        from evomerge.zoo import build

        return getattr(build, name)
    raise AttributeError(f"module 'evomerge.zoo' has no attribute {name!r}")

__all__ = ["SKILLS", "Skill", "VARIANTS", "ZooSettings", "build_zoo", "ensure_zoo", "get_skill", "read_manifest",
           "zoo_path"]
