"""The documentation site: every ```python block of every page runs, and every public name is documented.

Convention (for every page in docs/): a fenced ```python block is executed; a block that cannot run
here (a real cloud bucket, a GPU cluster...) is fenced ```py and only shown. The blocks of one page
run in order, in one namespace: they are joined into one script that runs in a fresh temp
directory as ``python page.py`` (so ``if __name__ == "__main__":`` guards and spawned workers
behave as in a user's script).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import aiolit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each ```python block."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in FENCE.finditer(text)]


def pages_with_code() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if python_blocks(p.read_text()))


def test_python_blocks_are_found() -> None:
    text = "intro\n```python\nx = 1\n```\n\n```py\nnot_run()\n```\n```python\ny = x + 1\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (10, "y = x + 1\n")]
    assert len(pages_with_code()) >= 3  # getting started, migrating, storage at least


@pytest.mark.parametrize("page", pages_with_code(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    parts = []
    for line, code in python_blocks(page.read_text()):
        parts.append(f"# --- {page.relative_to(ROOT)}, block at line {line} ---\n{code}")
    script = tmp_path / "page.py"
    script.write_text("\n".join(parts))
    env = {**os.environ, "AIOLIT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{page.name}: the examples failed\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )


def test_api_reference_covers_every_public_name() -> None:
    api = (DOCS / "api.md").read_text()
    documented = set(re.findall(r"^::: aiolit[\w.]*\.(\w+)$", api, flags=re.M))
    missing = set(aiolit.__all__) - documented - {"__version__", "ALL_DONE"}
    assert not missing, f"add to docs/api.md: {sorted(missing)}"
    assert "ALL_DONE" in api  # a constant: described in prose


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    listed = set(re.findall(r":\s*([\w/.-]+\.md)\s*$", nav, flags=re.M))
    assert pages == listed, (
        f"not in mkdocs.yml nav: {sorted(pages - listed)}; missing: {sorted(listed - pages)}"
    )


def test_readme_links_the_docs_and_no_issue_pointers() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.index("## Two commands") < readme.index("## Quick start")
    for page in ("docs/index.md", "docs/migrating.md", "docs/storage.md", "docs/api.md"):
        assert page in readme, page
        assert (ROOT / page).is_file()
    assert "closing note" not in readme.lower()
    assert "docs/img/speed.png" in readme and (DOCS / "img" / "speed.png").is_file()


def test_sphinx_roles_become_inline_code() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("rst_roles", ROOT / "scripts" / "mkdocs_rst_roles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = "raises :class:`~aiolit.errors.FormatError`; see :func:`aiolit.optimize`, :meth:`get <Store.get>`"
    assert module.convert(text) == "raises `FormatError`; see `aiolit.optimize`, `get`"
