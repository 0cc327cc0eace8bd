"""The pieces of optimize that need no writer: splits, sizes, sources, argument checks."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from aiolit.errors import LoopError
from aiolit.processing import ALL_DONE, optimize
from aiolit.processing._args import check_extra_kwargs, resolve_topology
from aiolit.processing._output import chunk_rank_and_counter
from aiolit.processing._sources import batched, open_source, sequential_split
from aiolit.processing.optimize import _chunk_bytes as parse_chunk_bytes
from tests.processing.fns import identity


def test_all_done_is_litdatas_sentinel() -> None:
    assert ALL_DONE == "ALL_DONE"


def test_sequential_split_matches_litdata() -> None:
    assert [len(r) for r in sequential_split(20, 3)] == [6, 7, 7]
    assert [list(r) for r in sequential_split(5, 2)] == [[0, 1], [2, 3, 4]]
    assert [len(r) for r in sequential_split(2, 4)] == [0, 0, 1, 1]
    parts = sequential_split(103, 7)
    assert [i for r in parts for i in r] == list(range(103))


def test_parse_chunk_bytes_decimal_units() -> None:
    assert parse_chunk_bytes("64MB") == 64_000_000
    assert parse_chunk_bytes("64mb") == 64_000_000
    assert parse_chunk_bytes("1GB") == 10**9
    assert parse_chunk_bytes("512k") == 512_000
    assert parse_chunk_bytes("1.5kb") == 1500
    assert parse_chunk_bytes("100") == 100
    assert parse_chunk_bytes(1 << 26) == 1 << 26
    assert parse_chunk_bytes(None) is None
    for bad in ("64 apples", "-1MB", 0, -5, True, 1.5):
        with pytest.raises(ValueError, match="chunk_bytes"):
            parse_chunk_bytes(bad)  # type: ignore[arg-type]


def test_batched() -> None:
    assert batched(list(range(5)), 2) == [[0, 1], [2, 3], [4]]


def test_chunk_rank_and_counter() -> None:
    assert chunk_rank_and_counter("chunk-3-7.bin") == (3, 7)
    assert chunk_rank_and_counter("chunk-0-12.zstd:9.bin") == (0, 12)
    assert chunk_rank_and_counter("data.parquet") is None


async def _drain(source: object) -> list[object]:
    return await source.materialize()  # type: ignore[attr-defined, no-any-return]


async def test_sources_of_every_kind() -> None:
    assert open_source([3, 1, 2], None).items == [3, 1, 2]
    assert open_source(range(4), None).items == [0, 1, 2, 3]
    assert await _drain(open_source(iter([5, 6]), None)) == [5, 6]
    assert await _drain(open_source((i for i in range(3)), None)) == [0, 1, 2]

    async def agen():  # type: ignore[no-untyped-def]
        for i in range(4):
            yield i

    assert await _drain(open_source(agen(), None)) == [0, 1, 2, 3]

    q: asyncio.Queue[object] = asyncio.Queue()
    for item in (1, "x", ALL_DONE, 99):
        q.put_nowait(item)
    source = open_source(None, q)
    assert source.is_queue
    assert await _drain(source) == [1, "x"]

    mq = multiprocessing.get_context("spawn").Queue()
    for item in (7, 8, ALL_DONE):
        mq.put(item)
    assert await _drain(open_source(None, mq)) == [7, 8]


def test_source_argument_errors() -> None:
    with pytest.raises(ValueError, match="Exactly one of `inputs` or `queue`"):
        open_source([1], asyncio.Queue())
    with pytest.raises(ValueError, match="Exactly one of `inputs` or `queue`"):
        open_source(None, None)
    with pytest.raises(ValueError, match="not a single str"):
        open_source("abc", None)
    with pytest.raises(ValueError, match="iterable"):
        open_source(42, None)


def test_optimize_argument_errors(tmp_path: object) -> None:
    out = str(tmp_path)
    with pytest.raises(ValueError, match="Exactly one of `inputs` or `queue`"):
        optimize(identity, None, out, chunk_size=2)
    with pytest.raises(ValueError, match="Exactly one of `chunk_size` or `chunk_bytes`"):
        optimize(identity, [1], out)
    with pytest.raises(ValueError, match="Exactly one of `chunk_size` or `chunk_bytes`"):
        optimize(identity, [1], out, chunk_size=2, chunk_bytes=100)
    with pytest.raises(ValueError, match="mode"):
        optimize(identity, [1], out, chunk_size=2, mode="replace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compression"):
        optimize(identity, [1], out, chunk_size=2, compression="gzip")
    with pytest.raises(ValueError, match="item_loader"):
        optimize(identity, [1], out, chunk_size=2, item_loader=object())
    with pytest.raises(ValueError, match="num_workers"):
        optimize(identity, [1], out, chunk_size=2, num_workers=-1)
    with pytest.raises(ValueError, match="start_method"):
        optimize(identity, [1], out, chunk_size=2, start_method="teleport")
    with pytest.raises(ValueError, match="use_checkpoint"):
        optimize(identity, [1], out, chunk_size=2, use_checkpoint=True, keep_data_ordered=False)
    with pytest.raises(TypeError, match="unexpected keyword"):
        optimize(identity, [1], out, chunk_size=2, colour="blue")


def test_extra_kwargs_at_defaults_are_accepted() -> None:
    check_extra_kwargs("optimize", {"num_downloaders": 4, "optimize_dns": None, "machine": None})


def test_topology_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATA_OPTIMIZER_NUM_NODES", raising=False)
    monkeypatch.delenv("DATA_OPTIMIZER_NODE_RANK", raising=False)
    monkeypatch.delenv("NODE_RANK", raising=False)
    topo = resolve_topology(0, None, "spawn")
    assert (topo.num_workers, topo.num_nodes, topo.node_rank) == (1, 1, 0)
    monkeypatch.setenv("NODE_RANK", "1")
    topo = resolve_topology(3, 2, "spawn")
    assert (topo.node_rank, topo.rank(0), topo.rank(2)) == (1, 3, 5)
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "5")
    with pytest.raises(ValueError, match="node rank"):
        resolve_topology(3, 2, "spawn")


async def test_optimize_inside_running_loop_raises(tmp_path: object) -> None:
    with pytest.raises(LoopError, match="optimize_async"):
        optimize(identity, [1, 2], str(tmp_path), chunk_size=2)


def test_data_processor_import_path() -> None:
    from aiolit.processing.data_processor import ALL_DONE as sentinel

    assert sentinel == "ALL_DONE"


def test_unpicklable_fn_is_a_clear_error(tmp_path: object) -> None:
    from aiolit.errors import OptimizeError

    with pytest.raises(OptimizeError, match="picklable"):
        optimize(lambda x: x, [1, 2], str(tmp_path), chunk_size=2, num_workers=1, start_method="spawn",
                 verbose=False)  # fmt: skip
