"""A small Hugging Face Hub look-alike on 127.0.0.1 (aiohttp, in a background thread).

It serves the endpoints :class:`aiolit.stores._hf.HFStore` uses, with the Hub's HTTP behaviour:

- ``GET /api/{datasets|models|spaces}/{owner}/{name}/tree/{revision}[/{path}]?recursive=&expand=``:
  JSON entries ``{"type": "file"|"directory", "oid", "size", "path"[, "lfs"]}``, ``page_size`` per
  page, the next page in a ``Link: <url>; rel="next"`` header (``cursor=`` query). Entries come in
  reverse path order (clients must sort). A missing folder is ``404`` + ``X-Error-Code: EntryNotFound``.
- ``GET|HEAD /[datasets/|spaces/]{owner}/{name}/resolve/{revision}/{path}``: small ("regular")
  files are served in place; LFS files (``.parquet`` and anything above ``lfs_threshold``) answer
  ``302`` to the CDN (a second port, so another origin) with ``X-Linked-Size``/``X-Linked-Etag``.
- CDN ``GET /cdn/{sha256}?expires=&sig=``: refuses any ``Authorization`` header (``400``, like a
  signed S3 URL) and signatures made before :meth:`HubServer.revoke_cdn_urls` (``403``).
- ``Range``: ``206`` + ``Content-Range``, ``416`` + ``Content-Range: bytes */size`` past the end.
- Repositories made with ``token=`` need ``Authorization: Bearer <token>``: ``401`` +
  ``X-Error-Code: GatedRepo`` without one, ``403`` with a wrong one.

Every request is recorded in :attr:`HubServer.requests` (method, path, query, range, auth header
present, port role).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

_ROLE = web.AppKey("role", str)
_TYPES = {"datasets": "dataset", "models": "model", "spaces": "space"}


@dataclass
class Request:
    """One request the server saw."""

    role: str  # "hub" or "cdn"
    method: str
    path: str
    query: dict[str, str]
    range: str | None
    authorization: str | None


@dataclass
class Repo:
    token: str | None = None
    revisions: dict[str, dict[str, bytes]] = field(default_factory=dict)


def _range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """``(start, end_exclusive)``, None (no/ignored header) or ``"416"``."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[len("bytes=") :].partition("-")
    if first == "":
        n = int(last)
        return (max(0, size - n), size) if n > 0 else "416"
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size:
        return "416"
    return start, end


class HubServer:
    """The server; use as a context manager or call :meth:`start`/:meth:`stop`."""

    def __init__(self, page_size: int = 3, lfs_threshold: int = 1024) -> None:
        self.page_size = page_size
        self.lfs_threshold = lfs_threshold
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.fail_next: list[int] = []  # statuses to answer the next hub requests with
        self._cdn_epoch = 0
        self._blobs: dict[str, bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: list[web.AppRunner] = []
        self.endpoint = ""
        self.cdn_endpoint = ""

    # -- content ---------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, *, repo_type: str = "dataset", token: str | None = None) -> Repo:
        repo = self.repos.setdefault((repo_type, repo_id), Repo())
        repo.token = token
        return repo

    def add_file(
        self, repo_id: str, path: str, data: bytes, *, revision: str = "main", repo_type: str = "dataset"
    ) -> None:
        repo = self.repos.setdefault((repo_type, repo_id), Repo())
        repo.revisions.setdefault(revision, {})[path] = bytes(data)
        self._blobs[hashlib.sha256(data).hexdigest()] = bytes(data)

    def add_dir(
        self,
        repo_id: str,
        local: Path,
        prefix: str = "",
        *,
        revision: str = "main",
        repo_type: str = "dataset",
    ) -> None:
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = file.relative_to(local).as_posix()
            self.add_file(
                repo_id, f"{prefix}/{rel}" if prefix else rel, file.read_bytes(),
                revision=revision, repo_type=repo_type,
            )  # fmt: skip

    def revoke_cdn_urls(self) -> None:
        """Make every CDN URL handed out so far answer 403 (expired signature)."""
        self._cdn_epoch += 1

    def _is_lfs(self, path: str, data: bytes) -> bool:
        return path.endswith(".parquet") or len(data) > self.lfs_threshold

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> HubServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hub-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("hub server did not start")
        return self

    async def _serve(self) -> None:
        for role in ("hub", "cdn"):
            app = web.Application()
            app[_ROLE] = role
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            self._runners.append(runner)
            setattr(self, "endpoint" if role == "hub" else "cdn_endpoint", f"http://127.0.0.1:{port}")

    def stop(self) -> None:
        if self._loop is None:
            return

        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handlers --------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        role = request.app[_ROLE]
        raw = request.rel_url.raw_path
        self.requests.append(
            Request(
                role, request.method, unquote(raw), dict(request.query),
                request.headers.get("Range"), request.headers.get("Authorization"),
            )
        )  # fmt: skip
        if role == "cdn":
            return self._cdn(request, raw)
        if self.fail_next:
            return web.Response(status=self.fail_next.pop(0), text="injected failure")
        parts = raw.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 6 and parts[1] in _TYPES and parts[4] == "tree":
            return self._tree(request, _TYPES[parts[1]], f"{parts[2]}/{parts[3]}", parts[5:])
        repo_type = "model"
        if parts[0] in ("datasets", "spaces"):
            repo_type, parts = _TYPES[parts[0]], parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve" and request.method in ("GET", "HEAD"):
            return self._resolve(request, repo_type, f"{parts[0]}/{parts[1]}", parts[3:])
        return _error(404, "NotFound", "no such endpoint")

    def _repo(
        self, request: web.Request, repo_type: str, repo_id: str, revision: str
    ) -> tuple[dict[str, bytes] | None, web.Response | None]:
        repo = self.repos.get((repo_type, unquote(repo_id)))
        if repo is not None and repo.token is not None:
            auth = request.headers.get("Authorization")
            if auth is None:
                return None, _error(401, "GatedRepo", "Access to this dataset is restricted")
            if auth != f"Bearer {repo.token}":
                return None, _error(403, "GatedRepo", "Invalid credentials")
        if repo is None:
            return None, _error(404, "RepoNotFound", "Repository not found")
        files = repo.revisions.get(revision)
        if files is None:
            return None, _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return files, None

    def _tree(self, request: web.Request, repo_type: str, repo_id: str, rest: list[str]) -> web.Response:
        revision = unquote(rest[0])
        folder = unquote("/".join(rest[1:])).strip("/")
        files, err = self._repo(request, repo_type, repo_id, revision)
        if err is not None:
            return err
        assert files is not None
        recursive = request.query.get("recursive", "false").lower() == "true"
        base = f"{folder}/" if folder else ""
        dirs: set[str] = set()
        entries: list[dict[str, Any]] = []
        for path, data in files.items():
            if not path.startswith(base):
                continue
            rel = path[len(base) :]
            pieces = rel.split("/")
            for i in range(1, len(pieces)):
                if recursive or i == 1:
                    dirs.add(base + "/".join(pieces[:i]))
            if not recursive and len(pieces) > 1:
                continue
            entry: dict[str, Any] = {
                "type": "file",
                "oid": hashlib.sha1(data).hexdigest(),
                "size": len(data),
                "path": path,
            }
            if self._is_lfs(path, data):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 132,
                }
            entries.append(entry)
        if folder and not entries and not dirs:
            return _error(404, "EntryNotFound", f"{folder} does not exist on {revision}")
        entries += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                    for d in dirs]  # fmt: skip
        entries.sort(key=lambda e: e["path"], reverse=True)
        start = int(request.query.get("cursor", "0"))
        page = entries[start : start + self.page_size]
        headers = {}
        if start + self.page_size < len(entries):
            query = {k: v for k, v in request.query.items() if k != "cursor"}
            query["cursor"] = str(start + self.page_size)
            nxt = request.url.with_query(query)
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.Response(text=json.dumps(page), content_type="application/json", headers=headers)

    def _resolve(self, request: web.Request, repo_type: str, repo_id: str, rest: list[str]) -> web.Response:
        revision = unquote(rest[0])
        path = unquote("/".join(rest[1:]))
        files, err = self._repo(request, repo_type, repo_id, revision)
        if err is not None:
            return err
        assert files is not None
        data = files.get(path)
        if data is None:
            return _error(404, "EntryNotFound", f"{path} does not exist on {revision}")
        commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
        if self._is_lfs(path, data):
            sha = hashlib.sha256(data).hexdigest()
            location = f"{self.cdn_endpoint}/cdn/{sha}?expires=3600&sig={self._cdn_epoch}-{quote(sha[:8])}"
            return web.Response(
                status=302,
                headers={
                    "Location": location,
                    "X-Linked-Size": str(len(data)),
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Repo-Commit": commit,
                    "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                },
            )
        return _bytes(request, data, {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": commit})

    def _cdn(self, request: web.Request, raw: str) -> web.Response:
        if request.headers.get("Authorization"):
            return web.Response(status=400, text="Only one auth mechanism allowed")
        sha = raw.rsplit("/", 1)[-1]
        data = self._blobs.get(sha)
        if data is None or not raw.startswith("/cdn/"):
            return web.Response(status=404, text="NoSuchKey")
        if not request.query.get("sig", "").startswith(f"{self._cdn_epoch}-"):
            return web.Response(status=403, text="Request has expired")
        return _bytes(request, data, {"ETag": f'"{sha}"'})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=status, headers={"X-Error-Code": code, "X-Error-Message": message}
    )


def _bytes(request: web.Request, data: bytes, headers: dict[str, str]) -> web.Response:
    span = _range(request.headers.get("Range"), len(data))
    headers = {**headers, "Accept-Ranges": "bytes"}
    if span == "416":
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{len(data)}"})
    if span is None:
        body, status = data, 200
    else:
        assert isinstance(span, tuple)
        body, status = data[span[0] : span[1]], 206
        headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{len(data)}"
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return web.Response(status=status, headers=headers)
    return web.Response(status=status, body=body, headers=headers)
