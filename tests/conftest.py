"""Shared pytest fixtures. Zoo fixtures build the tiny CI zoo once per session (seconds)."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pathlib import Path  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

# Tests get their own evomerge home, so the CI zoo is built from scratch once per session (seconds) and a
# user's cache is never touched. The real cache stays reachable for the slow full-zoo fixture.
_REAL_HOME = os.environ.get("EVOMERGE_HOME", str(Path.home() / ".cache" / "evomerge"))
os.environ["EVOMERGE_HOME"] = tempfile.mkdtemp(prefix="evomerge-test-home-")


@pytest.fixture(scope="session")
def ci_zoo() -> Path:
    """Folder of the CI zoo (``base/``, ``add/``, ``reverse/``, ``sort/``), built once per session; also what
    ``zoo://ci/NAME`` resolves to during the tests."""
    from evomerge.zoo import ensure_zoo

    return ensure_zoo("ci")


@pytest.fixture(scope="session")
def full_zoo() -> Path:
    """Folder of the full (mergeable) zoo from the user's real cache, built there if missing (minutes)."""
    from evomerge.zoo import ensure_zoo

    return ensure_zoo("full", cache_dir=_REAL_HOME)


@pytest.fixture(scope="session")
def full2_zoo() -> Path:
    """Folder of the second full zoo (shift, dup, dmax) from the user's real cache, built there if missing."""
    from evomerge.zoo import ensure_zoo

    return ensure_zoo("full2", cache_dir=_REAL_HOME)


def pytest_unconfigure(config):
    import shutil

    shutil.rmtree(os.environ["EVOMERGE_HOME"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """``{"base", "a", "b", "c"}`` -> folders of 4-layer random Llamas; a/b/c are noisy copies of base."""
    from tiny_llama import make_tiny_llama

    root = tmp_path_factory.mktemp("tiny_llama")
    base = make_tiny_llama(root / "base", 0)
    out = {"base": str(root / "base")}
    for i, name in enumerate("abc", start=1):
        make_tiny_llama(root / name, i, base_state=base)
        out[name] = str(root / name)
    return out
