"""No import circles inside the package: no module of ``evomerge/`` imports, directly or through others, a module
that imports it back. Every import counts, at module level or inside a function (a lazy import that breaks a
circle at run time is still a circle in the design)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "evomerge"


def _modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()

    def known(name: str):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg_parts = m.split(".") if f.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(pkg_parts[: len(pkg_parts) - node.level + 1] + [node.module or ""]) if node.level \
                    else node.module or ""
                names = [base.rstrip(".")] + [f"{base.rstrip('.')}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = known(name) if name.split(".")[0] == "evomerge" else None
                # a module reading its own package's face (``__init__``) is not a circle
                if target and target != m and not m.startswith(target + "."):
                    graph[m].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    reach = {}
    for start in graph:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        reach[start] = seen
    groups = []
    for m in graph:
        group = {m} | {n for n in reach[m] if m in reach[n]}
        if len(group) > 1 and group not in groups:
            groups.append(group)
    return groups


def test_the_package_has_no_import_circles():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(sorted(g)) for g in found)


def test_the_check_finds_a_circle_and_a_lazy_import_counts():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [{"a", "b", "c"}]
    graph = import_graph()
    assert len(graph) > 100  # the walk sees the whole package
    assert "evomerge.run.finalists" in graph["evomerge.run.loop"]  # imported inside a function
