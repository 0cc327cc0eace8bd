"""Where a dataset lives and where its cache goes (no torch, no network).

``input_dir`` forms (LitData's): a local path (read in place), ``local:/path`` (a local directory
treated like a remote one: chunks are copied into the cache), ``s3://``/``gs://``/``azure://``/
``az://``/``r2://``/``hf://`` URLs, or a :class:`Dir` pairing a local ``path`` with a ``url``.

The cache of a remote dataset is ``{root}/{key}/{version}/`` where ``root`` is the
``cache_dir`` argument, else ``$AIOLIT_CACHE_DIR``, else ``~/.cache/aiolit/chunks``, ``key`` is
``md5(url)`` (with the endpoint, when it is not the default) and ``version`` the index's
``updated_at``. A re-optimized dataset gets a fresh directory; stale siblings are deleted once no
live process holds a lease on them (see docs/architecture/cache.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiolit._paths import cache_root
from aiolit._proc import pid_alive

__all__ = [
    "REMOTE_SCHEMES",
    "Dir",
    "cache_key",
    "cache_root",
    "cached_datasets",
    "clear_cache",
    "drop_lease",
    "endpoint_of",
    "resolve_dir",
    "take_lease",
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


def endpoint_of(url: str, storage_options: dict[str, Any] | None) -> str:
    """The server a remote ``url`` is read from, when it is not the scheme's default ("" then).

    Part of the cache key: the same ``s3://bucket/path`` on two servers is two datasets. Only
    the endpoint is taken (never a key or a secret of the options).
    """
    opts = storage_options or {}
    env = os.environ

    def first(*names: str) -> str:
        for name in names:
            value = opts.get(name)
            if value:
                return str(value)
        return ""

    if url.startswith(("s3://", "r2://")):
        names = ("endpoint_url", "S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        return first(*names) or next((env[n] for n in names[1:] if env.get(n)), "")
    if url.startswith("gs://"):
        return first("endpoint_url", "api_root") or env.get("STORAGE_EMULATOR_HOST", "")
    if url.startswith(("azure://", "az://")):
        found = first("account_url") or first("account_name")
        conn = first("connection_string") or ("" if found else env.get("AZURE_STORAGE_CONNECTION_STRING", ""))
        if conn and not found:
            parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
            found = parts.get("BlobEndpoint") or parts.get("AccountName", "")
        return found
    if url.startswith("hf://"):
        return first("endpoint") or env.get("HF_ENDPOINT", "")
    return ""


def cache_key(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """``md5(url)``, or ``md5(endpoint + " " + url)`` for a non-default endpoint."""
    endpoint = endpoint_of(url, storage_options)
    return hashlib.md5((f"{endpoint} {url}" if endpoint else url).encode()).hexdigest()


# Sibling versions younger than this are never removed: another process may be creating one.
VERSION_GRACE_S = 60.0
# A lease from another host cannot be checked for liveness; it protects its version this long.
FOREIGN_LEASE_S = 24 * 3600.0
LEASE_PREFIX = ".lease-"


def versioned_cache_dir(root: Path, key: str, version: str, *, url: str) -> Path:
    """Return ``root/key/version`` (created), removing sibling versions nobody reads any more.

    ``key`` is :func:`cache_key`; ``version`` the index's ``updated_at`` (or a digest of the
    index). A sibling is another version of the same dataset: it is deleted only when no live
    process holds a lease on it (:func:`take_lease`) and it is older than ``VERSION_GRACE_S``.
    """
    if not _SAFE_VERSION.match(version) or version in (".", ".."):
        version = hashlib.md5(version.encode()).hexdigest()
    parent = root / key
    target = parent / version
    target.mkdir(parents=True, exist_ok=True)
    for entry in parent.iterdir():
        if entry.name == version:
            continue
        if entry.is_dir():
            if not _version_in_use(entry):
                shutil.rmtree(entry, ignore_errors=True)
        else:
            if entry.name == URL_NOTE:
                continue
            try:
                entry.unlink()
            except FileNotFoundError:
                pass
    note = parent / URL_NOTE
    if not note.exists():
        try:
            tmp = parent / f"{URL_NOTE}.{os.getpid()}.tmp"
            tmp.write_text(url + "\n")
            os.replace(tmp, note)
        except OSError:
            pass  # only `aiolit cache ls` reads it
    return target


_SAFE_VERSION = re.compile(r"^[A-Za-z0-9._+-]{1,128}$")


def take_lease(version_dir: Path) -> Path:
    """Mark ``version_dir`` as read by this process until the returned file is removed."""
    name = f"{LEASE_PREFIX}{socket.gethostname()}-{os.getpid()}-{_start_time(os.getpid())}-{secrets.token_hex(4)}"
    lease = version_dir / name
    lease.touch()
    return lease


def drop_lease(lease: Path, pid: int) -> None:
    """Remove ``lease`` (only in the process that took it: a forked child must not)."""
    if os.getpid() == pid:
        try:
            lease.unlink()
        except FileNotFoundError:
            pass


def _start_time(pid: int) -> str:
    # The process start time (clock ticks since boot): tells a live pid from a reused one.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat.rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "0"


def _lease_alive(lease: Path, now: float) -> bool:
    parts = lease.name[len(LEASE_PREFIX) :].rsplit("-", 3)  # host, pid, start time, token
    if len(parts) != 4:
        return False
    host, pid_text, start, _ = parts
    if host != socket.gethostname():
        try:
            return now - lease.stat().st_mtime < FOREIGN_LEASE_S
        except FileNotFoundError:
            return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    return pid_alive(pid) and start in ("0", _start_time(pid))


def _version_in_use(version_dir: Path) -> bool:
    now = time.time()
    try:
        if now - version_dir.stat().st_mtime < VERSION_GRACE_S:
            return True
        leases = [p for p in version_dir.iterdir() if p.name.startswith(LEASE_PREFIX)]
    except FileNotFoundError:
        return False
    alive = False
    for lease in leases:
        if _lease_alive(lease, now):
            alive = True
        else:
            try:
                lease.unlink()  # its process is gone
            except FileNotFoundError:
                pass
    return alive


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
        for entry in root.iterdir():  # the same URL on other endpoints (keys with the endpoint)
            try:
                if _is_digest(entry.name) and (entry / URL_NOTE).read_text().strip() == url:
                    targets.append(entry)
            except OSError:
                pass
    else:
        targets = [e for e in root.iterdir() if e.is_dir() and _is_digest(e.name)]
    removed = freed = 0
    for target in targets:
        if target.is_dir():
            freed += _tree_bytes(target)
            shutil.rmtree(target, ignore_errors=True)
            removed += 1
    return removed, freed
