"""``input_dir=``: inputs that name files under a local or remote folder.

As in LitData, every input must hold (anywhere in its pytree) at least one string path under
``input_dir``. For a remote folder (``s3://``, ``gs://``, ``azure://``, ...) each worker downloads
those files ahead of ``fn`` (several inputs ahead, concurrently, on the process's aiolit loop) into
a private temp folder, hands ``fn`` the input with the paths rewritten to the local copies, and
deletes the copies once ``fn`` returns. A local folder needs no copy: ``fn`` gets the paths as
given.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["InputDir", "check_inputs", "detect_input_dir", "localized"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_OBJECT_STORE = re.compile(r"^(s3|gs|azure|az)://([^/]+)/.")
_AHEAD = 8  # inputs downloaded ahead of fn


class InputDir:
    """A normalized ``input_dir``: a remote URL prefix or an absolute local path (picklable)."""

    def __init__(self, input_dir: str | os.PathLike[str]) -> None:
        value = os.fspath(input_dir)
        if not isinstance(value, str) or not value:
            raise ValueError(f"input_dir must be a non-empty path or URL, got {input_dir!r}")
        for prefix in ("local:", "file://"):
            if value.startswith(prefix):
                value = value[len(prefix) :]
        self.remote = bool(_SCHEME.match(value))
        self.root = value.rstrip("/") if self.remote else os.path.abspath(os.path.expanduser(value))

    def key_of(self, leaf: Any) -> str | None:
        """The path of ``leaf`` relative to the folder, or None when ``leaf`` is not a path under it."""
        if not isinstance(leaf, str):
            return None
        if self.remote:
            if not leaf.startswith(self.root + "/"):
                return None
            key = leaf[len(self.root) + 1 :]
        else:
            if _SCHEME.match(leaf):
                return None
            path = os.path.abspath(os.path.expanduser(leaf))
            if not path.startswith(self.root.rstrip(os.sep) + os.sep):
                return None
            key = os.path.relpath(path, self.root)
        parts = key.replace("\\", "/").split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            return None  # never a path that escapes the folder (or the download folder)
        return "/".join(parts)


def detect_input_dir(items: Sequence[Any]) -> InputDir | None:
    """LitData's guess when ``input_dir`` is not given: inputs naming objects (``s3://bucket/...``).

    As LitData, only the first input (or the second, when the first names none) is looked at; the
    files of every input under the same bucket are then downloaded for ``fn``. Local paths are
    read in place, so they need no folder.
    """
    from aiolit.format._pytree import flatten

    for item in items[:2]:
        for leaf in flatten(item)[0]:
            if isinstance(leaf, str) and (match := _OBJECT_STORE.match(leaf)):
                return InputDir(f"{match.group(1)}://{match.group(2)}")
    return None


def check_inputs(items: Sequence[Any], input_dir: InputDir, name: str) -> None:
    """Every input must name at least one file under ``input_dir`` (as LitData requires).

    Raises
    ------
    ValueError
        The first input without such a path.
    """
    from aiolit.format._pytree import flatten

    for position, item in enumerate(items):
        leaves, _ = flatten(item)
        if not any(input_dir.key_of(leaf) is not None for leaf in leaves):
            text = repr(item)
            text = text if len(text) <= 200 else text[:197] + "..."
            raise ValueError(
                f"{name}(input_dir={input_dir.root!r}): input #{position} ({text}) holds no path under "
                "input_dir; every input must name at least one file in that folder"
            )


def localized(
    stream: Iterator[tuple[int, Any]], input_dir: InputDir, storage_options: dict[str, Any] | None
) -> Iterator[tuple[int, Any]]:
    """Yield the inputs of ``stream`` with their remote paths replaced by downloaded local copies.

    Downloads run up to ``_AHEAD`` inputs ahead of the consumer; an input's copies are deleted
    when the consumer asks for the next input. A local ``input_dir`` passes the inputs through.
    """
    if not input_dir.remote:
        yield from stream
        return
    from aiolit._loop import get_loop
    from aiolit.format._pytree import flatten, unflatten
    from aiolit.stores import open_store

    loop = get_loop()
    store = open_store(input_dir.root, storage_options)
    cache = tempfile.mkdtemp(prefix="aiolit-input-")
    pending: deque[tuple[int, Any, Any, list[str]]] = deque()

    async def fetch(jobs: list[tuple[str, str]]) -> None:
        async def one(key: str, path: str) -> None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            await store.get_to_file(key, path)

        await asyncio.gather(*(one(key, path) for key, path in jobs))

    def start(position: int, item: Any, serial: int) -> None:
        leaves, spec = flatten(item)
        jobs: list[tuple[str, str]] = []
        for i, leaf in enumerate(leaves):
            key = input_dir.key_of(leaf)
            if key is not None:
                # one folder per input: two inputs naming the same file never share (or delete) a copy
                local = os.path.join(cache, str(serial), *key.split("/"))
                leaves[i] = local
                jobs.append((key, local))
        future = asyncio.run_coroutine_threadsafe(fetch(jobs), loop)
        pending.append((position, unflatten(leaves, spec), future, [os.path.join(cache, str(serial))]))

    serial = 0
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < _AHEAD:
                try:
                    position, item = next(stream)
                except StopIteration:
                    exhausted = True
                    break
                start(position, item, serial)
                serial += 1
            if not pending:
                return
            position, item, future, folders = pending.popleft()
            try:
                future.result()
            except Exception as exc:
                from aiolit.errors import OptimizeError

                raise OptimizeError(
                    f"downloading the files of input #{position} from input_dir {input_dir.root} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            yield position, item
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        for _, _, future, _ in pending:
            future.cancel()
        try:
            asyncio.run_coroutine_threadsafe(store.aclose(), loop).result(timeout=30)
        except Exception:
            pass  # best effort: the process is done with this store
        shutil.rmtree(cache, ignore_errors=True)
