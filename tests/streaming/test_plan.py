"""Tests of aiolit.streaming._plan: partitions, orders, subsampling and resume arithmetic."""

from __future__ import annotations

import itertools
import json
import math
import random
import tempfile
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiolit.streaming._plan import (
    EpochPlan,
    Interval,
    Topology,
    WorkerPlan,
    chunk_intervals,
    dataset_length,
    rank_length,
    samples_per_worker,
    worker_budgets,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def global_order(plan: EpochPlan, rank: int, worker: int, sizes: list[int]) -> np.ndarray:
    """The worker's yield order as global item indices (chunk offset + item)."""
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    wp = plan.global_worker(rank, worker)
    parts = [wp.order(k) + offsets[s.chunk] for k, s in enumerate(wp.steps)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def all_orders(plan: EpochPlan, sizes: list[int]) -> list[list[np.ndarray]]:
    topo = plan.topology
    return [
        [global_order(plan, r, w, sizes) for w in range(topo.num_workers)] for r in range(topo.world_size)
    ]


# ---------------------------------------------------------------- LitData's verified numbers (§2.3)


@pytest.mark.parametrize(("drop_last", "expected"), [(False, [12, 12, 14, 12]), (True, [12, 12, 12, 12])])
def test_litdata_budget_50_items(drop_last: bool, expected: list[int]) -> None:
    sizes = [7] * 7 + [1]
    plan = EpochPlan(chunk_intervals(sizes), Topology(2, 0, 2), batch_size=4, drop_last=drop_last)
    lengths = [plan.global_worker(r, w).length for r in range(2) for w in range(2)]
    assert lengths == expected
    assert worker_budgets(50, 2, 2, batch_size=4, drop_last=drop_last).ravel().tolist() == expected
    assert rank_length(50, Topology(2, 1, 2), batch_size=4, drop_last=drop_last) == sum(expected[2:])
    assert dataset_length(50, Topology(2, 0, 2), batch_size=4, drop_last=drop_last) == sum(expected)
    # No shuffle: the chunks are walked in order and split at budget boundaries.
    orders = all_orders(plan, sizes)
    assert orders[0][1].tolist() == list(range(12, 24))
    assert plan.global_worker(0, 1).steps == [Interval(1, 5, 7), Interval(2, 0, 7), Interval(3, 0, 3)]


def test_litdata_budget_three_ranks() -> None:
    plan = EpochPlan(chunk_intervals([7] * 7 + [1]), Topology(3, 0, 1), batch_size=1)
    assert [plan.global_worker(r, 0).length for r in range(3)] == [16, 16, 18]
    assert plan.rank_length == 16


@pytest.mark.parametrize(
    ("drop_last", "rank1"), [(False, list(range(50, 101))), (True, list(range(50, 100)))]
)
def test_litdata_101_items_two_ranks(drop_last: bool, rank1: list[int]) -> None:
    sizes = [10] * 10 + [1]
    plan = EpochPlan(chunk_intervals(sizes), Topology(2, 0, 1), drop_last=drop_last)
    assert global_order(plan, 0, 0, sizes).tolist() == list(range(50))
    assert global_order(plan, 1, 0, sizes).tolist() == rank1


def test_worker_plan_accessors() -> None:
    steps = [Interval(3, 2, 5), Interval(1, 0, 4), Interval(3, 5, 6), Interval(0, 0, 1), Interval(1, 4, 6)]
    wp = WorkerPlan(steps, None, 0, 1)
    assert wp.length == 3 + 4 + 1 + 1 + 2
    assert wp.chunk_order == [3, 1, 0]
    assert wp.next_reuse.tolist() == [2, 4, 5, 5, 5]
    assert wp.next_use(1) == {1: 1, 3: 2, 0: 3}
    assert list(wp.next_use(1)) == [1, 3, 0]  # ordered by next use: the prefetch order
    assert wp.next_use(5) == {}
    assert [wp.locate(n) for n in (0, 2, 3, 7, 8, 9, 10, 11)] == [
        (0, 0), (0, 2), (1, 0), (2, 0), (3, 0), (4, 0), (4, 1), (5, 0)
    ]  # fmt: skip
    assert wp.order(0).tolist() == [2, 3, 4]
    assert wp.order(0).dtype == np.int64
    with pytest.raises(ValueError, match="n must be"):
        wp.locate(12)


def test_shuffled_steps_are_permutations_of_their_range() -> None:
    plan = EpochPlan(chunk_intervals([7] * 7 + [1]), Topology(2, 1, 2), batch_size=4, shuffle=True, seed=3)
    for w in range(2):
        wp = plan.worker(w)
        for k, step in enumerate(wp.steps):
            assert sorted(wp.order(k).tolist()) == list(range(step.start, step.end))
    assert plan.worker_lengths == [14, 12]


def test_empty_dataset_and_empty_intervals() -> None:
    plan = EpochPlan([], Topology(2, 1, 3), batch_size=2)
    wp = plan.worker(2)
    assert (wp.length, wp.steps, wp.chunk_order, wp.locate(0)) == (0, [], [], (0, 0))
    plan = EpochPlan([Interval(0, 0, 3), Interval(1, 0, 0), Interval(2, 1, 4)], Topology(1, 0, 2))
    assert plan.worker(0).steps == [Interval(0, 0, 3)]
    assert plan.worker(1).steps == [Interval(2, 1, 4)]


# ---------------------------------------------------------------- property tests over topologies

topologies = st.builds(
    lambda ws, nw: Topology(ws, 0, nw), st.integers(1, 4), st.integers(0, 4)
)  # fmt: skip


def _steps_one_by_one(plan: EpochPlan, rank: int, worker: int) -> tuple[list[Interval], list[int]]:
    """A worker's steps and interval keys, walking the intervals one at a time (the definition)."""
    g = plan.topology.global_worker_id(worker, rank)
    lo, hi = int(plan._bounds[g]), int(plan._bounds[g + 1])
    steps, keys, end = [], [], 0
    for iv, key in zip(plan.intervals, plan._keys.tolist(), strict=True):
        start, end = end, end + iv.size
        a, b = max(lo, start), min(hi, end)
        if a < b:
            steps.append(Interval(iv.chunk, iv.start + a - start, iv.start + b - start))
            keys.append(key)
    return steps, keys


@FAST
@given(
    spans=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9)), min_size=0, max_size=14),
    topo=topologies,
    batch_size=st.integers(1, 4),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
)
def test_worker_steps_match_the_interval_walk(
    spans: list[tuple[int, int]], topo: Topology, batch_size: int, drop_last: bool, shuffle: bool
) -> None:
    # Intervals with offsets and empty ones (subsampled or user-built lists).
    intervals = [Interval(c, first, first + size) for c, (first, size) in enumerate(spans)]
    for rank in range(topo.world_size):
        topology = Topology(topo.world_size, rank, topo.num_workers)
        plan = EpochPlan(
            intervals, topology, batch_size=batch_size, drop_last=drop_last, shuffle=shuffle, seed=5, epoch=2
        )
        for w in range(topo.num_workers):
            wp = plan.worker(w)
            steps, keys = _steps_one_by_one(plan, rank, w)
            assert wp.steps == steps
            assert all(s.size for s in wp.steps)
            if shuffle:
                assert wp._streams is not None
                assert wp._streams.tolist() == [
                    ((k + 1) << 32) | s.start for k, s in zip(keys, steps, strict=True)
                ]
            else:
                assert wp._streams is None


@FAST
@given(
    sizes=st.lists(st.integers(0, 25), min_size=0, max_size=10),
    topo=topologies,
    batch_size=st.integers(1, 6),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**32),
    epoch=st.integers(0, 6),
)
def test_partition_properties(
    sizes: list[int], topo: Topology, batch_size: int, drop_last: bool, shuffle: bool, seed: int, epoch: int
) -> None:
    def make(rank: int) -> EpochPlan:
        topology = Topology(topo.world_size, rank, topo.num_workers)
        return EpochPlan(
            chunk_intervals(sizes),
            topology,
            batch_size=batch_size,
            drop_last=drop_last,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
        )

    plan = make(0)
    total = sum(sizes)
    orders = all_orders(plan, sizes)
    flat = [o for rank in orders for o in rank]
    everything = np.concatenate(flat)
    budgets = worker_budgets(
        total, topo.world_size, topo.num_workers, batch_size=batch_size, drop_last=drop_last
    )
    assert [len(o) for o in flat] == budgets.ravel().tolist()
    assert len(np.unique(everything)) == len(everything)  # disjoint, no duplicates
    assert set(everything.tolist()) <= set(range(total))
    if drop_last:
        per_rank = [sum(len(o) for o in rank) for rank in orders]
        assert per_rank == [per_rank[0]] * topo.world_size
        assert per_rank[0] % batch_size == 0
        assert 0 <= total - len(everything) < topo.world_size * batch_size
    else:
        assert sorted(everything.tolist()) == list(range(total))
    if not shuffle:
        # Sequential walk in global-worker order.
        assert everything.tolist() == list(range(len(everything)))
    # Every worker except the leftover one gets whole batches.
    assert sum(len(o) % batch_size != 0 for o in flat) <= (0 if drop_last else 1)
    # Determinism: a fresh plan with the same arguments gives the same orders.
    again = all_orders(make(0), sizes)
    assert all(
        np.array_equal(a, b)
        for ra, rb in zip(orders, again, strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    # The rank's own view agrees with the global one.
    rank_plan = make(topo.world_size - 1)
    assert rank_plan.rank_length == sum(len(o) for o in orders[-1])
    assert rank_plan.rank_length == rank_length(
        total, rank_plan.topology, batch_size=batch_size, drop_last=drop_last
    )


@FAST
@given(
    sizes=st.lists(st.integers(1, 15), min_size=1, max_size=8),
    topo=topologies,
    batch_size=st.integers(1, 4),
    shuffle=st.booleans(),
    seed=st.integers(0, 1000),
    subsample=st.sampled_from([1.0, 0.3, 2.0, 2.5]),
)
def test_locate_and_chunk_order(
    sizes: list[int], topo: Topology, batch_size: int, shuffle: bool, seed: int, subsample: float
) -> None:
    intervals = chunk_intervals(sizes, subsample=subsample, shuffle=shuffle, seed=seed)
    plan = EpochPlan(intervals, topo, batch_size=batch_size, shuffle=shuffle, seed=seed)
    for w in range(topo.num_workers):
        wp = plan.worker(w)
        full = np.concatenate([wp.order(k) for k in range(len(wp.steps))] or [np.zeros(0, np.int64)])
        assert len(full) == wp.length
        for n in range(wp.length + 1):
            k, off = wp.locate(n)
            tail = [wp.order(k)[off:]] if k < len(wp.steps) else []
            tail += [wp.order(j) for j in range(k + 1, len(wp.steps))]
            rest = np.concatenate(tail) if tail else np.zeros(0, np.int64)
            assert np.array_equal(rest, full[n:])
            assert k == len(wp.steps) or off < wp.steps[k].size
        assert wp.chunk_order == list(dict.fromkeys(s.chunk for s in wp.steps))
        for k, s in enumerate(wp.steps):
            later = [j for j in range(k + 1, len(wp.steps)) if wp.steps[j].chunk == s.chunk]
            assert wp.next_reuse[k] == (later[0] if later else len(wp.steps))
            assert wp.next_use(k)[s.chunk] == k


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    sizes=st.lists(st.integers(10, 30), min_size=3, max_size=8),
    topo=topologies,
    batch_size=st.integers(1, 4),
    seed=st.integers(0, 2**32),
    epoch=st.integers(1, 10),
)
def test_epochs_and_seeds_reshuffle(
    sizes: list[int], topo: Topology, batch_size: int, seed: int, epoch: int
) -> None:
    def flat(seed: int, epoch: int) -> np.ndarray:
        plan = EpochPlan(
            chunk_intervals(sizes), topo, batch_size=batch_size, shuffle=True, seed=seed, epoch=epoch
        )
        return np.concatenate([o for rank in all_orders(plan, sizes) for o in rank])

    base = flat(seed=seed, epoch=epoch)
    assert not np.array_equal(base, flat(seed=seed, epoch=epoch + 1))
    assert not np.array_equal(base, flat(seed=seed + 1, epoch=epoch))
    assert np.array_equal(base, flat(seed=seed, epoch=epoch))
    assert not np.array_equal(base, np.sort(base))


# ---------------------------------------------------------------- subsample / upsample (§2.6)


def test_subsample_examples() -> None:
    assert chunk_intervals([10, 10, 10], subsample=0.5) == [Interval(0, 0, 10), Interval(1, 0, 5)]
    assert chunk_intervals([10, 10, 10], subsample=1.0) == [Interval(i, 0, 10) for i in range(3)]
    up = chunk_intervals([10, 10, 10], subsample=2.5)
    assert up == [Interval(i, 0, 10) for i in (0, 1, 2, 0, 1, 2, 0)] + [Interval(1, 0, 5)]
    assert chunk_intervals([4, 6], subsample=0.4) == [Interval(0, 0, 4)]  # exact cut: no empty tail
    assert chunk_intervals([4, 6], subsample=0.01) == []
    assert chunk_intervals([3, 0, 2]) == [Interval(0, 0, 3), Interval(2, 0, 2)]


@FAST
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    subsample=st.floats(0.01, 4.0),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_subsample_lengths(sizes: list[int], subsample: float, shuffle: bool, seed: int) -> None:
    ivs = chunk_intervals(sizes, subsample=subsample, shuffle=shuffle, seed=seed)
    total = sum(sizes)
    if math.isclose(subsample, 1.0):
        expected, copies = total, 1
    else:
        s, copies = subsample, 0
        while s >= 1.0:
            s, copies = s - 1.0, copies + 1
        expected = copies * total + int(total * s)
    assert sum(iv.size for iv in ivs) == expected
    assert all(iv.size > 0 and iv.end <= sizes[iv.chunk] for iv in ivs)
    # Each whole copy holds every chunk once; the fractional part holds at most one cut chunk.
    for c in range(copies):
        assert sorted(iv.chunk for iv in ivs[c * len(sizes) : (c + 1) * len(sizes)]) == list(
            range(len(sizes))
        )
    tail = ivs[copies * len(sizes) :]
    assert len({iv.chunk for iv in tail}) == len(tail)
    assert sum(iv.size != sizes[iv.chunk] for iv in tail) <= 1


@pytest.mark.parametrize("bad", [0, 0.0, -1.5, float("nan"), float("inf"), "1.0", True, None])
def test_subsample_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="subsample"):
        chunk_intervals([1, 2], subsample=bad)  # type: ignore[arg-type]


def test_argument_validation() -> None:
    assert Topology(2, 1, 0).num_workers == 1
    with pytest.raises(ValueError, match="rank"):
        Topology(world_size=2, rank=2)
    with pytest.raises(ValueError, match="world_size"):
        Topology(world_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        Topology(num_workers=-1)
    ivs = chunk_intervals([4])
    for kwargs, name in [
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"shuffle": 1}, "shuffle"),
        ({"drop_last": None}, "drop_last"),
        ({"epoch": -1}, "epoch"),
    ]:
        with pytest.raises(ValueError, match=name):
            EpochPlan(ivs, Topology(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="worker_id"):
        EpochPlan(ivs, Topology(1, 0, 2)).worker(2)
    with pytest.raises(ValueError, match="Interval"):
        Interval(0, 5, 4)
    for sizes in ([3, -1], [1.5], [[1, 2]]):
        with pytest.raises(ValueError, match="chunk_sizes"):
            chunk_intervals(sizes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        chunk_intervals([3, 4], subsample=0.5, shuffle=True, seed=2**32)


# ---------------------------------------------------------------- samples_per_worker (§3.3)


def test_samples_per_worker_examples() -> None:
    assert samples_per_worker(20, 2, 4) == [12, 8]
    assert samples_per_worker(22, 2, 4) == [12, 10]
    assert samples_per_worker(5, 0, 4) == [5]
    # 50 items, nw=2, bs=4, rank 1 of ws=2 (lengths 14/12): w0 ends with a short batch of 2.
    assert samples_per_worker(26, 2, 4, [14, 12]) == [14, 12]
    assert samples_per_worker(24, 2, 4, [14, 12]) == [12, 12]
    # Worker 1 runs out after one batch; torch then takes only worker 0.
    assert samples_per_worker(16, 2, 4, [16, 4]) == [12, 4]
    # LitData counts batch_size for a short batch.
    assert samples_per_worker(28, 2, 4, [14, 12], count_short_batches_as_full=True) == [14, 12]
    with pytest.raises(ValueError, match="num_samples_yielded"):
        samples_per_worker(27, 2, 4, [14, 12])
    with pytest.raises(ValueError, match="worker_lengths"):
        samples_per_worker(1, 2, 4, [14])


def batch_model(lengths: list[int], bs: int) -> list[tuple[int, int]]:
    """(worker, batch size) in yield order: batch j of worker w comes in round j, rounds by worker."""
    batches = [(j, w, min(bs, n - j * bs)) for w, n in enumerate(lengths) for j in range(-(-n // bs))]
    return [(w, size) for _, w, size in sorted(batches)]


def simulate_torch_loader(
    lengths: list[int], bs: int, prefetch: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Torch's in-order multiprocessing iterator over an IterableDataset, with random worker timing.

    Mirrors `_MultiProcessingDataLoaderIter._next_data`/`_try_put_index`: tasks go round-robin
    to active workers, a worker answers StopIteration once when exhausted and ignores later
    tasks, the main process skips the tasks of workers it has marked inactive.
    """
    nw = len(lengths)
    made, ended, active = [0] * nw, [False] * nw, [True] * nw
    queues: list[deque[int]] = [deque() for _ in range(nw)]
    results: deque[tuple[int, int, int | None]] = deque()  # (task, worker, batch size | None=stop)
    task_info: dict[int, tuple[int, int | None]] = {}  # task -> (worker, batch size once received)
    cycle = itertools.cycle(range(nw))
    sent = rcvd = 0
    out: list[tuple[int, int]] = []

    def put_index() -> None:
        nonlocal sent
        for _ in range(nw):
            w = next(cycle)
            if active[w]:
                break
        else:
            return
        task_info[sent] = (w, None)
        queues[w].append(sent)
        sent += 1

    def run_a_worker() -> bool:
        busy = [w for w in range(nw) if queues[w]]
        if not busy:
            return False
        w = rng.choice(busy)
        task = queues[w].popleft()
        if not ended[w]:
            if made[w] * bs < lengths[w]:
                results.append((task, w, min(bs, lengths[w] - made[w] * bs)))
                made[w] += 1
            else:
                results.append((task, w, None))
                ended[w] = True
        return True

    for _ in range(prefetch * nw):
        put_index()
    while True:
        while rcvd < sent:
            if rcvd in task_info:
                w, size = task_info[rcvd]
                if size is not None or active[w]:
                    break
                del task_info[rcvd]
            rcvd += 1
        else:
            return out
        w, size = task_info[rcvd]
        if size is None:
            while rng.random() < 0.5 and run_a_worker():  # random progress of the others
                pass
            while not results:
                assert run_a_worker(), "simulated loader deadlocked"
            task, w, size = results.popleft()
            if size is None:  # StopIteration: the worker leaves the round robin
                active[w] = False
                put_index()
                continue
            if task != rcvd:  # out of order: stash it
                task_info[task] = (w, size)
                continue
        del task_info[rcvd]
        rcvd += 1
        out.append((w, size))
        put_index()


@FAST
@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=5),
    bs=st.integers(1, 5),
    prefetch=st.integers(1, 3),
    timing=st.integers(0, 2**32),
)
def test_samples_per_worker_matches_torch_round_robin(
    lengths: list[int], bs: int, prefetch: int, timing: int
) -> None:
    yielded = simulate_torch_loader(lengths, bs, prefetch, random.Random(timing))
    assert yielded == batch_model(lengths, bs)
    nw = len(lengths)
    counts, n, batches = [0] * nw, 0, 0
    for w, size in [(0, 0), *yielded]:
        counts[w] += size
        n += size
        batches += size > 0
        assert samples_per_worker(n, nw, bs, lengths) == counts
        assert samples_per_worker(batches * bs, nw, bs, lengths, count_short_batches_as_full=True) == counts
    # Cut points inside a batch stay consistent: the sum is n and each count is within bounds.
    for n in range(sum(lengths) + 1):
        got = samples_per_worker(n, nw, bs, lengths)
        assert sum(got) == n
        assert all(0 <= g <= length for g, length in zip(got, lengths, strict=True))
    # Without lengths (workers never exhausted) it is LitData's _replay_sampling.
    for n in range(0, 3 * nw * bs + 3):
        rounds, rem = divmod(n, nw * bs)
        expected = [rounds * bs] * nw
        w = 0
        while rem >= bs:
            expected[w], rem, w = expected[w] + bs, rem - bs, w + 1
        expected[w % nw] += rem
        assert samples_per_worker(n, nw, bs) == expected


def test_resume_reproduces_the_epoch() -> None:
    """Interrupt after 5 batches (bs=4, nw=2, shuffle) and resume: seen + rest == the epoch (§3.3)."""
    sizes = [7] * 7 + [1]
    plan = EpochPlan(chunk_intervals(sizes), Topology(1, 0, 2), batch_size=4, shuffle=True, seed=1)
    epoch = batch_model(plan.worker_lengths, 4)
    seen = sum(size for _, size in epoch[:5])
    counts = samples_per_worker(seen, 2, 4, plan.worker_lengths)
    assert counts == [12, 8]
    rest = 0
    for w, done in enumerate(counts):
        wp = plan.worker(w)
        k, off = wp.locate(done)
        rest += sum(len(wp.order(j)) for j in range(k, len(wp.steps))) - off
    assert seen + rest == 50


# ---------------------------------------------------------------- parity with LitData itself (optional)


@FAST
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=10),
    ws=st.integers(1, 4),
    nw=st.integers(1, 4),
    bs=st.integers(1, 6),
    drop_last=st.booleans(),
)
def test_partition_matches_litdata(sizes: list[int], ws: int, nw: int, bs: int, drop_last: bool) -> None:
    shuffle_mod = pytest.importorskip("litdata.utilities.shuffle")
    from litdata.streaming.item_loader import Interval as LDInterval
    from litdata.utilities.env import _DistributedEnv

    ivs = chunk_intervals(sizes)
    ld_ivs = [LDInterval(0, iv.start, iv.end, sizes[iv.chunk]) for iv in ivs]
    _, ld_workers = shuffle_mod._associate_chunks_and_intervals_to_workers(
        _DistributedEnv(ws, 0, 1), list(range(len(ivs))), ld_ivs, drop_last, nw, bs
    )
    plan = EpochPlan(ivs, Topology(ws, 0, nw), batch_size=bs, drop_last=drop_last)
    for g, ld in enumerate(ld_workers):
        ours = plan.global_worker(g // nw, g % nw).steps
        assert [(s.start, s.end) for s in ours] == [(i[1], i[2]) for i in ld if i[2] > i[1]]


@FAST
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=10),
    subsample=st.sampled_from([0.1, 0.37, 0.5, 0.99, 1.0, 1.5, 2.0, 3.25]),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_subsample_matches_litdata(sizes: list[int], subsample: float, shuffle: bool, seed: int) -> None:
    utils = pytest.importorskip("litdata.utilities.dataset_utilities")
    from litdata.streaming.resolver import Dir

    chunks = [
        {"filename": f"chunk-0-{i}.bin", "chunk_size": n, "chunk_bytes": 0, "dim": None}
        for i, n in enumerate(sizes)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "index.json").write_text(json.dumps({"chunks": chunks, "config": {}}))
        files, rois = utils.subsample_streaming_dataset(
            Dir(path=tmp), subsample=subsample, shuffle=shuffle, seed=seed
        )
    expected = [
        Interval(int(f.split("-")[2][:-4]), a, b) for f, (a, b) in zip(files, rois, strict=True) if b > a
    ]
    assert chunk_intervals(sizes, subsample=subsample, shuffle=shuffle, seed=seed) == expected
