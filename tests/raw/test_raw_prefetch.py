"""StreamingRawDataset(max_prefetch=, prefetch_cache_size=): LitData's look-ahead; empty folders."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from aiolit import _loop
from aiolit.errors import NoFilesFoundError, ObjectNotFoundError
from aiolit.raw import StreamingRawDataset


def make(tmp_path: Path, n: int = 20) -> tuple[Path, list[bytes]]:
    root = tmp_path / "files"
    root.mkdir()
    data = [f"file {i} ".encode() * (i + 1) for i in range(n)]
    for i, d in enumerate(data):
        (root / f"f{i:02d}.txt").write_bytes(d)
    return root, data


def remove_from(root: Path, first: int) -> None:
    for path in sorted(root.iterdir())[first:]:
        path.unlink()


def readable(ds: StreamingRawDataset, indices: range, data: list[bytes]) -> list[int]:
    """Indices still served (from the prefetch cache) after their files were deleted."""
    out = []
    for i in indices:
        try:
            got = ds[i]
        except ObjectNotFoundError:
            continue
        assert got == data[i]
        out.append(i)
    return out


@pytest.mark.parametrize(
    ("max_prefetch", "cache_size", "served"),
    [(4, None, 4), (4, 2, 2), (0, None, 0), (4, 0, 0), (30, None, 18)],
)
def test_look_ahead_after_a_sequential_batch(
    tmp_path: Path, max_prefetch: int, cache_size: int | None, served: int
) -> None:
    root, data = make(tmp_path)
    ds = StreamingRawDataset(
        root, cache_dir=tmp_path / "cache", max_prefetch=max_prefetch, prefetch_cache_size=cache_size
    )
    assert ds.max_prefetch == max_prefetch
    assert ds.prefetch_cache_size == (2 * max_prefetch if cache_size is None else cache_size)
    assert ds.__getitems__([0, 1]) == data[:2]
    _loop.run(ds._prefetch_done())
    remove_from(root, 2)  # what was read ahead is served from memory, the rest is gone
    got = readable(ds, range(2, 20), data)
    assert len(got) == served
    if cache_size is None:
        assert got == list(range(2, 2 + served))  # the items right after the batch
    assert set(got) <= set(range(2, 2 + max_prefetch))


def test_random_batches_do_not_read_ahead(tmp_path: Path) -> None:
    root, data = make(tmp_path)
    ds = StreamingRawDataset(root, cache_dir=tmp_path / "cache", max_prefetch=4)
    assert ds.__getitems__([5, 0, 9]) == [data[5], data[0], data[9]]
    _loop.run(ds._prefetch_done())
    remove_from(root, 0)
    assert readable(ds, range(20), data) == []


def test_async_look_ahead(tmp_path: Path) -> None:
    root, data = make(tmp_path)

    async def run() -> list[bytes]:
        ds = await StreamingRawDataset.acreate(root, cache_dir=tmp_path / "cache", max_prefetch=3)
        assert await ds.aget_many([4, 5]) == data[4:6]
        await ds._prefetch_done()
        remove_from(root, 0)
        got = await ds.aget_many([6, 7, 8])
        with pytest.raises(ObjectNotFoundError):
            await ds.aget(9)
        return got

    assert asyncio.run(run()) == data[6:9]


def test_loader_workers_get_every_item_once(tmp_path: Path) -> None:
    root, data = make(tmp_path, 23)
    ds = StreamingRawDataset(root, cache_dir=tmp_path / "cache", max_prefetch=4, prefetch_cache_size=3)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=list)
    for _epoch in range(2):
        assert [x for batch in loader for x in batch] == data


def test_bad_prefetch_arguments(tmp_path: Path) -> None:
    root, _ = make(tmp_path, 2)
    with pytest.raises(ValueError, match="max_prefetch must be an int"):
        StreamingRawDataset(root, cache_dir=tmp_path / "cache", max_prefetch=2.5)  # type: ignore[arg-type]
    # negative values turn prefetching off, as LitData's max(0, ...)
    ds = StreamingRawDataset(root, cache_dir=tmp_path / "cache", max_prefetch=-3)
    assert ds.max_prefetch == 0 and ds.prefetch_cache_size == 0


def test_empty_folder_is_a_value_error_too(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files found") as info:
        StreamingRawDataset(tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert isinstance(info.value, NoFilesFoundError) and isinstance(info.value, ObjectNotFoundError)
