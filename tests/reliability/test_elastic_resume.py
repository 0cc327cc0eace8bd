"""Elastic resume (issue 9): a state resumes on another world size, worker count or batch size.

The contract: over the whole epoch, every sample not yet yielded before the stop is yielded once
after it, and none that was is yielded again. Two layers of proof:

* a hypothesis property test over random datasets, cut points and topology changes (chained
  too), driving the real ``StreamingDataset`` state functions and plans, with torch's in-order
  round-robin simulated batch by batch as the oracle of what was consumed;
* end-to-end runs through ``StreamingDataLoader`` (ranks simulated with ``WORLD_SIZE``/``RANK``,
  real worker processes), plain, shuffled, TokensLoader, and with ``drop_last``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiolit import StreamingDataLoader, StreamingDataset
from aiolit.streaming import TokensLoader
from aiolit.streaming._plan import Topology
from tests.streaming._data import write_dataset, write_tokens


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOLIT_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("WORLD_SIZE", "RANK", "GLOBAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    os.environ.pop("MASTER_ADDR", None)


@contextmanager
def _rank(world: int, rank: int) -> Iterator[None]:
    os.environ["WORLD_SIZE"], os.environ["RANK"] = str(world), str(rank)
    try:
        yield
    finally:
        del os.environ["WORLD_SIZE"], os.environ["RANK"]


# -- the property test on the plan layer ----------------------------------------------------------


def _worker_samples(ds: StreamingDataset, topology: Topology, epoch: int) -> list[list[tuple[int, int]]]:
    """Every worker's (chunk, item) sequence of this rank, from the dataset's (resumed) plan."""
    plan = ds._plan(topology, epoch)
    out = []
    for w in range(topology.num_workers):
        wp = plan.worker(w)
        out.append([(wp.steps[k].chunk, int(i)) for k in range(len(wp.steps)) for i in wp.order(k)])
    return out


def _round_robin(per_worker: list[list[Any]], batch_size: int) -> list[list[Any]]:
    """torch's in-order loader over an IterableDataset: batches round-robin, exhausted workers skipped."""
    batches = [[seq[i : i + batch_size] for i in range(0, len(seq), batch_size)] for seq in per_worker]
    out = []
    for r in range(max((len(b) for b in batches), default=0)):
        out.extend(b[r] for b in batches if r < len(b))
    return out


class _Job:
    """One run of an epoch on a topology: every rank's loader, as the pure plan sees it."""

    def __init__(self, make: Callable[[], StreamingDataset], world: int, workers: int, batch: int) -> None:
        self.make, self.world, self.workers, self.batch = make, world, workers, batch

    def rank_batches(self, state: dict[str, Any] | None, rank: int) -> tuple[StreamingDataset, list[Any]]:
        ds = self.make()
        ds.set_batch_size(self.batch)
        ds.set_num_workers(self.workers)
        with _rank(self.world, rank):
            if state is not None:
                ds.load_state_dict(state)
                ds._settle_resume()
                epoch = int(state["current_epoch"])
                topology = ds._topology()[0]
                assert ds._resume is not None
                skip = int(ds._resume["num_samples_yielded"]) // self.batch
            else:
                epoch, topology, skip = 1, ds._topology()[0], 0
            batches = _round_robin(_worker_samples(ds, topology, epoch), self.batch)
        return ds, batches[skip:]

    def cut(self, state: dict[str, Any] | None, k: int) -> tuple[list[Any], dict[str, Any], list[Any]]:
        """Each rank yields ``k`` batches; return (consumed, rank 0's state, the rest).

        Ranks step in lockstep (as DDP does): a stop happens while every rank still has
        batches, so ``k`` is capped at the shortest rank's count.
        """
        consumed: list[Any] = []
        rest: list[Any] = []
        rank0_state: dict[str, Any] = {}
        runs = [self.rank_batches(state, rank) for rank in range(self.world)]
        k = min([k] + [len(batches) for _, batches in runs])
        for rank, (ds, batches) in enumerate(runs):
            taken = k
            consumed += [s for b in batches[:taken] for s in b]
            rest += [s for b in batches[taken:] for s in b]
            if rank == 0:
                done = int(ds._resume["num_samples_yielded"]) if ds._resume else 0
                with _rank(self.world, rank):
                    rank0_state = ds.state_dict(done + taken * self.batch, self.workers, self.batch)
                rank0_state["current_epoch"] = state["current_epoch"] if state else 1
        return consumed, rank0_state, rest


@pytest.fixture(scope="module")
def plan_data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("elastic-plan")
    out = []
    for n, chunk in ((61, 7), (40, 5), (23, 3)):
        write_dataset(root / f"d{n}", n, chunk_size=chunk)
        out.append(str(root / f"d{n}"))
    return out


_topologies = st.tuples(st.integers(1, 3), st.integers(0, 3), st.integers(1, 8))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.integers(0, 2),
    shuffle=st.booleans(),
    hops=st.lists(st.tuples(_topologies, st.integers(0, 12)), min_size=1, max_size=3),
    last=_topologies,
)
def test_elastic_resume_property_no_duplicates_no_gaps(
    plan_data: list[str], which: int, shuffle: bool, hops: list[Any], last: tuple[int, int, int]
) -> None:
    path = plan_data[which]

    def make() -> StreamingDataset:
        return StreamingDataset(path, shuffle=shuffle, seed=5, drop_last=False)

    # The uninterrupted epoch under the first topology yields every sample once.
    first = _Job(make, *hops[0][0])
    everything = sorted(s for b in first.rank_batches(None, 0)[1] for s in b)
    for rank in range(1, first.world):
        everything = sorted(everything + [s for b in first.rank_batches(None, rank)[1] for s in b])
    assert len(everything) == len(set(everything)) == make()._starts[-1]

    consumed: list[Any] = []
    state: dict[str, Any] | None = None
    for topology, k in hops:
        taken, state, _ = _Job(make, *topology).cut(state, k)
        consumed += taken
    _, _, rest = _Job(make, *last).cut(state, 0)
    assert len(consumed) == len(set(consumed)), "a sample was yielded twice before the stop"
    assert sorted(consumed + rest) == everything


# -- end to end through StreamingDataLoader -------------------------------------------------------


def _ids(batch: Any) -> list[int]:
    return [int(x) for x in batch["i"].tolist()]


def _token_ids(batch: Any) -> list[int]:
    return [int(row[0]) for row in batch.tolist()]


def _run(
    make: Callable[[], StreamingDataset],
    world: int,
    workers: int,
    batch: int,
    *,
    state: dict[str, Any] | None = None,
    stop: int | None = None,
    key: Callable[[Any], list[int]] = _ids,
    after: list[int] | None = None,
) -> tuple[list[int], dict[str, Any]]:
    """Run every rank's loader (from ``state``) for ``stop`` batches or to the end of the epoch.

    ``after``: also run the next epoch on the same loaders, collected there.
    """
    got: list[int] = []
    rank0: dict[str, Any] = {}
    for rank in range(world):
        with _rank(world, rank):
            loader = StreamingDataLoader(make(), batch_size=batch, num_workers=workers)
            if state is not None:
                loader.load_state_dict(state)
            for n, b in enumerate(loader, 1):
                got += key(b)
                if n == stop:
                    break
            if rank == 0:
                rank0 = loader.state_dict()
            if after is not None:
                after += [i for b in loader for i in key(b)]
    return got, rank0


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((2, 2, 4), (3, 2, 4)),  # 2 -> 3 ranks
        ((1, 2, 4), (1, 0, 4)),  # 2 -> 0 workers
        ((1, 2, 8), (2, 1, 5)),  # batch 8 -> 5 (and 1 -> 2 ranks)
    ],
)
def test_elastic_resume_through_the_loader(tmp_path: Path, before: Any, after: Any) -> None:
    write_dataset(tmp_path / "d", 83, chunk_size=6)

    def make() -> StreamingDataset:
        return StreamingDataset(str(tmp_path / "d"), shuffle=True, seed=11, drop_last=False)

    full, _ = _run(make, *before)
    assert sorted(full) == list(range(83))
    taken, state = _run(make, *before, stop=3)
    nxt: list[int] = []
    rest, _ = _run(make, *after, state=state, after=nxt)
    assert len(taken) == len(set(taken))
    assert sorted(taken + rest) == list(range(83))
    # The next epoch on the new topology is a whole, normal one: epoch 2's plan.
    assert sorted(nxt) == list(range(83))
    epoch2: list[int] = []
    _run(make, *after, after=epoch2)
    assert nxt == epoch2


def test_elastic_resume_chained_and_state_mid_resumed_epoch(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", 71, chunk_size=5)

    def make() -> StreamingDataset:
        return StreamingDataset(str(tmp_path / "d"), shuffle=True, seed=2, drop_last=False)

    a, state = _run(make, 2, 2, 4, stop=2)
    b, state = _run(make, 3, 1, 3, state=state, stop=2)  # a state taken inside the resumed epoch
    assert "elastic" in state["dataset"]
    c, _ = _run(make, 1, 0, 5, state=state)
    got = a + b + c
    assert len(got) == len(set(got)) and sorted(got) == list(range(71))


def test_elastic_resume_tokens_loader(tmp_path: Path) -> None:
    block = 4
    seqs = [np.arange(i * 13, i * 13 + 13, dtype=np.int64) for i in range(16)]  # 208 distinct tokens
    write_tokens(tmp_path / "t", seqs, chunk_size=40)

    def make() -> StreamingDataset:
        return StreamingDataset(
            str(tmp_path / "t"), item_loader=TokensLoader(block), shuffle=True, seed=4, drop_last=False
        )

    full, _ = _run(make, 2, 2, 3, key=_token_ids)
    every = sorted(full)
    assert len(every) == len(set(every)) == len(make())  # blocks named by their first token
    taken, state = _run(make, 2, 2, 3, stop=2, key=_token_ids)
    rest, _ = _run(make, 1, 0, 5, state=state, key=_token_ids)
    assert sorted(taken + rest) == every and len(taken) == len(set(taken))


def test_elastic_resume_with_drop_last_drops_only_a_last_partial_round(tmp_path: Path) -> None:
    write_dataset(tmp_path / "d", 83, chunk_size=6)

    def make() -> StreamingDataset:
        return StreamingDataset(str(tmp_path / "d"), shuffle=True, seed=3)  # drop_last: True on 2+ ranks

    full, _ = _run(make, 2, 1, 4)
    taken, state = _run(make, 2, 1, 4, stop=3)
    rest, _ = _run(make, 3, 1, 5, state=state)
    got = taken + rest
    assert len(got) == len(set(got))
    assert set(got) <= set(full)
    assert len(set(full) - set(got)) < 3 * 5  # less than one batch per rank, like any epoch's end


@pytest.mark.parametrize(
    ("before", "after", "batching_method"),
    [((2, 2, 4), (3, 1, 5), "stratified"), ((1, 2, 8), (1, 0, 5), "per_stream")],
)
def test_elastic_resume_combined(tmp_path: Path, before: Any, after: Any, batching_method: str) -> None:
    from aiolit import CombinedStreamingDataset

    write_dataset(tmp_path / "a", 45, chunk_size=6)
    write_dataset(tmp_path / "b", 29, chunk_size=4)

    def make() -> Any:
        return CombinedStreamingDataset(
            [
                StreamingDataset(str(tmp_path / "a"), shuffle=True, seed=1, drop_last=False),
                StreamingDataset(str(tmp_path / "b"), shuffle=True, seed=1, drop_last=False),
            ],
            seed=9,
            iterate_over_all=True,
            batching_method=batching_method,  # type: ignore[arg-type]
        )

    def tagged(batch: Any) -> list[int]:
        return [int(i) for i in batch["i"].tolist()]

    full, _ = _run(make, *before, key=tagged)
    want = sorted(list(range(45)) + list(range(29)))
    assert sorted(full) == want
    for stop in (1, 3):  # inside the first round, and after it
        taken, state = _run(make, *before, stop=stop, key=tagged)
        rest, _ = _run(make, *after, state=state, key=tagged)
        assert sorted(taken + rest) == want, f"stop after {stop} batches"
