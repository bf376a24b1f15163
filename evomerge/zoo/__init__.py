"""The tiny model zoo: a char-level Llama base pre-trained on a mixture of skills and one expert per skill,
built deterministically from a seed and cached by settings hash.

``ensure_zoo("ci"|"full"|"full2") -> Path`` (cached build), ``build_zoo(out_dir, variant, seed)``, ``SKILLS``.
"""

from evomerge.zoo.skills import SKILLS, Skill, get_skill

_SETTINGS = ("VARIANTS", "ZooSettings", "read_manifest", "zoo_path")


def __getattr__(name: str):
    """The zoo API on first use; ``build_zoo`` imports torch and transformers, which ``evomerge zoo --help``, the
    CLI's quick errors and a check of a built zoo should not wait for."""
    if name in _SETTINGS:
        from evomerge.zoo import settings

        return getattr(settings, name)
    if name == "ensure_zoo":
        from evomerge.zoo import ensure

        return ensure.ensure_zoo
    if name == "build_zoo":
        from evomerge.zoo import build

        return build.build_zoo
    raise AttributeError(f"module 'evomerge.zoo' has no attribute {name!r}")

__all__ = ["SKILLS", "Skill", "VARIANTS", "ZooSettings", "build_zoo", "ensure_zoo", "get_skill", "read_manifest",
           "zoo_path"]
