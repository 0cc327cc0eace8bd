"""Combined/ParallelStreamingDataset over datasets that are not StreamingDatasets (as LitData's tests use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from aiolit.streaming import (
    CombinedStreamingDataset,
    ParallelStreamingDataset,
    StreamingDataLoader,
    StreamingDataset,
)
from tests.streaming.test_combined import write_range


class Squares(Dataset[int]):
    """A map-style dataset."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return 10_000 + i * i


class Counting(IterableDataset[int]):
    """A sized iterable dataset that is the same every epoch (it does not split over workers)."""

    def __init__(self, n: int, step: int) -> None:
        self.n, self.step = n, step
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        return iter(range(0, self.n * self.step, self.step))

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


class Stateful:
    """LitData's test dataset: an iterator with __len__ and no __getitem__."""

    def __init__(self, size: int, step: int) -> None:
        self.size, self.step, self.counter = size, step, 0
        self.shuffle: bool | None = None

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Stateful:
        self.counter = 0
        return self

    def __next__(self) -> int:
        if self.counter == self.size:
            raise StopIteration
        self.counter += 1
        return self.step * (self.counter - 1)

    def set_shuffle(self, shuffle: bool) -> None:
        self.shuffle = shuffle


@pytest.mark.parametrize(
    ("first", "second", "length"),
    [
        (range(5), range(0, -5, -1), None),
        (range(10), range(0, -5, -1), None),
        (range(5), range(0, -5, -1), 5),
        (range(10), range(0, -5, -1), 8),
        (range(5), range(0, -5, -1), 8),
        (range(10), range(0), None),
    ],
)
def test_parallel_over_ranges_matches_litdata(first: range, second: range, length: int | None) -> None:
    from litdata.streaming.parallel import ParallelStreamingDataset as LitParallel

    class Unchecked(LitParallel):  # type: ignore[misc]
        def _check_datasets(self, datasets: Any) -> None:  # LitData's own tests bypass its check
            pass

    expected = list(Unchecked([first, second], length=length))
    ours = ParallelStreamingDataset([first, second], length=length)
    assert len(ours) == len(expected)
    assert list(ours) == expected


def test_combined_over_iterables_and_lists() -> None:
    a, b = Stateful(10, 1), Stateful(10, -1)
    combined = CombinedStreamingDataset([a, b], seed=42)
    got = list(combined)
    assert sorted(got) == sorted(list(range(10)) + [-x for x in range(10)])
    assert [x for x in got if x > 0] == list(range(1, 10))  # each stream in its order
    # weighted, stop at the first exhausted dataset: each dataset's samples are a prefix of it
    weighted = list(CombinedStreamingDataset([Stateful(10, 1), Stateful(10, -1)], 42, [0.5, 0.5], False))
    pos, neg = [x for x in weighted if x > 0], [x for x in weighted if x < 0]
    assert pos == list(range(1, len(pos) + 1)) and neg == [-x for x in range(1, len(neg) + 1)]
    assert 9 in (len(pos), len(neg))  # the epoch ended when one of them ran out
    # the user's objects are what `datasets` returns, and their attributes show through
    assert combined.datasets == [a, b]
    StreamingDataLoader(combined, batch_size=2, shuffle=True)
    assert a.shuffle is True and combined._datasets[0].shuffle is True
    assert sorted(map(str, CombinedStreamingDataset([[1, 2, 3], "ab"], seed=1))) == ["1", "2", "3", "a", "b"]


def _value(sample: dict[str, int]) -> int:
    return sample["i"]


def _ids(batches: list[Any]) -> list[list[int]]:
    return [b.tolist() for b in batches]


def test_map_style_is_split_over_workers_and_resumes_exactly(tmp_path: Path) -> None:
    write_range(tmp_path / "s", 0, 23, chunk_size=5)

    def loader() -> StreamingDataLoader:
        streaming = StreamingDataset(str(tmp_path / "s"), transform=_value)
        datasets = [streaming, Squares(17), list(range(-1, -12, -1))]
        return StreamingDataLoader(CombinedStreamingDataset(datasets, seed=3), batch_size=3, num_workers=2)

    reference = _ids(list(loader()))
    want = list(range(23)) + [10_000 + i * i for i in range(17)] + list(range(-1, -12, -1))
    assert sorted(x for b in reference for x in b) == sorted(want)  # once each: no per-worker copies
    assert len(reference) == len(loader())
    for cut in (1, 5):
        first = loader()
        seen = []
        for batch in first:
            seen.append(batch.tolist())
            if len(seen) == cut:
                break
        resumed = loader()
        resumed.load_state_dict(first.state_dict())
        assert seen + _ids(list(resumed)) == reference


def test_iterable_is_iterated_by_every_worker_and_resumes_by_skipping() -> None:
    def loader(counting: Counting) -> StreamingDataLoader:
        parallel = ParallelStreamingDataset([Squares(12), counting], length=None)
        return StreamingDataLoader(parallel, batch_size=2, num_workers=2)

    reference = [tuple(t.tolist() for t in batch) for batch in loader(Counting(6, 5))]
    # Squares is split (6 samples per worker); every worker iterates Counting whole (0, 5, ... 25)
    firsts = sorted(x for a, _ in reference for x in a)
    assert firsts == [10_000 + i * i for i in range(12)]
    assert sorted(x for _, b in reference for x in b) == sorted(list(range(0, 30, 5)) * 2)
    first = loader(Counting(6, 5))
    seen = []
    for batch in first:
        seen.append(tuple(t.tolist() for t in batch))
        if len(seen) == 3:
            break
    resumed = loader(Counting(6, 5))
    resumed.load_state_dict(first.state_dict())
    assert seen + [tuple(t.tolist() for t in batch) for batch in resumed] == reference


def test_refused_datasets_say_why() -> None:
    def unsized() -> Any:
        yield from range(3)

    with pytest.raises(ValueError, match=r"datasets\[1\] \(generator\) has no len\(\).*give it a __len__"):
        CombinedStreamingDataset([range(3), unsized()])
    inner = ParallelStreamingDataset([range(3)])
    with pytest.raises(
        RuntimeError, match=r"datasets\[0\] is a ParallelStreamingDataset: wrappers cannot be nested"
    ):
        CombinedStreamingDataset([inner, range(2)])
    assert torch.equal(torch.tensor(list(ParallelStreamingDataset([range(3)]))).flatten(), torch.arange(3))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_parallel_cycling_foreign_datasets_resumes_exactly(num_workers: int) -> None:
    def loader() -> StreamingDataLoader:
        parallel = ParallelStreamingDataset([Squares(7), range(100, 105)], length=12)
        return StreamingDataLoader(parallel, batch_size=2, num_workers=num_workers)

    def rows(batches: Any) -> list[tuple[list[int], list[int]]]:
        return [(a.tolist(), b.tolist()) for a, b in batches]

    reference = rows(loader())
    assert sum(len(a) for a, _ in reference) == 12
    if num_workers == 0:  # one worker cycles both: 7 then 5 samples per pass
        assert [x for _, b in reference for x in b] == [100, 101, 102, 103, 104] * 2 + [100, 101]
    for cut in (1, 4):
        first = loader()
        seen = []
        for batch in first:
            seen.append(batch)
            if len(seen) == cut:
                break
        resumed = loader()
        resumed.load_state_dict(first.state_dict())
        assert rows(seen) + rows(resumed) == reference
