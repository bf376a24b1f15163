"""YAML input shared by every config reader: one-line errors for a missing file or broken YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from evomerge.errors import ConfigError


def parse_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load(text)``; broken YAML raises ``ConfigError("broken {what}: <first line of the error>")``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"broken {what}: {str(exc).splitlines()[0]}") from None


def read_yaml_text_or_file(text_or_path: str | Path, what: str, file_what: str) -> Any:
    """YAML given inline or as a ``.yaml`` / ``.yml`` path (one line without a newline); a missing file raises
    ``ConfigError("{file_what} not found: PATH")``, broken YAML ``ConfigError("broken {what}: ...")``."""
    text = str(text_or_path)
    path = Path(text)
    if "\n" not in text and path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"{file_what} not found: {path}")
        text = path.read_text()
    return parse_yaml(text, what)
