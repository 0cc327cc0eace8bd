"""optimize on other executors (Dask) and to remote outputs (S3 via moto)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import aiolit.processing as ld
from aiolit.errors import OptimizeError
from tests.processing import fns
from tests.processing.readback import read_aiolit, read_litdata


@pytest.mark.slow
def test_dask_local_cluster_executor(tmp_path: Path) -> None:
    distributed = pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed")
    out = str(tmp_path)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        ld.optimize(fns.square_pair, list(range(40)), out, chunk_size=6, num_workers=2,
                    executor=client.get_executor(), verbose=False)  # fmt: skip
        expected = [(i, i**2) for i in range(40)]
        assert read_aiolit(out) == expected
        assert read_litdata(out) == expected
        with pytest.raises(OptimizeError, match=r"input #7 \(7\)"):
            ld.optimize(fns.fail_on_7, list(range(20)), str(tmp_path / "bad"), chunk_size=2, num_workers=2,
                        executor=client.get_executor(), verbose=False)  # fmt: skip
        assert not os.path.exists(tmp_path / "bad" / "index.json")


def _list_keys(url: str, options: dict[str, Any]) -> list[str]:
    from aiolit.stores import open_store

    async def run() -> list[str]:
        store = open_store(url, options)
        try:
            return sorted([meta.key async for meta in store.list()])
        finally:
            await store.aclose()

    return asyncio.run(run())


def _download(url: str, options: dict[str, Any], target: Path) -> None:
    from aiolit.stores import open_store

    async def run() -> None:
        store = open_store(url, options)
        try:
            async for meta in store.list():
                (target / meta.key).parent.mkdir(parents=True, exist_ok=True)
                (target / meta.key).write_bytes(await store.get(meta.key))
        finally:
            await store.aclose()

    asyncio.run(run())


@pytest.mark.s3
def test_optimize_map_merge_to_s3(s3_server: Any, tmp_path: Path) -> None:
    options = s3_server.storage_options
    url = s3_server.new_url("optimized")
    ld.optimize(fns.square_pair, list(range(30)), url, chunk_size=4, num_workers=2, start_method="fork",
                storage_options=options, verbose=False)  # fmt: skip
    keys = _list_keys(url, options)
    assert "index.json" in keys and not [k for k in keys if k.endswith(".index.json")]
    assert len([k for k in keys if k.endswith(".bin")]) == 8
    local = tmp_path / "copy"
    local.mkdir()
    _download(url, options, local)
    assert read_aiolit(str(local)) == [(i, i**2) for i in range(30)]

    # append to the remote dataset, then merge it with a local one into S3
    ld.optimize(fns.square_pair, list(range(30, 40)), url, chunk_size=4, num_workers=1, mode="append",
                storage_options=options, verbose=False)  # fmt: skip
    other = str(tmp_path / "more")
    ld.optimize(fns.square_pair, list(range(40, 45)), other, chunk_size=4, num_workers=1, verbose=False)
    merged = s3_server.new_url("merged")
    ld.merge_datasets([url, other], merged, storage_options=options)
    local_merged = tmp_path / "merged"
    local_merged.mkdir()
    _download(merged, options, local_merged)
    expected = [(i, i**2) for i in range(45)]
    assert read_aiolit(str(local_merged)) == expected
    assert read_litdata(str(local_merged)) == expected

    # map: files written by fn land under the remote prefix with their relative paths
    mapped = s3_server.new_url("mapped")
    ld.map(fns.write_nested, list(range(4)), mapped, num_workers=2, start_method="fork",
           storage_options=options, verbose=False)  # fmt: skip
    assert _list_keys(mapped, options) == ["d0/f0.bin", "d0/f2.bin", "d1/f1.bin", "d1/f3.bin"]


@pytest.mark.s3
def test_async_fn_to_s3(s3_server: Any, tmp_path: Path) -> None:
    options = s3_server.storage_options
    url = s3_server.new_url("async")
    ld.optimize(fns.async_double, list(range(20)), url, chunk_size=3, storage_options=options, verbose=False)
    local = tmp_path / "copy"
    local.mkdir()
    _download(url, options, local)
    assert read_aiolit(str(local)) == [i * 2 for i in range(20)]
