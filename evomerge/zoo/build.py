"""Build the zoo (base + one expert per skill) deterministically from a seed (torch, transformers).

The settings and the cache layout live in :mod:`evomerge.zoo.settings`, ``ensure_zoo`` in :mod:`evomerge.zoo.ensure`;
neither imports this module at load: checking a ``zoo://`` reference must not wait for torch."""

from __future__ import annotations

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
from transformers.utils import logging as hf_logging
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from evomerge.errors import EvomergeError
from evomerge.zoo.data import heldout_prompts
from evomerge.zoo.skills import get_skill
from evomerge.zoo.tokenizer import build_tokenizer, save_tokenizer
from evomerge.zoo.settings import (  # noqa: F401 (the light half, re-exported)
    DEFAULT_SKILLS, FORMAT_VERSION, MANIFEST, VARIANTS, ZooSettings, read_manifest, settings_hash,
    unbuilt_zoo, variant_settings, zoo_path)
from evomerge.zoo.train import HardCalibration, make_model, sample_batches, train

log = logging.getLogger(__name__)


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
        base_log, on_step, weights = {}, tick, {}
        if settings.base.calibrate is not None:
            check = HardCalibration(model, build_tokenizer(), skills, settings.base.calibrate, seed, exclude)
            weights = check.weights

            def on_step(step: int, loss: float) -> bool:
                tick(step, loss)
                return check(step, loss)

        base_losses = train(model, sample_batches(skills, settings.base, rng, exclude, weights=weights),
                            settings.base, on_step)
        bar.update(task, total=total - settings.base.steps + len(base_losses))  # calibration may stop early
        if settings.base.calibrate is not None:
            kept = check.finish()
            base_log = {"steps": len(base_losses), "kept_step": kept, "reached_at": check.reached,
                        "hard_accuracy": dict(check.history)[kept] if kept else {}}
        _save(model, out / "base")
        base_state = {k: v.clone() for k, v in model.state_dict().items()}
        log_ = {"base": {"final_loss": _tail_mean(base_losses), **base_log}}
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
