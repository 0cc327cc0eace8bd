"""``walk``: ``os.walk`` with the directory listings done by a thread pool (LitData's helper).

On network file systems (FUSE mounts, NFS) a listing is a round trip, so listing many
directories at once is much faster than ``os.walk``'s one-at-a-time recursion.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Iterator

from aiolit.errors import ObjectNotFoundError

__all__ = ["walk"]


def _list(folder: str) -> tuple[str, list[str], list[str]]:
    # scandir's d_type spares a stat per entry; symlinks to directories are listed, not followed.
    folders: list[str] = []
    files: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                (folders if is_dir else files).append(entry.name)
    except OSError:
        pass  # like os.walk: an unreadable or vanished directory is skipped
    return folder, folders, files


class walk:
    """Iterate ``(folder, subfolders, filenames)`` for ``folder`` and every directory below it.

    The triples are those of ``os.walk(folder)`` (symlinked directories are reported, not
    entered), but in completion order: a folder always comes before its subfolders, siblings
    come in any order. Unreadable directories are skipped, as ``os.walk`` does.

    Parameters
    ----------
    folder : str or os.PathLike
        The top directory.
    max_workers : int, optional
        Threads listing directories (default ``os.cpu_count()``).

    Raises
    ------
    ObjectNotFoundError
        When ``folder`` is not a directory (``os.walk`` would silently yield nothing).
    """

    def __init__(self, folder: str | os.PathLike[str], max_workers: int | None = os.cpu_count()) -> None:
        self.folder = os.fspath(folder)
        self.max_workers = max(1, max_workers or 1)
        if not os.path.isdir(self.folder):
            raise ObjectNotFoundError(f"walk: {self.folder} does not exist or is not a directory")

    def __iter__(self) -> Iterator[tuple[str, list[str], list[str]]]:
        with concurrent.futures.ThreadPoolExecutor(
            self.max_workers, thread_name_prefix="aiolit-walk"
        ) as pool:
            waiting: list[str] = [self.folder]
            running: set[concurrent.futures.Future[tuple[str, list[str], list[str]]]] = set()
            try:
                while waiting or running:
                    # Bound the queued listings so a huge tree does not flood the pool at once.
                    while waiting and len(running) < 2 * self.max_workers:
                        running.add(pool.submit(_list, waiting.pop()))
                    done, running = concurrent.futures.wait(
                        running, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in done:
                        folder, folders, files = future.result()
                        waiting.extend(
                            os.path.join(folder, name)
                            for name in folders
                            if not os.path.islink(os.path.join(folder, name))
                        )
                        yield folder, folders, files
            finally:
                for future in running:  # the caller stopped early
                    future.cancel()
