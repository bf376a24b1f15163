"""Build the zoo (base + one expert per skill) deterministically from a seed, and cache it by settings hash."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from transformers.utils import logging as hf_logging
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from evomerge.errors import EvomergeError
from evomerge.fsutil import file_lock
from evomerge.resources import home
from evomerge.zoo.data import heldout_prompts
from evomerge.zoo.skills import SKILLS, get_skill
from evomerge.zoo.tokenizer import save_tokenizer
from evomerge.zoo.train import ModelSettings, TrainSettings, make_model, sample_batches, train

log = logging.getLogger(__name__)

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
    "full": ZooSettings(
        model=ModelSettings(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512),
        # the base sees every skill, almost only at the easy level; experts fine-tune briefly, with a small LR,
        # on the hard level of their own skill with a replay of easy items of every skill, so they stay in the
        # base's basin and their task vectors add up (without replay the reverse and sort experts each learn
        # to answer every string prompt their way, and every merge of them collapses)
        base=TrainSettings(steps=600, batch_size=64, lr=2e-3, warmup=50, hard_fraction=0.05),
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
    payload = {
        "settings": settings.model_dump(mode="json"),
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


def build_zoo(out_dir: str | Path, variant: str = "full", seed: int = 0, skills: list[str] | None = None,
              progress: bool = False, force: bool = False) -> Path:
    """Build the zoo into ``out_dir`` (``base/`` + one folder per skill); reuse it if already built alike.

    Raises EvomergeError if ``out_dir`` is not writable, or is non-empty and not a zoo of the same settings
    (``force=True`` replaces a zoo built with other settings, never a foreign folder).
    """
    settings = variant_settings(variant, skills)
    digest = settings_hash(settings, seed)
    out = Path(out_dir).expanduser().resolve()
    _check_output_dir(out, digest, force)
    if (m := read_manifest(out)) is not None and m.get("hash") == digest:
        log.info("zoo %s already built in %s", digest, out)
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    except OSError as exc:
        raise EvomergeError(f"zoo output {out} is not writable: {exc.strerror}") from None
    try:
        manifest = _build_into(staging, settings, variant, seed, digest, progress)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("built zoo %s in %s", digest, out)
    return out


def _check_output_dir(out: Path, digest: str, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise EvomergeError(f"zoo output {out} exists and is not a folder")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise EvomergeError(f"zoo output {out} is not writable")
    if out.exists() and any(out.iterdir()):
        manifest = read_manifest(out)
        if manifest is None:
            raise EvomergeError(f"zoo output {out} is a non-empty folder that holds no zoo; pick an empty one")
        if manifest.get("hash") != digest and not force:
            raise EvomergeError(f"zoo output {out} holds a zoo built with other settings "
                                f"({manifest.get('hash')} != {digest}); pass --force to replace it")


@contextmanager
def _quiet_single_thread():
    """One torch thread (tiny models are overhead-bound, shared cores thrash with more, and a fixed count keeps
    the floating-point results the same on every machine), and no per-save progress bars from transformers."""
    threads = torch.get_num_threads()
    bars = hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()


def _build_into(out: Path, settings: ZooSettings, variant: str, seed: int, digest: str, show: bool) -> dict:
    with _quiet_single_thread():
        return _train_all(out, settings, variant, seed, digest, show)


def _train_all(out: Path, settings: ZooSettings, variant: str, seed: int, digest: str, show: bool) -> dict:
    t0 = time.time()
    skills = [get_skill(s) for s in settings.skills]
    exclude = set().union(*(heldout_prompts(s.name) for s in skills))
    total = settings.base.steps + settings.expert.steps * len(skills)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
                  disable=not show, transient=False) as bar:
        task = bar.add_task(f"zoo {variant}: base", total=total, loss=float("nan"))

        def tick(_step: int, loss: float) -> None:
            bar.update(task, advance=1, loss=loss)

        model = make_model(settings.model, seed)
        rng = random.Random(seed)
        base_losses = train(model, sample_batches(skills, settings.base, rng, exclude), settings.base, tick)
        _save(model, out / "base")
        base_state = {k: v.clone() for k, v in model.state_dict().items()}
        log_ = {"base": {"final_loss": _tail_mean(base_losses)}}
        for skill in skills:
            bar.update(task, description=f"zoo {variant}: {skill.name}")
            model.load_state_dict(base_state)
            torch.manual_seed(seed)
            rng = random.Random(seed + 1)  # every expert sees the same stream of draws (of its own skill)
            losses = train(model, sample_batches([skill], settings.expert, rng, exclude, skills), settings.expert, tick)
            _save(model, out / skill.name)
            log_[skill.name] = {"final_loss": _tail_mean(losses)}
    return {"variant": variant, "seed": seed, "hash": digest, "settings": settings.model_dump(mode="json"),
            "models": ["base", *settings.skills], "skills": settings.skills, "training": log_,
            "build_seconds": round(time.time() - t0, 1), "format": FORMAT_VERSION}


def _tail_mean(losses: list[float], n: int = 20) -> float:
    tail = losses[-n:]
    return round(sum(tail) / len(tail), 4)


def _save(model, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    save_tokenizer(folder)


def zoo_path(variant: str, seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    """Where ``ensure_zoo`` keeps a variant: ``home()/zoo/<variant>-<hash>`` (or under ``cache_dir``)."""
    root = Path(cache_dir) if cache_dir is not None else home()
    return root / "zoo" / f"{variant}-{settings_hash(variant_settings(variant), seed)}"


def unbuilt_zoo(ref: str) -> str | None:
    """The variant of a ``zoo://VARIANT/NAME`` reference whose cached zoo is not built yet (else None), so
    that validation can say so instead of building it (the run builds it first)."""
    if not isinstance(ref, str) or not ref.startswith("zoo://"):
        return None
    variant = ref[len("zoo://"):].partition("/")[0]
    if variant not in VARIANTS:
        return None  # resolve_model says what is wrong
    path = zoo_path(variant)
    m = read_manifest(path)
    return None if m is not None and m.get("hash") == path.name.rsplit("-", 1)[1] else variant


def ensure_zoo(variant: str = "ci", seed: int = 0, progress: bool = False,
               cache_dir: str | Path | None = None) -> Path:
    """The folder of a built zoo variant in evomerge's cache, building it on first use."""
    path = zoo_path(variant, seed, cache_dir)
    if (m := read_manifest(path)) is not None and m.get("hash") == path.name.rsplit("-", 1)[1]:
        return path
    with file_lock(path.parent / f".{path.name}.lock"):  # concurrent test sessions / workers build it once
        return build_zoo(path, variant=variant, seed=seed, progress=progress)
