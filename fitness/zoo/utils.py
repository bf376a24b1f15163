"""Loads the zoo's local JSONL splits for the lm-eval tasks in this folder, whatever the working directory."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("search", "test")


def _read(path: Path) -> list[dict]:
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load(skill: str, **_metadata) -> datasets.DatasetDict:
    """``custom_dataset`` hook: the ``search`` and ``test`` splits of one skill (extra kwargs are task metadata)."""
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(_read(DATA_DIR / f"{skill}_{split}.jsonl")) for split in SPLITS}
    )
