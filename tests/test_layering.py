"""The house: which package may import which, no import cycles, and the README's Layout map is true.

The graph counts every ``import`` in ``src/aiolit`` (inside functions and ``if TYPE_CHECKING:``
too), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "aiolit").rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        found[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the aiolit modules it imports (``from pkg import submodule`` counts the submodule)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                while target not in mods and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _edges(graph: dict[str, set[str]], src: str, dst: str) -> list[tuple[str, str]]:
    def under(m: str, p: str) -> bool:
        return m == p or m.startswith(p + ".")

    return sorted((a, b) for a in graph if under(a, src) for b in graph[a] if under(b, dst))


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_reading_never_imports_writing() -> None:
    graph = import_graph()
    for reader in ("aiolit.streaming", "aiolit.raw", "aiolit.index", "aiolit.format", "aiolit.stores"):
        assert _edges(graph, reader, "aiolit.processing") == [], reader


def test_index_builders_sit_below_reading_and_writing() -> None:
    graph = import_graph()
    for upper in ("aiolit.streaming", "aiolit.raw", "aiolit.processing", "aiolit.cli", "aiolit.demo"):
        assert _edges(graph, "aiolit.index", upper) == [], upper
    assert ("aiolit.streaming.dataset", "aiolit.index.hf") in _edges(
        graph, "aiolit.streaming", "aiolit.index"
    )


def test_stores_and_format_do_not_import_the_package_root_or_upper_layers() -> None:
    graph = import_graph()
    for lower in ("aiolit.stores", "aiolit.format", "aiolit._fast"):
        for target in ("aiolit.streaming", "aiolit.processing", "aiolit.raw", "aiolit.index"):
            assert _edges(graph, lower, target) == [], (lower, target)
        assert [a for a, b in _edges(graph, lower, "aiolit") if b == "aiolit"] == [], lower


def test_old_import_paths_still_work() -> None:
    import aiolit
    import aiolit.index.hf
    import aiolit.index.parquet
    import aiolit.index.raw
    from aiolit.processing.hf import hf_index_dir, index_hf_dataset
    from aiolit.processing.parquet import index_parquet_dataset
    from aiolit.raw.indexer import FileIndexer

    assert index_hf_dataset is aiolit.index_hf_dataset is aiolit.index.hf.index_hf_dataset
    assert hf_index_dir is aiolit.index.hf.hf_index_dir
    assert index_parquet_dataset is aiolit.index_parquet_dataset is aiolit.index.parquet.index_parquet_dataset
    assert FileIndexer is aiolit.index.raw.FileIndexer


def test_readme_layout_is_true() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    paths = re.findall(r"^(\S+)\s", layout, flags=re.M)
    assert "src/aiolit/index/" in paths
    for path in paths:
        assert (ROOT / path).exists(), f"README Layout names {path}, which does not exist"
    packages = {p.name for p in (SRC / "aiolit").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    listed = {Path(p).name for p in paths if p.startswith("src/aiolit/") and p.endswith("/")}
    unlisted = packages - listed - {"testing", "utilities"}  # a test helper; LitData's import path
    assert not unlisted, f"packages missing from README Layout: {sorted(unlisted)}"
