"""The tiny model zoo: a char-level Llama base pre-trained on a mixture of skills and one expert per skill,
built deterministically from a seed and cached by settings hash.

``ensure_zoo("ci"|"full") -> Path`` (cached build), ``build_zoo(out_dir, variant, seed)``, ``SKILLS``.
"""

from evomerge.zoo.build import VARIANTS, ZooSettings, build_zoo, ensure_zoo, read_manifest, zoo_path
from evomerge.zoo.skills import SKILLS, Skill, get_skill

__all__ = ["SKILLS", "Skill", "VARIANTS", "ZooSettings", "build_zoo", "ensure_zoo", "get_skill", "read_manifest",
           "zoo_path"]
