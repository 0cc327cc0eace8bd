"""Catch the two ways a script breaks the ``spawn`` start method, before any worker starts.

With ``spawn`` (and ``forkserver``) every worker process imports the main script again to find
``fn``. A script without an ``if __name__ == "__main__":`` guard then runs its ``optimize(...)``
call once more in every worker (each writing into the same output), and a script read from stdin
(``python -``) or given with ``python -c`` cannot be imported at all.
"""

from __future__ import annotations

import ast
import functools
import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Any

from aiolit.errors import OptimizeError

__all__ = ["check_spawn_safe"]

_GUARD_FIX = (
    'Put the call under `if __name__ == "__main__":` (the multiprocessing "safe importing of the '
    "main module\" rule), or pass start_method='fork' (Linux)."
)


def _guard_error(what: str) -> OptimizeError:
    return OptimizeError(
        f"{what}() was called while a worker process was importing your script: the script has no "
        '`if __name__ == "__main__":` guard, so every worker started with "spawn" runs the script\'s '
        f"top-level code again (another {what} into the same output). {_GUARD_FIX}"
    )


def _defined_in_main(fn: Callable[..., Any]) -> bool:
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    module = getattr(target, "__module__", None)
    if module is None and not isinstance(target, type):
        module = getattr(type(target), "__module__", None)
    return module == "__main__"


def _main_file() -> str | None:
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path if isinstance(path, str) and os.path.isfile(path) else None


def _unguarded_call_line() -> int | None:
    """The line of the main script's top-level statement that led here, if it is not guarded."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            break
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None  # not called from the main script's top level (a function, a REPL, pytest)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and (spec.name == "__main__" or spec.name.endswith(".__main__")):
        return None  # `python -m pkg`: spawn never re-imports a package's __main__ (multiprocessing.spawn)
    path = _main_file()
    if path is None or os.path.abspath(frame.f_code.co_filename) != os.path.abspath(path):
        return None
    line = frame.f_lineno
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), path)
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        guarded = isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)
        if guarded and node.lineno <= line <= (node.end_lineno or node.lineno):  # type: ignore[attr-defined]
            return None
    return line


def check_spawn_safe(what: str, fn: Callable[..., Any], start_method: str) -> None:
    """Raise a clear :class:`OptimizeError` where spawned workers would re-run or miss the script.

    Raises
    ------
    OptimizeError
        Called from a worker importing the main script (no ``__main__`` guard), from an unguarded
        top-level statement of the main script, or with ``fn`` defined in a script read from stdin
        or ``-c`` while workers are spawned.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise _guard_error(what)
    if start_method == "fork":
        return
    line = _unguarded_call_line()
    if line is not None:
        raise OptimizeError(
            f"{what}() is called at the top level of {_main_file()} (line {line}) without an "
            f'`if __name__ == "__main__":` guard: worker processes started with "{start_method}" import '
            f"the script again and would each run this {what} once more. {_GUARD_FIX}"
        )
    if _defined_in_main(fn) and _main_file() is None:
        source = "stdin (`python -`)" if sys.argv[:1] == ["-"] else "the command line (`python -c`) or a REPL"
        raise OptimizeError(
            f"fn ({getattr(fn, '__qualname__', fn)!r}) is defined in a script read from {source}: worker "
            f'processes started with "{start_method}" re-import the main script to find fn, and a script '
            "that is not a file cannot be imported. Save the script to a file and run `python script.py`, "
            "move fn into an importable module, or pass start_method='fork' (Linux)."
        )
