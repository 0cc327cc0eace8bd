"""Where a dataset lives and where its cache goes (no torch, no network).

``input_dir`` forms (LitData's): a local path (read in place), ``local:/path`` (a local directory
treated like a remote one: chunks are copied into the cache), ``s3://``/``gs://``/``azure://``/
``az://``/``r2://``/``hf://`` URLs, or a :class:`Dir` pairing a local ``path`` with a ``url``.

The cache of a remote dataset is ``{root}/{md5(url)}/{updated_at}/`` where ``root`` is the
``cache_dir`` argument, else ``$AIOLIT_CACHE_DIR``, else ``~/.cache/aiolit/chunks``. A
re-optimized dataset has a new ``updated_at``, so it gets a fresh directory and the stale
siblings are deleted (see docs/architecture/cache.md).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiolit._paths import cache_root

__all__ = [
    "REMOTE_SCHEMES",
    "Dir",
    "cache_root",
    "cached_datasets",
    "clear_cache",
    "resolve_dir",
    "versioned_cache_dir",
]

URL_NOTE = "url.txt"  # {root}/{md5(url)}/url.txt: the dataset URL, for `aiolit cache ls`
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
            if entry.name in (version, URL_NOTE):
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
    note = parent / URL_NOTE
    if not note.exists():
        try:
            tmp = parent / f"{URL_NOTE}.{os.getpid()}.tmp"
            tmp.write_text(url + "\n")
            os.replace(tmp, note)
        except OSError:
            pass  # only `aiolit cache ls` reads it
    return target


def _is_digest(name: str) -> bool:
    return len(name) == 32 and all(c in "0123456789abcdef" for c in name)


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def cached_datasets(root: Path) -> list[dict[str, Any]]:
    """The datasets cached under ``root``: URL, bytes and versions (``updated_at`` directories).

    Only ``{md5(url)}`` directories are listed; a dataset cached before the URL note existed shows
    as ``md5:<digest>``.
    """
    found: list[dict[str, Any]] = []
    if not root.is_dir():
        return found
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or not _is_digest(entry.name):
            continue
        try:
            url = (entry / URL_NOTE).read_text().strip()
        except OSError:
            url = f"md5:{entry.name}"
        versions = [
            {"version": v.name, "bytes": _tree_bytes(v)} for v in sorted(entry.iterdir()) if v.is_dir()
        ]
        found.append({"url": url, "digest": entry.name, "bytes": _tree_bytes(entry), "versions": versions})
    return found


def clear_cache(root: Path, url: str | None = None) -> tuple[int, int]:
    """Delete the cache of ``url`` (as given to ``StreamingDataset``), or of every dataset.

    Returns ``(datasets removed, bytes freed)``. Only ``{md5(url)}`` directories are touched, so a
    mistyped ``--cache-dir`` cannot delete unrelated files.
    """
    if not root.is_dir():
        return 0, 0
    if url is not None:
        targets = [root / hashlib.md5(url.encode()).hexdigest()]
    else:
        targets = [e for e in root.iterdir() if e.is_dir() and _is_digest(e.name)]
    removed = freed = 0
    for target in targets:
        if target.is_dir():
            freed += _tree_bytes(target)
            shutil.rmtree(target, ignore_errors=True)
            removed += 1
    return removed, freed
