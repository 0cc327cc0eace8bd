"""ParallelStreamingDataset: tuples, transforms with seeded generators, cycling, exact resume."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiolit.streaming import StreamingDataLoader, StreamingDataset
from aiolit.streaming.parallel import ParallelStreamingDataset
from tests.streaming.test_combined import write_range


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str]:
    write_range(tmp_path / "a", 0, 20, chunk_size=4)
    write_range(tmp_path / "b", 1000, 13, chunk_size=5)
    return str(tmp_path / "a"), str(tmp_path / "b")


def ipairs(loader: Any) -> Iterator[list[tuple[int, int]]]:
    """The loader's batches as lists of (a, b) ids, lazily (the loader may be infinite)."""
    for a, b in loader:
        yield list(zip(a["i"].tolist(), b["i"].tolist(), strict=True))


def pairs(loader: Any) -> list[list[tuple[int, int]]]:
    return list(ipairs(loader))


def test_readme_parallel_tuples(dirs: tuple[str, str]) -> None:
    parallel = ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])])
    assert len(parallel) == 13
    got = [(a["i"], b["i"]) for a, b in parallel]
    assert got == [(i, 1000 + i) for i in range(13)]
    dataloader = StreamingDataLoader(parallel)
    seen = []
    for batch_1, batch_2 in dataloader:
        seen.append((int(batch_1["i"]), int(batch_2["i"])))
    assert seen == [(i, 1000 + i) for i in range(13)]


def test_transform_one_and_two_args(dirs: tuple[str, str]) -> None:
    def add(samples: tuple[Any, ...]) -> int:
        sample_1, sample_2 = samples
        return int(sample_1["i"] + sample_2["i"])

    parallel = ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])], transform=add)
    assert list(parallel) == [1000 + 2 * i for i in range(13)]
    assert [int(x) for x in StreamingDataLoader(parallel)] == [1000 + 2 * i for i in range(13)]

    def mix(samples: tuple[Any, ...], rngs: dict[str, Any]) -> tuple[float, float, float]:
        assert set(rngs) == {"random", "numpy", "torch"}
        import torch

        return (
            rngs["random"].random() * samples[0]["i"],
            float(rngs["numpy"].random()),
            float(torch.rand(1, generator=rngs["torch"])),
        )

    def run(seed: int) -> list[tuple[float, float, float]]:
        ds = [StreamingDataset(dirs[0]), StreamingDataset(dirs[1])]
        return list(ParallelStreamingDataset(ds, transform=mix, seed=seed))

    first = run(1)
    assert first == run(1)  # seeded deterministically
    assert first != run(2)
    assert len({x[1] for x in first}) == 13  # a generator, not a constant
    with pytest.raises(ValueError, match="1 or 2"):
        ParallelStreamingDataset([StreamingDataset(dirs[0])], transform=lambda a, b, c: a)


def test_readme_cycle_dataset(dirs: tuple[str, str]) -> None:
    dataset = StreamingDataset(dirs[1])  # 13 samples
    cycled_dataset = ParallelStreamingDataset([dataset], length=30)
    assert len(cycled_dataset) == 30
    dataloader = StreamingDataLoader(cycled_dataset)
    stream = [1000 + (k % 13) for k in range(90)]
    epoch1 = [int(batch["i"]) for (batch,) in dataloader]
    assert epoch1 == stream[:30]
    # resume=True: the next epoch continues where this one ended
    assert [int(batch["i"]) for (batch,) in dataloader] == stream[30:60]
    # resume=False: every epoch yields the same samples
    again = ParallelStreamingDataset([StreamingDataset(dirs[1])], length=30, resume=False)
    loader = StreamingDataLoader(again)
    assert [int(b["i"]) for (b,) in loader] == stream[:30] == [int(b["i"]) for (b,) in loader]


def test_cycling_reshuffles_each_pass(dirs: tuple[str, str]) -> None:
    cycled = ParallelStreamingDataset([StreamingDataset(dirs[1], shuffle=True)], length=39)
    got = [x["i"] for (x,) in cycled]
    passes = [got[k : k + 13] for k in range(0, 39, 13)]
    assert all(sorted(p) == list(range(1000, 1013)) for p in passes)
    assert passes[0] != passes[1] != passes[2]


def test_infinite_length(dirs: tuple[str, str]) -> None:
    parallel = ParallelStreamingDataset(
        [StreamingDataset(dirs[0]), StreamingDataset(dirs[1])], length=math.inf
    )
    assert parallel.is_infinite()
    with pytest.raises(TypeError):
        len(parallel)
    got = [(a["i"], b["i"]) for a, b in itertools.islice(parallel, 50)]
    assert got == [(k % 20, 1000 + k % 13) for k in range(50)]
    loader = StreamingDataLoader(
        ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])], length=math.inf),
        batch_size=4,
        num_workers=2,
    )
    reference = list(itertools.islice(ipairs(loader), 12))
    # resume=True (the default): a new pass of the same loader would continue; start a new one.
    loader = StreamingDataLoader(
        ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])], length=math.inf),
        batch_size=4,
        num_workers=2,
    )
    first = []
    for batch in ipairs(loader):
        first.append(batch)
        if len(first) == 5:
            break
    assert first == reference[:5]
    state = loader.state_dict()
    assert set(state) >= {"num_samples_yielded", "num_cycles", "latest_worker_idx"}
    resumed = StreamingDataLoader(
        ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])], length=math.inf),
        batch_size=4,
        num_workers=2,
    )
    resumed.load_state_dict(state)
    assert first + list(itertools.islice(ipairs(resumed), 7)) == reference


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("length", [None, 50])
def test_loader_resume_is_exact(dirs: tuple[str, str], num_workers: int, length: int | None) -> None:
    def loader() -> StreamingDataLoader:
        ds = [StreamingDataset(dirs[0], shuffle=True), StreamingDataset(dirs[1], shuffle=True)]
        return StreamingDataLoader(
            ParallelStreamingDataset(ds, length=length), batch_size=3, num_workers=num_workers
        )

    full = loader()
    reference = [pairs(full) for _ in range(2)]  # two epochs (cycling continues in the second)
    assert sum(len(b) for b in reference[0]) == (13 if length is None else 50)
    for epoch in (0, 1):
        for cut in (1, len(reference[epoch]) - 1):
            first = loader()
            if epoch:
                pairs(first)
            seen = []
            for batch in ipairs(first):
                seen.append(batch)
                if len(seen) == cut:
                    break
            state = first.state_dict()
            resumed = loader()
            resumed.load_state_dict(state)
            assert seen + pairs(resumed) == reference[epoch], (epoch, cut)


def test_direct_state_dict_and_async(dirs: tuple[str, str]) -> None:
    def make() -> ParallelStreamingDataset:
        return ParallelStreamingDataset([StreamingDataset(dirs[0]), StreamingDataset(dirs[1])], length=31)

    reference = [(a["i"], b["i"]) for a, b in make()]
    parallel = make()
    it = iter(parallel)
    seen = [(a["i"], b["i"]) for a, b in itertools.islice(it, 17)]
    state = parallel.state_dict(num_workers=0, batch_size=1)
    assert state["num_cycles"] == [0, 1]
    assert [state["0"]["num_samples_yielded"], state["1"]["num_samples_yielded"]] == [17, 4]
    again = make()
    again.load_state_dict(state)
    assert seen + [(a["i"], b["i"]) for a, b in again] == reference

    async def collect() -> list[tuple[int, int]]:
        return [(a["i"], b["i"]) async for a, b in make()]

    assert asyncio.run(collect()) == reference


def test_errors(dirs: tuple[str, str]) -> None:
    ds = StreamingDataset(dirs[0])
    with pytest.raises(ValueError, match="length"):
        ParallelStreamingDataset([ds], length=2.5)
    with pytest.raises(ValueError, match="non-empty"):
        ParallelStreamingDataset([])
    with pytest.raises(RuntimeError, match="nested"):
        ParallelStreamingDataset([ParallelStreamingDataset([ds])])  # type: ignore[list-item]
