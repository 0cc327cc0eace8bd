"""Hugging Face Hub repositories, read-only, over the Hub's HTTP API (aiohttp, no huggingface_hub).

Endpoints used (the ones ``huggingface_hub`` uses):

- ``GET  {endpoint}/api/{type}s/{repo_id}/tree/{revision}/{path}?recursive=true&expand=false``:
  the listing, paginated by ``Link: <...>; rel="next"``.
- ``GET  {endpoint}/{datasets/|spaces/|}{repo_id}/resolve/{revision}/{path}`` with ``Range``: file
  bytes. LFS/Xet files answer with a redirect to a CDN (followed; aiohttp drops the
  ``Authorization`` header when the redirect leaves the Hub's origin, as the CDN requires).
- ``HEAD`` on the same URL, without following the CDN redirect: size and ETag from
  ``X-Linked-Size``/``X-Linked-Etag`` (LFS) or ``Content-Length``/``ETag``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from aiolit.errors import ObjectNotFoundError, StoreError, StorePermissionError, TransientStoreError
from aiolit.stores._base import Buffer, ObjectMeta, ReadPart, Store, TransferOptions
from aiolit.stores._util import LoopLocal, range_text, store_error

if TYPE_CHECKING:
    import aiohttp

__all__ = ["DEFAULT_ENDPOINT", "HFStore", "parse_hf_url"]

DEFAULT_ENDPOINT = "https://huggingface.co"
_OPTIONS = {"endpoint", "token", "timeout"}
_REPO_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}
# Revisions that contain slashes (huggingface_hub's HfFileSystem understands the same two forms).
_SPECIAL_REVISION = re.compile(r"^(refs/(?:convert/[\w.-]+|pr/\d+))(?:/(.*))?$")
# A CDN URL a redirect pointed to is reused for this long (signed URLs live about an hour).
_REDIRECT_TTL = 300.0


def parse_hf_url(url: str) -> tuple[str, str, str, str]:
    """Split ``hf://[datasets/|models/|spaces/]owner/name[@revision][/path]``.

    Parameters
    ----------
    url : str
        An ``hf://`` URL. Without a type prefix the repository is a model (as ``HfFileSystem``).
        The revision may be ``refs/convert/parquet`` or ``refs/pr/N``; other revisions have no ``/``
        (a branch name with ``/`` must be given URL-quoted, ``@my%2Fbranch``).

    Returns
    -------
    tuple of str
        ``(repo_type, repo_id, revision, path)``: ``repo_type`` is ``"dataset"``, ``"model"`` or
        ``"space"``, ``revision`` defaults to ``"main"``, ``path`` has no leading/trailing ``/``.

    Raises
    ------
    ValueError
        For a URL without ``owner/name``.
    """
    if not url.startswith("hf://"):
        raise ValueError(f"not an hf:// URL: {url!r}")
    rest = url[len("hf://") :].strip("/")
    repo_type = "model"
    head, sep, tail = rest.partition("/")
    if head in _REPO_TYPES and sep:
        repo_type, rest = _REPO_TYPES[head], tail
    owner, _, rest = rest.partition("/")
    name, _, path = rest.partition("/")
    revision = "main"
    if "@" in owner:
        raise ValueError(f"hf:// URL {url!r}: the revision goes after the repository name (owner/name@rev)")
    if "@" in name:
        name, _, after = f"{name}/{path}".rstrip("/").partition("@")
        match = _SPECIAL_REVISION.match(after)
        if match:
            revision, path = match.group(1), match.group(2) or ""
        else:
            revision, _, path = after.partition("/")
            revision = unquote(revision)
        if not revision:
            raise ValueError(f"hf:// URL {url!r} has an empty revision after '@'")
    if not owner or not name:
        raise ValueError(
            f"hf:// URL {url!r} has no repository; expected hf://datasets/owner/name[@revision]/path"
        )
    return repo_type, f"{owner}/{name}", revision, path.strip("/")


class HFStore(Store):
    """A path inside a Hugging Face Hub repository: ``hf://datasets/owner/name[@revision]/path``.

    Read-only: ``get``, ``get_range``, ``get_ranges``, ``get_to_file``, ``head``, ``exists`` and
    ``list`` work; ``put``/``put_file``/``delete`` raise :class:`~aiolit.errors.StorePermissionError`.

    Parameters
    ----------
    url : str
        ``hf://datasets/owner/name[@revision][/path]`` (``models/``, ``spaces/`` and no prefix,
        meaning a model, work too). The revision defaults to ``main``.
    storage_options : dict, optional
        ``endpoint`` (default ``$HF_ENDPOINT``, else ``https://huggingface.co``), ``token`` (default
        ``$HF_TOKEN``, else ``$HUGGING_FACE_HUB_TOKEN``; ``False`` sends no token) and ``timeout``
        (seconds of socket inactivity per request, 300). The token is sent as
        ``Authorization: Bearer`` to the Hub only and never appears in messages or ``repr``.
    transfer : TransferOptions, optional
        Part size and concurrency of large downloads.

    Notes
    -----
    ``list`` reads every page of the Hub's recursive tree listing before yielding (to yield keys
    sorted), so one listing is retried as a whole. Modification times are not reported
    (``mtime=None``): the Hub only gives them with ``expand=true``, which is much slower.
    """

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, transfer: TransferOptions | None = None
    ) -> None:
        super().__init__(url, transfer)
        self._repo_type, self._repo_id, self._revision, self._prefix = parse_hf_url(url)
        opts = dict(storage_options or {})
        unknown = sorted(set(opts) - _OPTIONS)
        if unknown:
            raise ValueError(f"unknown hf:// option(s) {unknown} for {url}; accepted: {sorted(_OPTIONS)}")
        endpoint = opts.get("endpoint") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        self._endpoint = str(endpoint).rstrip("/")
        token = opts.get("token")
        if token is None:
            token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        if token is not None and not isinstance(token, str | bool):
            raise ValueError(f"hf:// option 'token' must be a string or False, got {type(token).__name__}")
        self._token: str | None = token if isinstance(token, str) and token else None
        self._timeout = float(opts.get("timeout", 300))
        self._client: LoopLocal[aiohttp.ClientSession] = LoopLocal()
        self._redirects: dict[str, tuple[str, float]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_redirects"] = {}  # signed CDN URLs are not configuration
        return state

    @property
    def endpoint(self) -> str:
        """The Hub's base URL."""
        return self._endpoint

    @property
    def repo_id(self) -> str:
        """``owner/name``."""
        return self._repo_id

    @property
    def revision(self) -> str:
        """The branch, tag, commit or ``refs/...`` read."""
        return self._revision

    # -- URLs and client -------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return f"{self._prefix}/{key}" if self._prefix else key

    def _resolve_url(self, key: str) -> str:
        kind = "" if self._repo_type == "model" else f"{self._repo_type}s/"
        rev = quote(self._revision, safe="")
        return f"{self._endpoint}/{kind}{self._repo_id}/resolve/{rev}/{quote(self._path(key), safe='/')}"

    def _tree_url(self, path: str) -> str:
        rev = quote(self._revision, safe="")
        url = f"{self._endpoint}/api/{self._repo_type}s/{self._repo_id}/tree/{rev}"
        return f"{url}/{quote(path, safe='/')}" if path else url

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        from aiolit._version import __version__

        headers = {"User-Agent": f"aiolit/{__version__}", **(extra or {})}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def _new_client(self) -> tuple[aiohttp.ClientSession, Any]:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(64, self._transfer.max_concurrency * 4)),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self._timeout),
            auto_decompress=False,  # ranges and sizes are of the stored bytes
        )
        return session, session.close

    async def _session(self) -> aiohttp.ClientSession:
        return await self._client.get(self._new_client)

    async def _aclose(self) -> None:
        self._redirects.clear()
        await self._client.aclose()

    @contextlib.contextmanager
    def _errors(self, key: str, byte_range: tuple[int, int] | None = None) -> Iterator[None]:
        import aiohttp

        where = f"{self.url_for(key)}{range_text(byte_range)}"
        try:
            yield
        except StoreError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            raise store_error(
                TransientStoreError,
                f"{where}: {type(exc).__name__}: {exc}",
                url=self.url_for(key),
                byte_range=byte_range,
            ) from exc

    def _status_error(
        self, resp: aiohttp.ClientResponse, key: str, byte_range: tuple[int, int] | None = None
    ) -> StoreError:
        url = self.url_for(key)
        where = f"{url}{range_text(byte_range)}"
        status = resp.status
        code = resp.headers.get("X-Error-Code", "")
        message = resp.headers.get("X-Error-Message", "") or resp.reason or ""
        detail = f"status {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        if status == 404:
            return store_error(ObjectNotFoundError, f"{where}: not found ({detail})", url=url, status=404)
        if status in (401, 403):
            hint = (
                "the token was refused or has no access to this repository (accept a gated repo's terms "
                "on the Hub)"
                if self._token
                else "the repository is private, gated or missing; set HF_TOKEN or "
                "storage_options={'token': ...}"
            )
            return store_error(StorePermissionError, f"{where}: {detail}; {hint}", url=url, status=status)
        if status in (408, 429) or status >= 500:
            return store_error(
                TransientStoreError, f"{where}: {detail}", url=url, status=status, byte_range=byte_range
            )
        return store_error(StoreError, f"{where}: {detail}", url=url, status=status, byte_range=byte_range)

    # -- reads -----------------------------------------------------------------------------------
    def _cached_redirect(self, key: str) -> str | None:
        hit = self._redirects.get(key)
        if hit is None:
            return None
        if hit[1] < time.monotonic():
            self._redirects.pop(key, None)
            return None
        return hit[0]

    def _remember_redirect(self, key: str, resp: aiohttp.ClientResponse) -> None:
        if resp.history and resp.url.origin() != resp.history[0].url.origin():
            self._redirects[key] = (str(resp.url), time.monotonic() + _REDIRECT_TTL)

    async def _fetch(self, key: str, byte_range: tuple[int, int] | None) -> bytes:
        """GET the file (or ``[start, end)`` of it), straight from a remembered CDN URL if any."""
        import yarl

        extra = {"Accept-Encoding": "identity"}
        if byte_range is not None:
            extra["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        session = await self._session()
        cdn = self._cached_redirect(key)
        if cdn is not None:
            # Signed CDN URLs take no Authorization header.
            try:
                async with session.get(yarl.URL(cdn, encoded=True), headers=extra) as resp:
                    if resp.status < 300 or resp.status == 416:
                        return await self._body(resp, key, byte_range)
            except BaseException:
                self._redirects.pop(key, None)
                raise
            self._redirects.pop(key, None)  # expired or revoked: ask the Hub again
        url = yarl.URL(self._resolve_url(key), encoded=True)
        async with session.get(url, headers=self._headers(extra)) as resp:
            data = await self._body(resp, key, byte_range)
            self._remember_redirect(key, resp)
            return data

    async def _body(
        self, resp: aiohttp.ClientResponse, key: str, byte_range: tuple[int, int] | None
    ) -> bytes:
        if byte_range is not None and resp.status == 416:
            return b""  # the range starts at or past the end: clamp like a slice
        if resp.status not in (200, 206):
            raise self._status_error(resp, key, byte_range)
        data = await resp.read()
        if byte_range is not None and resp.status == 200:
            data = data[byte_range[0] : byte_range[1]]  # the server ignored Range
        return data

    async def _get(self, key: str) -> bytes:
        with self._errors(key):
            return await self._fetch(key, None)

    async def _get_range(self, key: str, start: int, end: int) -> bytes:
        with self._errors(key, (start, end)):
            return await self._fetch(key, (start, end))

    async def _head(self, key: str) -> ObjectMeta:
        import yarl

        session = await self._session()
        url = yarl.URL(self._resolve_url(key), encoded=True)
        with self._errors(key):
            for _ in range(10):
                async with session.head(
                    url, headers=self._headers({"Accept-Encoding": "identity"}), allow_redirects=False
                ) as resp:
                    headers = resp.headers
                    linked = headers.get("X-Linked-Size")
                    if 300 <= resp.status < 400 and linked is None:
                        # A renamed repository: follow redirects that stay on the Hub.
                        target = url.join(yarl.URL(headers.get("Location", "")))
                        if target.origin() != url.origin():
                            raise self._status_error(resp, key)
                        url = target
                        continue
                    if resp.status >= 400:
                        raise self._status_error(resp, key)
                    size = linked if linked is not None else headers.get("Content-Length", "0")
                    etag = headers.get("X-Linked-Etag") or headers.get("ETag")
                    return ObjectMeta(key, int(size), etag.strip('"') if etag else None, None)
            raise store_error(StoreError, f"{self.url_for(key)}: too many redirects", url=self.url_for(key))

    # -- listing ---------------------------------------------------------------------------------
    async def _list_page(
        self, prefix: str, cursor: str | None
    ) -> tuple[builtins.list[ObjectMeta], str | None]:
        import yarl

        # List the deepest directory the prefix names, recursively, then filter by the prefix.
        folder = prefix.rpartition("/")[0]
        tree_path = "/".join(p for p in (self._prefix, folder) if p)
        root = f"{self._prefix}/" if self._prefix else ""
        session = await self._session()
        next_url: yarl.URL | None = yarl.URL(self._tree_url(tree_path), encoded=True).update_query(
            {"recursive": "true", "expand": "false"}
        )
        found: builtins.list[ObjectMeta] = []
        with self._errors(prefix):
            while next_url is not None:
                async with session.get(next_url, headers=self._headers()) as resp:
                    if resp.status == 404 and resp.headers.get("X-Error-Code") == "EntryNotFound":
                        return [], None  # no such folder: nothing under the prefix
                    if resp.status != 200:
                        raise self._status_error(resp, prefix)
                    entries = await resp.json(content_type=None)
                    link = resp.links.get("next")
                    next_url = yarl.URL(str(link["url"])) if link is not None else None
                if not isinstance(entries, builtins.list):
                    raise store_error(
                        StoreError,
                        f"{self.url_for(prefix)}: the tree listing is not a JSON list",
                        url=self.url_for(prefix),
                    )
                for entry in entries:
                    meta = _entry_meta(entry, root)
                    if meta is not None and meta.key.startswith(prefix):
                        found.append(meta)
        found.sort(key=lambda m: m.key)
        return found, None

    # -- writes: refused -------------------------------------------------------------------------
    def _read_only(self, key: str) -> StorePermissionError:
        return store_error(
            StorePermissionError,
            f"{self.url_for(key)}: hf:// stores are read-only (upload with huggingface_hub instead)",
            url=self.url_for(key),
        )

    async def _put_single(self, key: str, data: Buffer) -> None:
        raise self._read_only(key)

    async def _put(self, key: str, data: Buffer) -> None:
        raise self._read_only(key)

    async def _put_file(self, key: str, path: str, size: int) -> None:
        raise self._read_only(key)

    async def _put_multipart(self, key: str, size: int, read: ReadPart) -> None:
        raise self._read_only(key)

    async def _delete(self, key: str) -> None:
        raise self._read_only(key)


def _entry_meta(entry: Any, root: str) -> ObjectMeta | None:
    """The :class:`ObjectMeta` of one file entry of a tree listing (None for folders)."""
    if not isinstance(entry, dict) or entry.get("type") != "file":
        return None
    path = str(entry.get("path", ""))
    if not path.startswith(root) or path == root:
        return None
    lfs: dict[str, Any] = entry["lfs"] if isinstance(entry.get("lfs"), dict) else {}
    size = int(lfs.get("size") or entry.get("size") or 0)
    etag = lfs.get("oid") or entry.get("oid")
    return ObjectMeta(path[len(root) :], size, str(etag) if etag else None, None)
