"""walk: the same triples as os.walk, listed by a thread pool."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from aiolit.errors import ObjectNotFoundError
from aiolit.processing.walk import walk


def normalized(triples: Iterable[tuple[str, list[str], list[str]]]) -> dict[str, tuple[list[str], list[str]]]:
    return {folder: (sorted(dirs), sorted(files)) for folder, dirs, files in triples}


def make_tree(root: Path) -> None:
    for i in range(6):
        for j in range(4):
            leaf = root / f"d{i}" / f"e{j}"
            leaf.mkdir(parents=True)
            for k in range(3):
                (leaf / f"f{k}.txt").write_text(f"{i}{j}{k}")
        (root / f"d{i}" / "top.bin").write_bytes(b"x")
    (root / "root.txt").write_text("r")
    (root / "empty").mkdir()
    os.symlink(root / "d0", root / "link-to-d0")  # reported as a folder, not entered (like os.walk)


@pytest.mark.parametrize("max_workers", [1, 3, None])
def test_same_as_os_walk(tmp_path: Path, max_workers: int | None) -> None:
    make_tree(tmp_path)
    triples = list(walk(str(tmp_path), max_workers=max_workers))
    assert normalized(triples) == normalized(os.walk(tmp_path))
    assert len(triples) == 1 + 1 + 6 * 5  # root, empty, 6 dirs with 4 subdirs each
    order = [folder for folder, _, _ in triples]
    assert order[0] == str(tmp_path)
    # A folder is yielded before any folder below it.
    for i, folder in enumerate(order):
        assert all(not folder.startswith(other + os.sep) for other in order[i + 1 :])


def test_early_stop_and_missing(tmp_path: Path) -> None:
    make_tree(tmp_path)
    iterator = walk(tmp_path, max_workers=2).__iter__()
    assert next(iterator)[0] == str(tmp_path)
    iterator.close()  # type: ignore[attr-defined]  # abandoning the walk cancels queued listings without error
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        walk(tmp_path / "nope")
