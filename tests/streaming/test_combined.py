"""CombinedStreamingDataset: coverage, weights, per_stream batching, lengths, exact resume."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiolit.errors import StateDictError
from aiolit.format import ChunkWriter, merge_shards
from aiolit.streaming import StreamingDataLoader, StreamingDataset, TokensLoader
from aiolit.streaming.combined import CombinedStreamingDataset, schedule
from tests.streaming._data import write_tokens


def write_range(path: Path, start: int, n: int, chunk_size: int = 5) -> list[int]:
    """Samples ``{"i": start + j}`` for j < n; returns the ids."""
    writer = ChunkWriter(str(path), chunk_size=chunk_size)
    for j in range(n):
        writer.add({"i": start + j})
    writer.done()
    merge_shards(str(path))
    return list(range(start, start + n))


@pytest.fixture
def two_dirs(tmp_path: Path) -> tuple[str, str, list[int], list[int]]:
    a = write_range(tmp_path / "a", 0, 30, chunk_size=4)
    b = write_range(tmp_path / "b", 1000, 17, chunk_size=5)
    return str(tmp_path / "a"), str(tmp_path / "b"), a, b


def ids(batches: list[Any]) -> list[list[int]]:
    return [b["i"].tolist() for b in batches]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def test_schedule_weights_ratio_and_exhaustion() -> None:
    # iterate_over_all=False with weights: stops at the first draw of an exhausted dataset.
    picks = schedule([0.7, 0.2, 0.1], [100_000] * 3, seed=(7, 1, 0, 0), iterate_over_all=False)
    counts = np.bincount(picks, minlength=3)
    assert counts[0] == 100_000  # dataset 0 runs out first
    assert abs(counts[1] / len(picks) - 0.2) < 0.01
    assert abs(counts[2] / len(picks) - 0.1) < 0.01
    # deterministic
    again = schedule([0.7, 0.2, 0.1], [100_000] * 3, seed=(7, 1, 0, 0), iterate_over_all=False)
    assert np.array_equal(picks, again)
    # iterate_over_all: every sample of every dataset, exhausted datasets leave the draw
    picks = schedule([0.5, 0.25, 0.25], [5000, 50, 3000], seed=(1, 2, 0, 0), iterate_over_all=True)
    assert np.bincount(picks).tolist() == [5000, 50, 3000]
    # weight 0 is never drawn
    picks = schedule([1.0, 0.0], [10, 10], seed=(1,), iterate_over_all=False)
    assert picks.tolist() == [0] * 10


def test_schedule_per_stream_runs() -> None:
    picks = schedule([0.5, 0.5], [40, 60], seed=(3,), iterate_over_all=True, run_lengths=[4, 6])
    assert np.bincount(picks).tolist() == [40, 60]
    runs = [(int(v), len(list(g))) for v, g in itertools.groupby(picks.tolist())]
    # a run is a whole batch of its dataset (the next draw picks the other one while both are left)
    assert all(n % (4 if d == 0 else 6) == 0 for d, n in runs)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterate_over_all_yields_every_sample_once(two_dirs: Any, num_workers: int) -> None:
    a_dir, b_dir, a, b = two_dirs
    combined = CombinedStreamingDataset([StreamingDataset(a_dir), StreamingDataset(b_dir)])
    assert combined.weights == pytest.approx([30 / 47, 17 / 47])
    assert len(combined) == 47
    got = [x["i"] for x in combined]
    assert sorted(got) == a + b
    # order inside each dataset is its own order
    assert [i for i in got if i < 1000] == a and [i for i in got if i >= 1000] == b
    loader = StreamingDataLoader(combined, batch_size=4, num_workers=num_workers)
    batches = ids(list(loader))
    assert sorted(flat(batches)) == a + b
    assert len(loader) == len(batches)


def test_readme_weighted_tokens_mix(tmp_path: Path) -> None:
    # The README's TinyLlama mix: TokensLoader datasets, weights, iterate_over_all=False, a loader.
    seqs_a = [np.arange(k * 100, k * 100 + 37, dtype=np.int64) for k in range(30)]
    seqs_b = [np.arange(10**6 + k * 100, 10**6 + k * 100 + 23, dtype=np.int64) for k in range(30)]
    write_tokens(tmp_path / "slim", seqs_a, chunk_size=6)
    write_tokens(tmp_path / "star", seqs_b, chunk_size=6)
    block = 8 + 1
    datasets = [
        StreamingDataset(
            str(tmp_path / d), item_loader=TokensLoader(block_size=block), shuffle=True, drop_last=True
        )
        for d in ("slim", "star")
    ]
    weights = (0.693584, 0.306416)
    combined = CombinedStreamingDataset(datasets=datasets, seed=42, weights=weights, iterate_over_all=False)
    loader = StreamingDataLoader(combined, batch_size=8, pin_memory=False, num_workers=2)
    rows = [row for batch in loader for row in batch.tolist()]
    assert len(rows) == len(combined) > 0
    # every row is one real block of one of the datasets, no block twice
    blocks_a = _blocks(tmp_path / "slim", block)
    blocks_b = _blocks(tmp_path / "star", block)
    assert all(tuple(r) in blocks_a or tuple(r) in blocks_b for r in rows)
    assert len({tuple(r) for r in rows}) == len(rows)
    from_a = sum(tuple(r) in blocks_a for r in rows)
    assert from_a > len(rows) // 2


def _blocks(path: Path, block: int) -> set[tuple[int, ...]]:
    """Every block of a token dataset, read in order without shuffling."""
    blocks = [tuple(x.tolist()) for x in StreamingDataset(str(path), item_loader=TokensLoader(block))]
    assert len(blocks) == len(set(blocks)) > 0
    return set(blocks)


def test_weights_ratio_over_many_samples(tmp_path: Path) -> None:
    a = write_range(tmp_path / "a", 0, 3000, chunk_size=250)
    b = write_range(tmp_path / "b", 10_000, 3000, chunk_size=250)
    combined = CombinedStreamingDataset(
        [StreamingDataset(str(tmp_path / "a")), StreamingDataset(str(tmp_path / "b"))],
        weights=[3, 1],  # normalised
        iterate_over_all=False,
        seed=5,
    )
    assert combined.weights == [0.75, 0.25]
    expected_len = len(combined)  # exact, for this epoch's draws
    got = [x["i"] for x in combined]
    assert len(got) == expected_len
    from_a = [i for i in got if i < 10_000]
    from_b = [i for i in got if i >= 10_000]
    assert from_a == a  # a runs out first and stops the epoch
    assert from_b == b[: len(from_b)]
    assert abs(len(from_b) / len(got) - 0.25) < 0.02


def test_per_stream_batches_come_from_one_dataset(tmp_path: Path) -> None:
    write_range(tmp_path / "a", 0, 32, chunk_size=8)
    write_range(tmp_path / "b", 1000, 24, chunk_size=8)
    datasets = [StreamingDataset(str(tmp_path / "a")), StreamingDataset(str(tmp_path / "b"))]
    combined = CombinedStreamingDataset(datasets, batching_method="per_stream")
    loader = StreamingDataLoader(combined, batch_size=4)
    batches = ids(list(loader))
    assert sorted(flat(batches)) == list(range(32)) + list(range(1000, 1024))
    assert all(len({i >= 1000 for i in b}) == 1 for b in batches)
    assert len({b[0] >= 1000 for b in batches}) == 2
    # per-dataset run lengths, set on the dataset itself: with two datasets left, runs alternate
    combined.set_batch_size([2, 3])
    got = [x["i"] for x in combined]
    assert sorted(got) == list(range(32)) + list(range(1000, 1024))
    groups = [(side, len(list(g))) for side, g in itertools.groupby(got, key=lambda i: i >= 1000)]
    assert all(n == (3 if side else 2) for side, n in groups[:-1])
    assert groups[-1][0] is False  # b (8 runs of 3) runs out first, a finishes alone


@pytest.mark.parametrize("num_workers", [0, 2])
def test_per_stream_never_mixes_when_a_run_ends_inside_a_batch(tmp_path: Path, num_workers: int) -> None:
    # 50 = 12 batches of 4 + 2 per dataset: the 2 left of a dataset make a short batch of their
    # own instead of sharing it with the other dataset (LitData yields [1048, 1049, 48, 49]).
    a = write_range(tmp_path / "a", 0, 50, chunk_size=8)
    b = write_range(tmp_path / "b", 1000, 50, chunk_size=8)
    datasets = [StreamingDataset(str(tmp_path / "a")), StreamingDataset(str(tmp_path / "b"))]
    combined = CombinedStreamingDataset(datasets, batching_method="per_stream", seed=1)
    loader = StreamingDataLoader(combined, batch_size=4, num_workers=num_workers)
    for _epoch in range(2):
        batches = ids(list(loader))
        assert len(batches) == len(loader)
        assert sorted(flat(batches)) == a + b  # every sample once
        assert all(len({i >= 1000 for i in batch}) == 1 for batch in batches), batches
        assert all(batch == sorted(batch) for batch in batches)  # runs keep each dataset's order
        # whole batches go to the workers, so each dataset's 2 extra samples are one short batch
        assert Counter(len(batch) for batch in batches) == {4: 24, 2: 2}
    # a custom collate_fn is applied to each run
    listed = StreamingDataLoader(
        CombinedStreamingDataset(datasets, batching_method="per_stream", seed=1),
        batch_size=4,
        num_workers=num_workers,
        collate_fn=_ids_of,
    )
    runs = list(listed)
    assert sorted(flat(runs)) == a + b and all(len({i >= 1000 for i in r}) == 1 for r in runs)
    # iterated on its own (no loader), the dataset yields samples
    fresh = [StreamingDataset(str(tmp_path / "a")), StreamingDataset(str(tmp_path / "b"))]
    alone = CombinedStreamingDataset(fresh, batching_method="per_stream", seed=1)
    assert sorted(x["i"] for x in alone) == a + b


def _ids_of(batch: list[dict[str, int]]) -> list[int]:
    return [x["i"] for x in batch]


def _make(dirs: tuple[str, str], mode: str, shuffle: bool) -> CombinedStreamingDataset:
    datasets = [StreamingDataset(d, shuffle=shuffle, seed=3) for d in dirs]
    if mode == "weighted":
        return CombinedStreamingDataset(datasets, weights=[0.3, 0.7], iterate_over_all=False, seed=9)
    if mode == "per_stream":
        return CombinedStreamingDataset(datasets, batching_method="per_stream", seed=9)
    return CombinedStreamingDataset(datasets, seed=9)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("mode", ["all", "weighted", "per_stream"])
def test_loader_resume_is_exact(two_dirs: Any, num_workers: int, mode: str) -> None:
    a_dir, b_dir, _, _ = two_dirs
    shuffle = mode != "per_stream"

    def loader() -> StreamingDataLoader:
        return StreamingDataLoader(
            _make((a_dir, b_dir), mode, shuffle), batch_size=3, num_workers=num_workers
        )

    reference = ids(list(loader()))
    assert len(reference) == len(loader())
    for cut in (1, 4, len(reference) - 1):
        first = loader()
        seen = []
        for batch in first:
            seen.append(batch["i"].tolist())
            if len(seen) == cut:
                break
        state = first.state_dict()
        assert set(state) >= {"dataset", "current_epoch", "num_samples_yielded", "latest_worker_idx"}
        assert set(state["dataset"]) == {"0", "1"}
        counts = state["num_samples_yielded"]
        assert sum(sum(v) for v in counts.values()) == len(flat(seen))
        resumed = loader()
        resumed.load_state_dict(state)
        rest = ids(list(resumed))
        assert seen + rest == reference, (cut, mode)
        # the next epoch starts fresh (weighted epochs draw anew: only the length is known)
        following = ids(list(resumed))
        assert len(following) == len(resumed)
        if mode != "weighted":
            assert sorted(flat(following)) == sorted(flat(reference))


def test_direct_state_dict_without_loader(two_dirs: Any) -> None:
    a_dir, b_dir, _, _ = two_dirs
    reference = [x["i"] for x in _make((a_dir, b_dir), "all", True)]
    combined = _make((a_dir, b_dir), "all", True)
    it = iter(combined)
    seen = [next(it)["i"] for _ in range(11)]
    state = combined.state_dict(num_workers=0, batch_size=1)
    assert state["0"]["num_samples_yielded"] + state["1"]["num_samples_yielded"] == 11
    again = _make((a_dir, b_dir), "all", True)
    again.load_state_dict(state)
    assert seen + [x["i"] for x in again] == reference


def test_async_for_matches_sync(two_dirs: Any) -> None:
    a_dir, b_dir, _, _ = two_dirs
    sync = [x["i"] for x in _make((a_dir, b_dir), "weighted", True)]

    async def collect() -> list[int]:
        return [x["i"] async for x in _make((a_dir, b_dir), "weighted", True)]

    assert asyncio.run(collect()) == sync


def test_epochs_reshuffle_and_setters_forward(two_dirs: Any) -> None:
    a_dir, b_dir, _, _ = two_dirs
    combined = _make((a_dir, b_dir), "all", False)
    loader = StreamingDataLoader(combined, batch_size=2, shuffle=True, drop_last=True)
    assert all(ds.shuffle and ds.drop_last for ds in combined.datasets)
    e1 = flat(ids(list(loader)))
    e2 = flat(ids(list(loader)))
    assert e1 != e2
    # drop_last: b's odd sample out (17 = 8 batches of 2 + 1) is dropped, a shuffled one per epoch
    assert len(e1) == len(e2) == 46 == len(set(e1)) == len(set(e2))
    assert Counter(i < 1000 for i in e1) == Counter(i < 1000 for i in e2) == {True: 30, False: 16}
    assert loader.current_epoch == 2 and all(ds.current_epoch == 2 for ds in combined.datasets)


def test_errors(two_dirs: Any) -> None:
    a_dir, b_dir, _, _ = two_dirs
    ds = [StreamingDataset(a_dir), StreamingDataset(b_dir)]
    with pytest.raises(ValueError, match="iterate_over_all"):
        CombinedStreamingDataset(ds, weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="batching_method"):
        CombinedStreamingDataset(ds, batching_method="round_robin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights"):
        CombinedStreamingDataset(ds, weights=[1.0], iterate_over_all=False)
    with pytest.raises(RuntimeError, match="wrappers cannot be nested"):
        CombinedStreamingDataset([ds[0], CombinedStreamingDataset(ds)])
    combined = CombinedStreamingDataset(ds)
    loader = StreamingDataLoader(combined, batch_size=2, num_workers=2)
    it = iter(loader)
    first = next(it)["i"].tolist()
    state = loader.state_dict()
    del it
    # Another batch size resumes elastically: the rest of the epoch, once.
    other = StreamingDataLoader(CombinedStreamingDataset(ds), batch_size=3, num_workers=2)
    other.load_state_dict(state)
    rest = [i for b in other for i in b["i"].tolist()]
    assert sorted(first + rest) == sorted(list(range(30)) + list(range(1000, 1017)))
    swapped = StreamingDataLoader(CombinedStreamingDataset([ds[1], ds[0]]), batch_size=2, num_workers=2)
    with pytest.raises(StateDictError):
        swapped.load_state_dict(state)
