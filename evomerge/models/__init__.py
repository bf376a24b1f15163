"""Model references and loading: HF folders, hub names and ``zoo://VARIANT/NAME``; lazy safetensors reading,
compatibility checks, and the sharded HF export writer.

The names load on first use (PEP 562), so that resolving a reference or reading headers imports no torch.
"""

from evomerge.lazy import lazy_getattr

_WHERE = {
    "resolve_model": "paths", "LazyCheckpoint": "safetensors_io", "check_compatible": "compat",
    "layout_of": "compat", "ShardedWriter": "export_writer", "copy_model_files": "export_writer",
}

__getattr__ = lazy_getattr(__name__, _WHERE)

__all__ = list(_WHERE)
