"""A tiny Chrome-trace recorder, one per process.

Trace points guard themselves with the module attribute :data:`on` (``if _trace.on:``), so a
switched-off recorder costs one attribute check per site: no allocation, no clock read. When on,
events are kept in memory as tuples and written as Chrome trace JSON (``chrome://tracing``,
https://ui.perfetto.dev) to ``{directory}/trace-{pid}.json`` by :func:`flush`, which runs at exit
too (``atexit`` in the main process, a ``multiprocessing`` finalizer in child processes, whose
``atexit`` handlers never run). :func:`merge` joins per-process files into one trace.

Tracing is off by default. ``AIOLIT_TRACE_DIR=/some/dir`` turns it on at import, in every process
that imports aiolit with that variable set (DataLoader workers inherit it, fork or spawn); so does
:func:`enable`. Timestamps come from :func:`time.perf_counter`, a system-wide monotonic clock on
Linux, macOS and Windows, so the events of all processes of one machine share one time axis.
Every event carries ``pid`` and a ``tid``: one small id per thread name, so the consumer thread
and aiolit's loop thread show up as separate rows. ``AIOLIT_TRACE_MAX_EVENTS`` (default 5M) caps
the events one process keeps; the rest are counted and reported in a ``trace truncated`` event.
"""

from __future__ import annotations

import atexit
import glob
import json
import multiprocessing.util
import os
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

__all__ = [
    "ENV",
    "begin",
    "clear",
    "complete",
    "counter",
    "directory",
    "disable",
    "enable",
    "enabled",
    "end",
    "events",
    "file_of",
    "flush",
    "instant",
    "mark",
    "merge",
    "now",
    "on",
    "read_events",
    "set_process_name",
    "span",
    "truncate",
    "write",
]

ENV = "AIOLIT_TRACE_DIR"
_MAX_ENV = "AIOLIT_TRACE_MAX_EVENTS"

#: The switch every trace point checks. Read it as ``_trace.on`` (never ``from ... import on``).
on: bool = False
#: The clock of every event (seconds; events store microseconds).
now = time.perf_counter

# (ph, name, cat, ts_us, dur_us, tid, args)
_Event = tuple[str, str, str, float, float, int, "dict[str, Any] | None"]

_dir: str | None = None
_events: list[_Event] = []
_pid = os.getpid()
_tids: dict[int, int] = {}  # thread ident -> tid
_tid_of_name: dict[str, int] = {}  # thread name -> tid
_process_name: str | None = None
_dropped = 0
_lock = threading.Lock()
try:
    _max_events = int(os.environ.get(_MAX_ENV, "") or 5_000_000)
except ValueError:
    _max_events = 5_000_000


def enabled() -> bool:
    """Whether this process records events."""
    return on


def directory() -> str | None:
    """Where :func:`flush` writes this process's file (None: nowhere, events stay in memory)."""
    return _dir


def enable(path: str | os.PathLike[str] | None = None, *, export: bool = False) -> None:
    """Record events in this process; ``path``: the directory of the per-process files.

    ``export=True`` also sets ``AIOLIT_TRACE_DIR`` so that processes started later (spawned
    DataLoader workers included) trace into the same directory.
    """
    global on, _dir
    if path is not None:
        _dir = os.path.abspath(os.fspath(path))
        os.makedirs(_dir, exist_ok=True)
        if export:
            os.environ[ENV] = _dir
    on = True


def disable(*, unexport: bool = False) -> None:
    """Stop recording (the events recorded so far are kept for :func:`flush`)."""
    global on
    on = False
    if unexport:
        os.environ.pop(ENV, None)


def clear() -> None:
    """Forget this process's events and its file directory."""
    global _dir, _dropped
    _events.clear()
    _dropped = 0
    _dir = None


def truncate(position: int) -> None:
    """Drop this process's events recorded after :func:`mark` returned ``position``."""
    del _events[position:]


def set_process_name(name: str) -> None:
    """The label of this process's row group (default: ``main`` or ``DataLoader worker N``)."""
    global _process_name
    _process_name = name


# -- recording ------------------------------------------------------------------------------------


def _tid() -> int:
    ident = threading.get_ident()
    tid = _tids.get(ident)
    if tid is None:
        with _lock:
            name = threading.current_thread().name
            tid = _tid_of_name.setdefault(name, len(_tid_of_name) + 1)
            _tids[ident] = tid
    return tid


def _add(event: _Event) -> None:
    global _dropped
    if len(_events) < _max_events:
        _events.append(event)
    else:
        _dropped += 1


def complete(name: str, cat: str, start: float, end: float, args: dict[str, Any] | None = None) -> None:
    """A finished span (``ph: X``) from ``start`` to ``end`` (:func:`now` values)."""
    _add(("X", name, cat, start * 1e6, (end - start) * 1e6, _tid(), args))


def begin(name: str, cat: str, **args: Any) -> None:
    """Open a span on this thread (``ph: B``); close it with :func:`end`."""
    _add(("B", name, cat, now() * 1e6, 0.0, _tid(), args or None))


def end(name: str, cat: str, **args: Any) -> None:
    """Close the innermost span of this thread opened by :func:`begin` (``ph: E``)."""
    _add(("E", name, cat, now() * 1e6, 0.0, _tid(), args or None))


def instant(name: str, cat: str, **args: Any) -> None:
    """A point in time on this thread's row (``ph: i``)."""
    _add(("i", name, cat, now() * 1e6, 0.0, _tid(), args or None))


def counter(name: str, cat: str, **values: float) -> None:
    """A counter track of this process (``ph: C``): one series per keyword."""
    _add(("C", name, cat, now() * 1e6, 0.0, _tid(), values))


class _Span:
    __slots__ = ("args", "cat", "name", "start")

    def __init__(self, name: str, cat: str, args: dict[str, Any] | None) -> None:
        self.name, self.cat, self.args, self.start = name, cat, args, 0.0

    def __enter__(self) -> _Span:
        self.start = now()
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        args = self.args
        if typ is not None:
            args = {**(args or {}), "error": typ.__name__}
        complete(self.name, self.cat, self.start, now(), args)


class _NoSpan:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def span(name: str, cat: str, **args: Any) -> _Span | _NoSpan:
    """``with span(...):`` records a ``ph: X`` event around the block (nothing when off).

    The keyword arguments are packed even when tracing is off: hot code checks :data:`on` first.
    """
    if not on:
        return _NO_SPAN
    return _Span(name, cat, args or None)


# -- output ---------------------------------------------------------------------------------------


def mark() -> int:
    """A position in this process's event list, for :func:`events` ``(since=...)``."""
    return len(_events)


def _default_process_name() -> str:
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    if info is not None:
        return f"DataLoader worker {info.id}"
    return "main" if multiprocessing.parent_process() is None else "process"


def events(since: int = 0) -> list[dict[str, Any]]:
    """This process's events from position ``since``, as Chrome trace dicts (metadata first)."""
    pid = os.getpid()
    with _lock:
        names = {tid: name for name, tid in _tid_of_name.items()}
    out: list[dict[str, Any]] = [
        {
            "name": "process_name",
            "ph": "M",
            "ts": 0,
            "pid": pid,
            "tid": 0,
            "args": {"name": f"{_process_name or _default_process_name()} (pid {pid})"},
        },
    ]
    for tid, name in sorted(names.items()):
        out.append(
            {"name": "thread_name", "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": {"name": name}}
        )
    for ph, name, cat, ts, dur, tid, args in _events[since:]:
        event: dict[str, Any] = {"name": name, "cat": cat, "ph": ph, "ts": ts, "pid": pid, "tid": tid}
        if ph == "X":
            event["dur"] = dur
        elif ph == "i":
            event["s"] = "t"
        if args:
            event["args"] = args
        out.append(event)
    if _dropped:
        out.append(
            {
                "name": "trace truncated",
                "cat": "trace",
                "ph": "i",
                "s": "p",
                "ts": now() * 1e6,
                "pid": pid,
                "tid": 0,
                "args": {"dropped_events": _dropped, "max": _max_events},
            }
        )
    return out


def write(path: str | os.PathLike[str], trace_events: Sequence[dict[str, Any]]) -> str:
    """Write ``{"traceEvents": ..., "displayTimeUnit": "ms"}`` to ``path`` atomically."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"traceEvents": list(trace_events), "displayTimeUnit": "ms"}, f)
    os.replace(tmp, path)
    return path


def file_of(pid: int, where: str | None = None) -> str | None:
    """The per-process file of ``pid`` in ``where`` (default: this process's directory)."""
    where = where if where is not None else _dir
    return None if where is None else os.path.join(where, f"trace-{pid}.json")


def flush(path: str | os.PathLike[str] | None = None) -> str | None:
    """Write every event of this process to ``path`` (default ``{directory}/trace-{pid}.json``).

    Returns the path written, or None (no directory, or nothing recorded). Never raises OSError
    (a trace must not break the program): a failed write is reported on stderr.
    """
    target = os.fspath(path) if path is not None else file_of(os.getpid())
    if target is None or not _events:
        return None
    try:
        return write(target, events())
    except OSError as exc:
        if os.path.isdir(os.path.dirname(target) or "."):
            print(f"aiolit: could not write the trace {target}: {exc}", file=sys.stderr)
        return None


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The ``traceEvents`` of a trace file (``[]`` when it is missing or not a complete trace)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    found = data.get("traceEvents") if isinstance(data, dict) else data
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def merge(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    extra: Sequence[dict[str, Any]] = (),
    exclude_pids: Iterable[int] = (),
    since: float | None = None,
    until: float | None = None,
) -> str:
    """Merge per-process trace files (a directory's ``trace-*.json`` or a list) into ``out``.

    ``extra``: events to add (this process's, from :func:`events`); files of ``exclude_pids`` are
    skipped (their events are in ``extra``). ``since``/``until`` (:func:`now` seconds) keep only
    events overlapping that window (metadata is always kept).
    """
    if isinstance(sources, str | os.PathLike):
        paths = sorted(glob.glob(os.path.join(os.fspath(sources), "trace-*.json")))
    else:
        paths = [os.fspath(p) for p in sources]
    skip = {f"trace-{pid}.json" for pid in exclude_pids}
    merged = list(extra)
    for path in paths:
        if os.path.basename(path) not in skip:
            merged.extend(read_events(path))
    if since is not None or until is not None:
        lo = -float("inf") if since is None else since * 1e6
        hi = float("inf") if until is None else until * 1e6
        merged = [
            e
            for e in merged
            if e.get("ph") == "M" or (e.get("ts", 0) + e.get("dur", 0) >= lo and e.get("ts", 0) <= hi)
        ]
    return write(out, merged)


# -- process life -----------------------------------------------------------------------------------


def _at_exit() -> None:
    if _dir is not None:
        flush()


class _Anchor:
    """A weak-referenceable object for ``multiprocessing.util.register_after_fork``."""


_ANCHOR = _Anchor()


def _in_child(_: object) -> None:
    # A multiprocessing child (fork or spawn) clears the finalizers, then runs these hooks:
    # its atexit handlers never run, a finalizer with an exit priority does.
    multiprocessing.util.Finalize(None, _at_exit, exitpriority=100)


def _after_fork() -> None:
    # The parent's events are the parent's; the child keeps the switch and the directory.
    global _pid, _process_name, _dropped
    _events.clear()
    _tids.clear()
    _tid_of_name.clear()
    _pid, _process_name, _dropped = os.getpid(), None, 0


os.register_at_fork(after_in_child=_after_fork)
multiprocessing.util.register_after_fork(_ANCHOR, _in_child)
atexit.register(_at_exit)
if multiprocessing.parent_process() is not None:
    _in_child(None)  # imported in a spawned child, after its start-up cleared the finalizers
if os.environ.get(ENV):
    try:
        enable(os.environ[ENV])
    except OSError as _exc:
        print(f"aiolit: {ENV}={os.environ[ENV]!r} is not usable, tracing stays off: {_exc}", file=sys.stderr)
