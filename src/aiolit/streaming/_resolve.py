"""Where a dataset lives and where its cache goes (no torch, no network).

``input_dir`` forms (LitData's): a local path (read in place), ``local:/path`` (a local directory
treated like a remote one: chunks are copied into the cache), ``s3://``/``gs://``/``azure://``/
``az://``/``r2://``/``hf://`` URLs, or a :class:`Dir` pairing a local ``path`` with a ``url``.

The cache of a remote dataset is ``{root}/{md5(url)}/{updated_at}/`` where ``root`` is the
``cache_dir`` argument, else ``$AIOLIT_CACHE_DIR``, else ``~/.cache/aiolit/chunks``. A
re-optimized dataset has a new ``updated_at``, so it gets a fresh directory and the stale
siblings are deleted (see docs/cache.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REMOTE_SCHEMES", "Dir", "cache_root", "resolve_dir", "versioned_cache_dir"]

REMOTE_SCHEMES = ("s3://", "gs://", "azure://", "az://", "r2://", "hf://", "local:")


@dataclass
class Dir:
    """A dataset location: ``path`` is a local directory (the data or its cache), ``url`` the source.

    Parameters
    ----------
    path
        Local directory. Without ``url`` the data is read from it in place; with ``url`` it is the
        cache directory (used as is, no hashing).
    url
        Remote source (``s3://bucket/prefix``, ``local:/dir`` ...).
    """

    path: str | None = None
    url: str | None = None


def resolve_dir(value: object, *, name: str = "input_dir") -> Dir:
    """Normalise a ``str``/``PathLike``/:class:`Dir` into a :class:`Dir` with an absolute path.

    Raises
    ------
    ValueError
        For an empty value or an unsupported type; the message names the argument.
    """
    if isinstance(value, Dir):
        path = os.path.abspath(os.path.expanduser(value.path)) if value.path else None
        if path is None and not value.url:
            raise ValueError(f"{name}: Dir() needs a path or a url")
        return Dir(path=path, url=value.url or None)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"{name} must be a local path, a URL (s3://, gs://, azure://, local:) or a Dir, got {value!r}"
        )
    if value.startswith(REMOTE_SCHEMES):
        return Dir(path=None, url=value)
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise ValueError(
            f"{name}: unsupported scheme {scheme!r} in {value!r}; use s3://, gs://, azure:// or local:"
        )
    return Dir(path=os.path.abspath(os.path.expanduser(value)), url=None)


def cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The directory under which per-dataset cache directories are made."""
    if cache_dir is not None:
        return Path(os.path.expanduser(os.fspath(cache_dir))).absolute()
    env = os.environ.get("AIOLIT_CACHE_DIR")
    if env:
        return Path(os.path.expanduser(env)).absolute()
    return Path.home() / ".cache" / "aiolit" / "chunks"


def versioned_cache_dir(root: Path, url: str, updated_at: str | None) -> Path:
    """Return ``root/md5(url)/updated_at`` (created), deleting stale versions next to it.

    Without ``updated_at`` (an index LitData did not merge) ``md5(url)`` stands in for it.
    """
    digest = hashlib.md5(url.encode()).hexdigest()
    version = updated_at or digest
    if "/" in version or version in ("", ".", ".."):
        version = hashlib.md5(version.encode()).hexdigest()
    parent = root / digest
    target = parent / version
    if parent.is_dir():
        for entry in parent.iterdir():
            if entry.name == version:
                continue
            # Another version of this dataset: its chunks no longer match the index.
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                try:
                    entry.unlink()
                except FileNotFoundError:
                    pass
    target.mkdir(parents=True, exist_ok=True)
    return target
