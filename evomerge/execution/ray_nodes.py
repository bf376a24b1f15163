"""Before any actor starts on a Ray cluster: every node that can host a worker can read the run's models.

A model folder that exists on the driver's machine but not on a worker's node (a path on local disk, a hub
model the node's cache lacks while offline) would otherwise surface as a worker that cannot build, after the
run has started. Each host node answers a small probe task (no CPU reserved, pinned to the node) that resolves
every model reference there the way a worker would, reading headers only.
"""

from __future__ import annotations

from typing import Any, Iterable

from evomerge.errors import EvomergeError


def _probe(refs: list[str]) -> list[tuple[str, str]]:
    """Runs on a node: ``(ref, why)`` for each reference that cannot be read there."""
    from evomerge.models.hub import headers_only
    from evomerge.models.paths import resolve_model
    from evomerge.zoo.settings import unbuilt_zoo

    bad = []
    for ref in refs:
        if ref.startswith("zoo://") and unbuilt_zoo(ref) is not None:
            continue  # a zoo the worker builds on that node
        try:
            with headers_only():
                resolve_model(ref)
        except Exception as exc:
            bad.append((ref, " ".join(str(exc).split())[:300] or type(exc).__name__))
    return bad


def model_refs(spec) -> list[str]:
    """The model references a worker of ``spec`` reads (base, models, string sources)."""
    refs = ([spec.base] if spec.base else []) + list(spec.models) + [s for s in spec.sources if isinstance(s, str)]
    return list(dict.fromkeys(refs))


def check_models_on_nodes(refs: Iterable[str], nodes: list[dict[str, Any]], env: dict[str, str],
                          timeout_s: float) -> None:
    """Refuse (one line naming the node and the model) when a host node cannot read one of ``refs``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    refs = list(refs)
    if not refs or not nodes:
        return
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    pending = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                             runtime_env={"env_vars": env} if env else None).remote(refs): n for n in nodes}
    try:
        answers = ray.get(list(pending), timeout=timeout_s)
    except Exception as exc:
        raise EvomergeError(f"ray executor: the nodes did not answer the model check "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    for node, bad in zip(pending.values(), answers):
        if bad:
            ref, why = bad[0]
            raise EvomergeError(f"model {ref} cannot be read on Ray node {node.get('NodeManagerAddress')} "
                                f"({node['NodeID'][:8]}): {why}; every node that hosts a worker needs the models "
                                "(a shared path, or hub names each node fetches)")
