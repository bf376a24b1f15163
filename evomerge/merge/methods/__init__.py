"""Built-in merge methods, one module each; importing this package registers them."""

from evomerge.merge.methods import (  # noqa: F401
    breadcrumbs,
    dare_linear,
    dare_ties,
    della,
    linear,
    slerp,
    task_arithmetic,
    ties,
)
