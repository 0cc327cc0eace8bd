"""Every runtime dependency declared in pyproject.toml is imported by the package (and none is missing)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "aiolit"

# distribution name -> the top-level module it provides
MODULE = {
    "gcloud-aio-storage": "gcloud",
    "azure-storage-blob": "azure",
    "pillow": "PIL",
}


def _declared() -> set[str]:
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[\[<>=!~ ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}


def _imported() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_every_declared_dependency_is_imported() -> None:
    imported = _imported()
    unused = {d for d in _declared() if MODULE.get(d, d) not in imported}
    assert not unused, f"declared in pyproject.toml but never imported by src/aiolit: {sorted(unused)}"


def test_every_third_party_import_is_declared() -> None:
    declared = {MODULE.get(d, d) for d in _declared()}
    # part of a declared one's API (botocore: aiobotocore, yarl: aiohttp's URLs), pytest for the
    # aiolit.testing store suite (a test helper), __main__ (the spawn guard check)
    allowed = {"botocore", "yarl", "pytest", "__main__"}
    third_party = {
        m for m in _imported() if m not in sys.stdlib_module_names and m not in {"aiolit", "__future__"}
    }
    undeclared = third_party - declared - allowed
    assert not undeclared, f"imported by src/aiolit but not declared: {sorted(undeclared)}"
