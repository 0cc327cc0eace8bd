"""Errors a newcomer understands: a folder that is not a dataset, uneven ranks with drop_last=False."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from aiolit.errors import NotOptimizedError
from aiolit.streaming import StreamingDataLoader, StreamingDataset
from tests.streaming._data import write_dataset


def test_empty_folder_is_not_an_optimized_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(NotOptimizedError) as info:
        StreamingDataset(str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"{tmp_path} is not an optimized dataset: it has no index.json")
    assert "optimize(" in message and "{rank}" not in message
    assert type(info.value).__module__ == "aiolit.errors"
    assert isinstance(info.value, FileNotFoundError)  # what code written for LitData may catch


@pytest.mark.s3
def test_empty_prefix_is_not_an_optimized_dataset(s3_server: Any, tmp_path: Path) -> None:
    url = s3_server.new_url("empty")
    with pytest.raises(NotOptimizedError, match=r"is not an optimized dataset: it has no index\.json"):
        StreamingDataset(url, storage_options=s3_server.storage_options, cache_dir=str(tmp_path))


def _batches_per_rank(
    path: str, monkeypatch: pytest.MonkeyPatch, **kwargs: Any
) -> tuple[list[int], list[str]]:
    monkeypatch.setenv("WORLD_SIZE", "2")
    counts, messages = [], []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loader = StreamingDataLoader(StreamingDataset(path, **kwargs), batch_size=16, num_workers=0)
            counts.append(sum(1 for _ in loader))
        messages += [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return counts, messages


def test_drop_last_false_with_several_ranks_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dataset(tmp_path / "ds", 1003, chunk_size=50)
    counts, messages = _batches_per_rank(str(tmp_path / "ds"), monkeypatch, drop_last=False)
    assert counts[0] != counts[1]  # the reason for the warning: uneven batch counts
    uneven = [m for m in messages if "drop_last=False with 2 ranks" in m]
    assert uneven and "different numbers of batches" in uneven[0]

    counts, messages = _batches_per_rank(str(tmp_path / "ds"), monkeypatch)  # the default
    assert counts[0] == counts[1]
    assert not [m for m in messages if "drop_last" in m]
