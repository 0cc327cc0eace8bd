"""Where aiolit keeps files on this machine (a leaf module: streaming and the index builders use it)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The directory under which per-dataset cache directories are made."""
    if cache_dir is not None:
        return Path(os.path.expanduser(os.fspath(cache_dir))).absolute()
    env = os.environ.get("AIOLIT_CACHE_DIR")
    if env:
        return Path(os.path.expanduser(env)).absolute()
    return Path.home() / ".cache" / "aiolit" / "chunks"
