"""The zoo's settings and its cache (variants, settings hash, manifest, ``zoo_path`` / ``unbuilt_zoo``),
without torch or transformers (building a zoo: :mod:`evomerge.zoo.ensure` and :mod:`evomerge.zoo.build`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evomerge.errors import EvomergeError
from evomerge.resources import home
from evomerge.zoo.skills import SKILLS, get_skill

class ModelSettings(BaseModel):
    """Llama dimensions of the zoo models."""

    model_config = ConfigDict(extra="forbid")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(512, ge=8)
    max_position_embeddings: int = Field(128, ge=32)


class Calibration(BaseModel):
    """Base training only: bring the base's competence on every skill's hard level to about ``target``. Every
    ``every`` steps the base answers ``items`` fresh hard items per skill (greedy, exact match); a skill at or
    above the target is sampled at ``maintain`` times the weight of the others from then on, and training
    ends at the first check where every skill is there. If that never happens within ``steps``, the base is
    the checked snapshot closest to it (largest sum over skills of min(accuracy, target)). One training seed
    learns a skill in 300 steps and another in 900, and skills learn at different speeds: a fixed step count
    leaves the base either without some skill (no merge can help) or solving it (no merge is needed)."""

    model_config = ConfigDict(extra="forbid")
    target: float = Field(gt=0, le=1)
    every: int = Field(50, ge=1)
    items: int = Field(64, ge=8)
    # a skill left out of training entirely can lose its hard-level competence within 150 steps (measured:
    # 0.5 -> 0.0), one kept at its full share goes on to solve the hard level (0.5 -> 0.9 in 350 steps)
    maintain: float = Field(0.1, gt=0, le=1)


class TrainSettings(BaseModel):
    """One training phase: AdamW with linear warm-up and cosine decay over ``steps`` batches."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(gt=0)
    warmup: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    # share of each batch drawn at the hard level (the rest at the easy level)
    hard_fraction: float = Field(0.0, ge=0, le=1)
    # expert fine-tuning only: share of each batch replayed from every skill at the easy level (rehearsal keeps
    # the expert's other skills, so its task vector changes its own skill and little else)
    replay: float = Field(0.0, ge=0, le=1)
    calibrate: Optional[Calibration] = None


MANIFEST = "zoo.json"
FORMAT_VERSION = 2  # bump when a code change alters what a build with the same settings produces
DEFAULT_SKILLS = ("add", "reverse", "sort")
SECOND_SKILLS = ("shift", "dup", "dmax")  # the second zoo ("full2"): caesar shift, letter doubling, digit-wise max


class ZooSettings(BaseModel):
    """Everything that determines a zoo build (with the seed)."""

    model_config = ConfigDict(extra="forbid")
    skills: list[str] = Field(default_factory=lambda: list(DEFAULT_SKILLS), min_length=1)
    model: ModelSettings
    base: TrainSettings
    expert: TrainSettings

    @field_validator("skills")
    @classmethod
    def _known_skills(cls, names: list[str]) -> list[str]:
        for n in names:
            SKILLS.get(n)  # raises EvomergeError for unknown names
        if len(set(names)) != len(names):
            raise ValueError("skills must be unique")
        return names


VARIANTS: dict[str, ZooSettings] = {
    "ci": ZooSettings(
        model=ModelSettings(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64),
        base=TrainSettings(steps=40, batch_size=32, lr=3e-3, warmup=5),
        expert=TrainSettings(steps=10, batch_size=32, lr=1e-3, hard_fraction=1.0),
    ),
    # the CI zoo with 32-wide attention heads: the narrowest that vLLM's CPU attention serves (backend: vllm tests)
    "ci_vllm": ZooSettings(
        model=ModelSettings(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128),
        base=TrainSettings(steps=40, batch_size=32, lr=3e-3, warmup=5),
        expert=TrainSettings(steps=10, batch_size=32, lr=1e-3, hard_fraction=1.0),
    ),
    "full": ZooSettings(
        model=ModelSettings(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512),
        # the base sees every skill, mostly at the easy level, and is calibrated to solve about a quarter of each
        # skill's hard items (a skill at the target is sampled less; training ends when all are there),
        # whatever the seed; experts fine-tune briefly, with a small LR, on the hard level of their own skill
        # with a replay of easy items of every skill, so they stay in the base's basin and their task vectors
        # add up (without replay the reverse and sort experts each learn to answer every string prompt their
        # way, and every merge of them collapses). docs/zoo_recipe.md has the measurements.
        base=TrainSettings(steps=1200, batch_size=64, lr=2e-3, warmup=50, hard_fraction=0.2,
                           calibrate=Calibration(target=0.25, every=25, maintain=0.05)),
        expert=TrainSettings(steps=150, batch_size=64, lr=5e-4, warmup=10, hard_fraction=1.0, replay=0.25),
    ),
}
# the same recipe over the second skill set
VARIANTS["full2"] = VARIANTS["full"].model_copy(update={"skills": list(SECOND_SKILLS)})


def variant_settings(variant: str, skills: list[str] | None = None) -> ZooSettings:
    """The settings of a named variant, optionally restricted to other skills."""
    if variant not in VARIANTS:
        raise EvomergeError(f"unknown zoo variant {variant!r} (known: {', '.join(VARIANTS)})")
    settings = VARIANTS[variant]
    if skills is not None:
        for name in skills:
            SKILLS.get(name)
        settings = settings.model_copy(update={"skills": list(skills)})
    return settings


def settings_hash(settings: ZooSettings, seed: int) -> str:
    """Short hash of the settings, the skills' own settings, the seed and the format version."""
    dump = settings.model_dump(mode="json")
    for phase in ("base", "expert"):  # settings without calibration hash as they did before it existed
        if dump[phase].get("calibrate") is None:
            dump[phase].pop("calibrate", None)
    payload = {
        "settings": dump,
        "skills": [get_skill(s).settings() for s in settings.skills],
        "seed": seed,
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def read_manifest(zoo_dir: str | Path) -> dict | None:
    """The manifest of a complete zoo folder, or None."""
    path = Path(zoo_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def zoo_path(variant: str, seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    """Where ``ensure_zoo`` keeps a variant: ``home()/zoo/<variant>-<hash>`` (or under ``cache_dir``)."""
    root = Path(cache_dir) if cache_dir is not None else home()
    return root / "zoo" / f"{variant}-{settings_hash(variant_settings(variant), seed)}"


ZOO_SCHEME = "zoo://"


def parse_zoo_ref(ref: str) -> tuple[str, int, str]:
    """``zoo://VARIANT[@SEED]/NAME`` -> (variant, training seed (default 0), model name); raises EvomergeError
    on a malformed reference (the variant itself is checked where the zoo is built)."""
    spec, _, name = ref[len(ZOO_SCHEME):].partition("/")
    variant, at, seed = spec.partition("@")
    if not variant or not name or "/" in name.rstrip("/") or (at and not seed.isdigit()):
        raise EvomergeError(f"zoo reference {ref!r} must look like zoo://VARIANT/NAME or zoo://VARIANT@SEED/NAME")
    return variant, int(seed) if at else 0, name.rstrip("/")


def unbuilt_zoo(ref: str) -> str | None:
    """The variant of a ``zoo://VARIANT[@SEED]/NAME`` reference whose cached zoo is not built yet (else None), so
    that validation can say so instead of building it (the run builds it first)."""
    if not isinstance(ref, str) or not ref.startswith(ZOO_SCHEME):
        return None
    try:
        variant, seed, _ = parse_zoo_ref(ref)
    except EvomergeError:
        return None  # resolve_model says what is wrong
    if variant not in VARIANTS:
        return None
    path = zoo_path(variant, seed)
    m = read_manifest(path)
    return None if m is not None and m.get("hash") == path.name.rsplit("-", 1)[1] else variant


def llama_fields(m: ModelSettings, vocab_size: int) -> dict:
    """The ``LlamaConfig`` fields that size a zoo model (token ids aside): what training builds and what
    ``evomerge plan`` sizes before a zoo is built."""
    return {"vocab_size": vocab_size, "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
            "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads, "num_key_value_heads": m.num_heads,
            "max_position_embeddings": m.max_position_embeddings, "tie_word_embeddings": False}


def planned_config(variant: str) -> dict:
    """config.json fields of a variant's models before it is built (what ``evomerge plan`` sizes)."""
    from evomerge.zoo.tokenizer import vocab

    return {"model_type": "llama", "dtype": "float32", **llama_fields(VARIANTS[variant].model, len(vocab()))}
