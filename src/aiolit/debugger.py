"""Trace aiolit's data loading: ``from aiolit.debugger import enable_tracer`` (LitData's entry point).

::

    from aiolit.debugger import enable_tracer

    enable_tracer()  # -> aiolit_trace.json when the program exits

    if __name__ == "__main__":
        loader = StreamingDataLoader(StreamingDataset("s3://bucket/data"), batch_size=64, num_workers=4)
        for batch in loader:
            ...

The file is a Chrome trace: open it in https://ui.perfetto.dev or ``chrome://tracing`` directly
(LitData writes a log that its ``litracer`` tool converts; aiolit needs no conversion). Every
process (this one and each DataLoader worker started afterwards, fork or spawn) records its own
events and writes ``trace-{pid}.json`` into a scratch directory; this process merges them into
``path`` at exit, or earlier with :func:`flush_tracer` / :func:`disable_tracer`. See
``docs/architecture/profiling.md`` for what the rows and events mean.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import tempfile
from typing import Any

from aiolit import _trace

__all__ = ["disable_tracer", "enable_tracer", "flush_tracer"]

# LitData's enable_tracer(level="chunk", ...) levels: a positional level is not a file name.
_LITDATA_LEVELS = frozenset({"batch", "chunk", "sample", "debug"})

_state: dict[str, Any] = {}  # path, scratch directory, owner pid of the active tracer


def enable_tracer(path: str | os.PathLike[str] = "aiolit_trace.json", **litdata_options: Any) -> str:
    """Trace this process and every DataLoader worker started afterwards into ``path``.

    Parameters
    ----------
    path
        The merged Chrome trace, written at interpreter exit (and by :func:`flush_tracer`).
        LitData's level names (``"chunk"``...) are accepted and mean the default path;
        ``"off"`` is :func:`disable_tracer`.
    **litdata_options
        LitData's other options (``categories``, ``log_file``, ``flush_interval``...) are
        accepted and ignored: aiolit always records its download, read and batch events.

    Returns
    -------
    str
        The absolute path the trace will be written to.
    """
    del litdata_options
    name = os.fspath(path)
    if name == "off":
        disable_tracer()
        return ""
    if name in _LITDATA_LEVELS:
        name = "aiolit_trace.json"
    out = os.path.abspath(name)
    inherited = os.environ.get(_trace.ENV)
    if inherited and _state.get("pid") is None and _in_child():
        # A spawned worker re-running the main module's enable_tracer(): it traces into the
        # parent's directory (set up at import); the parent merges.
        _trace.enable(inherited)
        return out
    if _state.get("pid") == os.getpid():
        _state["path"] = out
        _trace.enable(_state["dir"], export=True)
        return out
    scratch = tempfile.mkdtemp(prefix="aiolit-trace-")
    _state.update(path=out, dir=scratch, pid=os.getpid())
    _trace.enable(scratch, export=True)
    if not _state.get("atexit"):
        # Registered after multiprocessing's handler, so it runs first (LIFO): workers that
        # are still alive have written their files at the end of their last pass.
        atexit.register(_at_exit)
        _state["atexit"] = True
    return out


def flush_tracer() -> str | None:
    """Write the merged trace now (everything recorded so far); returns its path.

    Workers contribute what they wrote last: a DataLoader worker writes its file at the end of
    each pass over its data (and when it exits).
    """
    if _state.get("pid") != os.getpid():
        return None
    _trace.flush()  # this process's own file too, for anyone merging the directory by hand
    return _trace.merge(_state["dir"], _state["path"], extra=_trace.events(), exclude_pids=[os.getpid()])


def disable_tracer() -> str | None:
    """Stop tracing, write the merged trace (returned) and remove the scratch directory."""
    path = flush_tracer()
    if _state.get("pid") == os.getpid():
        _trace.disable(unexport=True)
        _trace.clear()
        shutil.rmtree(_state["dir"], ignore_errors=True)
        _state.pop("pid", None)
    return path


def _in_child() -> bool:
    # A spawned child runs the main module while starting, before parent_process() is set.
    return (
        multiprocessing.parent_process() is not None
        or multiprocessing.current_process().name != "MainProcess"
    )


def _at_exit() -> None:
    if _state.get("pid") == os.getpid():
        disable_tracer()
