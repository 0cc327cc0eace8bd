"""A griffe extension for the API reference: Sphinx roles in docstrings become inline code.

The docstrings use numpy style with a few reStructuredText roles (``:class:`~aiolit.errors.X```);
Markdown would show the role markup literally. ``~a.b.C`` shows as ``C``, ``a.b.C`` stays whole.
Loaded by mkdocs.yml (mkdocstrings ``extensions:``); not part of the package.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):`([^`]+)`")


def _plain(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    if "<" in target and target.endswith(">"):  # `text <target>`
        target = target.split("<", 1)[0].strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


def convert(text: str) -> str:
    """Replace every Sphinx role in ``text`` by inline code."""
    return _ROLE.sub(_plain, text)


class RstRoles(griffe.Extension):
    """Rewrite each loaded object's docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
