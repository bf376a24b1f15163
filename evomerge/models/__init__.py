"""Model references and loading: HF folders, hub names and ``zoo://VARIANT/NAME``; lazy safetensors reading,
compatibility checks, and the sharded HF export writer."""

from evomerge.models.compat import check_compatible, layout_of
from evomerge.models.export_writer import ShardedWriter, copy_model_files, parse_size
from evomerge.models.paths import resolve_model
from evomerge.models.safetensors_io import LazyCheckpoint

__all__ = [
    "resolve_model",
    "LazyCheckpoint",
    "check_compatible",
    "layout_of",
    "ShardedWriter",
    "copy_model_files",
    "parse_size",
]
