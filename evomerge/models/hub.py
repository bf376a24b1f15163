"""Hub model names (``org/name``, ``org/name@revision``) resolved through the standard Hugging Face cache.

Resolution goes through ``huggingface_hub`` with the settings users already have (``HF_HOME``,
``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, tokens): a model already in the cache is used as it is, offline nothing is
fetched, and otherwise only what a merge needs is downloaded (config, tokenizer and generation files, safetensors
weights and their index). Never pickled weights: a repository without safetensors is refused.

Inside :func:`headers_only` (``check``, ``plan``, preflight) a model whose weights are not cached is read from its
safetensors headers alone, fetched by HTTP range requests into evomerge's own cache: a multi-GB download never
starts before a job has been checked. Such a folder holds no tensor data (:data:`HEADERS_FILE` marks it).

A run pins each hub model to the commit it started with (``org/name@<40-hex commit>``, see :func:`pin`); a pinned
model resolves to that commit or is refused, naming both commits.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from evomerge.errors import EvomergeError

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: the files a merge reads besides the weights (tokenizers of every kind, generation defaults)
SMALL_FILES = ["config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json",
               "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "*.model", "chat_template.*"]
WEIGHT_FILES = ["*.safetensors", "model.safetensors.index.json"]
#: marks a folder that holds a model's safetensors headers but none of its tensor data
HEADERS_FILE = "evomerge-headers.json"
_PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt")
_HEADERS_ONLY: ContextVar[bool] = ContextVar("evomerge_hub_headers_only", default=False)


@dataclass(frozen=True)
class HubRef:
    """``org/name`` with an optional revision (commit, branch or tag)."""

    repo_id: str
    revision: Optional[str] = None

    @classmethod
    def parse(cls, ref: str) -> Optional["HubRef"]:
        if not isinstance(ref, str) or not HUB_NAME.match(ref) or ref.startswith((".", "/", "~")):
            return None
        repo_id, _, revision = ref.partition("@")
        return cls(repo_id, revision or None)

    @property
    def pinned(self) -> bool:
        return self.revision is not None and bool(COMMIT.match(self.revision))

    def at(self, commit: str) -> str:
        return f"{self.repo_id}@{commit}"

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def is_hub_name(ref: str) -> bool:
    return HubRef.parse(ref) is not None


def hub_ref(ref: str) -> Optional[HubRef]:
    """``ref`` as a hub model, or None when it is not a hub name or a local folder of that name shadows it (a
    local path wins, as in ``resolve_model``)."""
    h = HubRef.parse(ref)
    return None if h is None or Path(ref).expanduser().exists() else h


def display_name(ref: str) -> str:
    """``ref`` without its ``@revision`` (what a parameter name or a table shows)."""
    h = HubRef.parse(ref)
    return h.repo_id if h is not None else ref


def hub_cache() -> Path:
    """The Hugging Face hub cache as the environment names it now (read per call, not at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def headers_only() -> Iterator[None]:
    """Within: hub models whose weights are not cached resolve to header-only folders (nothing large fetched)."""
    token = _HEADERS_ONLY.set(True)
    try:
        yield
    finally:
        _HEADERS_ONLY.reset(token)


def hub_folder(ref: str) -> Path:
    """The local folder of hub model ``ref`` (fetched into the cache if needed; see the module doc)."""
    h = HubRef.parse(ref)
    if h is None:
        raise EvomergeError(f"{ref!r} is not a hub model name (org/name or org/name@revision)")
    if _HEADERS_ONLY.get():
        try:
            return _snapshot(h, weights=True, local_only=True)
        except _NotCached:
            if offline():
                raise
        return _header_folder(h)
    return _snapshot(h, weights=True, local_only=offline())


def commit_of(folder: Path) -> str:
    """The commit a resolved hub folder holds (snapshot folders and header folders are named by it)."""
    return Path(folder).name


_PINS: dict[str, str] = {}


def pin(ref: str) -> str:
    """``ref`` pinned to the commit it names now (unchanged when not a hub name or already a commit); asked
    once per process, so every place of one run gets the same commit."""
    h = hub_ref(ref)
    if h is None or h.pinned:
        return ref
    if ref not in _PINS:
        with headers_only():
            _PINS[ref] = h.at(commit_of(hub_folder(ref)))
    return _PINS[ref]


_MODEL_KEYS = ("base", "model", "models")


def pin_all(data: Any, resolve: Callable[[str], str] = pin) -> Any:
    """``data`` (a recipe or job config as plain data) with every model reference (under ``base``, ``model``,
    ``models``, at any depth) passed through ``resolve``."""
    if isinstance(data, dict):
        return {k: (_refs_in(v, resolve) if k in _MODEL_KEYS else pin_all(v, resolve)) for k, v in data.items()}
    if isinstance(data, list):
        return [pin_all(v, resolve) for v in data]
    return data


def _refs_in(value: Any, resolve: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return resolve(value)
    if isinstance(value, list):
        return [_refs_in(v, resolve) for v in value]
    if isinstance(value, dict):  # a model source {model, params}, or data-flow's name -> reference / recipe
        return {k: (resolve(v) if isinstance(v, str) else pin_all(v, resolve)) for k, v in value.items()}
    return value


def pinned_refs(data: Any) -> dict[str, str]:
    """``repo_id -> org/name@commit`` of every pinned hub model in ``data`` (a stored job config)."""
    found: dict[str, str] = {}

    def note(ref: str) -> str:
        h = HubRef.parse(ref)
        if h is not None and h.pinned:
            found.setdefault(h.repo_id, ref)
        return ref

    pin_all(data, note)
    return found


def hub_line(refs: list[str]) -> Optional[str]:
    """One line of the commits ``refs``' hub models resolve to (a preflight report line), None without any."""
    hub = [r for r in dict.fromkeys(refs) if hub_ref(r) is not None]
    if not hub:
        return None
    return "hub models: " + ", ".join(f"{display_name(r)}@{HubRef.parse(pin(r)).revision[:10]}" for r in hub)


def missing_weight_bytes(ref: str, total: int) -> int:
    """Bytes of ``ref``'s weights a run still has to download (0: local folder, or already in the cache)."""
    h = hub_ref(ref)
    if h is None:
        return 0
    try:
        _snapshot(h, weights=True, local_only=True)
        return 0
    except EvomergeError:
        return total


class _NotCached(EvomergeError):
    """The cache does not hold what was asked (and nothing was fetched)."""


def _snapshot(h: HubRef, weights: bool, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(h.repo_id, revision=h.revision or "main", cache_dir=str(hub_cache()),
                                        allow_patterns=SMALL_FILES + (WEIGHT_FILES if weights else []),
                                        local_files_only=local_only))
    except Exception as exc:  # huggingface_hub's errors, network errors, OSError: one line naming the model
        raise _hub_error(h, exc, local_only) from None
    _check_folder(h, folder, weights, local_only)
    return folder


def _check_folder(h: HubRef, folder: Path, weights: bool, local_only: bool) -> None:
    """What snapshot_download returns may be partial (an interrupted download, a cache without its tree listing)."""
    if not (folder / "config.json").is_file():
        raise _NotCached(f"model {h}: the Hugging Face cache holds commit {folder.name} without its config.json")
    if not weights:
        return
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise EvomergeError(f"model {h}: broken model.safetensors.index.json in {folder}") from None
        missing = sorted(s for s in shards if not (folder / str(s)).is_file())
        if missing:
            raise _NotCached(f"model {h}: {len(missing)} weight shard(s) of commit {folder.name} are not in the "
                             f"cache ({missing[0]}{', ...' if len(missing) > 1 else ''})")
        return
    if any(folder.glob("*.safetensors")):
        return
    if any(p for pat in _PICKLED for p in folder.glob(pat)) or (not local_only and _pickle_only(h, folder.name)):
        raise _pickle_only_error(h.repo_id)
    reach = "HF_HUB_OFFLINE is set" if local_only else "the Hub cannot be reached"
    raise _NotCached(f"model {h}: the weights of commit {folder.name} are not in the Hugging Face cache "
                     f"({hub_cache()}) and {reach}; fetch them once with network (`hf download {h.repo_id}`)")


def _pickle_only_error(repo_id: str) -> EvomergeError:
    return EvomergeError(f"model {repo_id} has no safetensors weights (a pickle-only repository): evomerge never "
                         "unpickles weights; convert it with transformers' save_pretrained() and give the folder")


def _pickle_only(h: HubRef, commit: str) -> bool:
    """Does the Hub list no safetensors file at ``commit`` (False when it cannot be asked)?"""
    from huggingface_hub import HfApi

    try:
        files = HfApi().list_repo_files(h.repo_id, revision=commit)
    except Exception:  # unreachable: the caller says the weights are missing, not what the repository holds
        return False
    return not any(f.endswith(".safetensors") for f in files)


def _hub_error(h: HubRef, exc: BaseException, local_only: bool) -> EvomergeError:
    from huggingface_hub import errors

    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, errors.GatedRepoError):
        return EvomergeError(f"model {h.repo_id} is gated on the Hub: accept its terms on its page, then log in "
                             "(`hf auth login` or HF_TOKEN)")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return EvomergeError(f"model {h.repo_id} is neither a local folder nor a model on the Hub (a private "
                             "model: log in with `hf auth login` or HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return _pin_error(h, "the Hub has no such revision") if h.pinned else \
            EvomergeError(f"model {h.repo_id} has no revision {h.revision!r} on the Hub")
    reach = "HF_HUB_OFFLINE is set" if offline() else f"the Hub cannot be reached: {why[:200]}"
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.IncompleteSnapshotError,
                        errors.OfflineModeIsEnabled)) or local_only:
        if h.pinned:
            return _pin_error(h, f"it is not in the cache and {reach}")
        return _NotCached(f"model {h} is not in the Hugging Face cache ({hub_cache()}) and {reach}; fetch it once "
                          f"with network (`hf download {h.repo_id}`) or give a local folder")
    return EvomergeError(f"cannot fetch model {h} from the Hub: {type(exc).__name__}: {why[:300]}")


def _pin_error(h: HubRef, why: str) -> EvomergeError:
    now = _cached_ref(h.repo_id, "main")
    return _NotCached(f"model {h.repo_id}: this run is pinned to commit {h.revision}, which cannot be had ({why}); "
                      f"main is now {now or 'unknown here'}. Restore that commit in the cache "
                      f"(`hf download {h.repo_id} --revision {h.revision}`) or start a new run")


def _repo_folder(repo_id: str) -> str:
    """``models--org--name``: a model's folder in the hub cache (and under evomerge's header cache)."""
    from huggingface_hub.file_download import repo_folder_name

    return repo_folder_name(repo_id=repo_id, repo_type="model")


def _cached_ref(repo_id: str, ref: str) -> Optional[str]:
    path = hub_cache() / _repo_folder(repo_id) / "refs" / ref
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _header_folder(h: HubRef) -> Path:
    """Config, tokenizer and the safetensors headers of ``h`` (no tensor data), cached under evomerge's cache."""
    from evomerge.resources import home

    small = _snapshot(h, weights=False, local_only=offline())
    commit = commit_of(small)
    out = home() / "hub-headers" / _repo_folder(h.repo_id) / commit
    if (out / HEADERS_FILE).is_file():
        return out
    files = _fetch_headers(h.repo_id, commit)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for p in small.iterdir():
        if p.is_file():
            shutil.copyfile(p, tmp / p.name)
    (tmp / HEADERS_FILE).write_text(json.dumps(files))
    if len(files) > 1:
        weight_map = {name: f for f, tensors in files.items() for name in tensors}
        (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _fetch_headers(repo_id: str, commit: str) -> dict[str, dict[str, dict]]:
    """``{file: {tensor: {dtype, shape, data_offsets}}}`` by range requests (no tensor data downloaded)."""
    import huggingface_hub
    from huggingface_hub import errors

    try:
        meta = huggingface_hub.get_safetensors_metadata(repo_id, revision=commit)
    except errors.NotASafetensorsRepoError:
        raise _pickle_only_error(repo_id) from None
    except Exception as exc:
        raise _hub_error(HubRef(repo_id, commit), exc, local_only=False) from None
    return {fname: {name: {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(t.data_offsets)}
                    for name, t in fm.tensors.items()}
            for fname, fm in meta.files_metadata.items()}
