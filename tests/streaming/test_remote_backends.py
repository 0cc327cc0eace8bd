"""Streaming from every remote backend (GCS, Azure, S3) and closing the stores it opens."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from aiolit import _loop
from aiolit.streaming import StreamingDataLoader, StreamingDataset
from tests.streaming._data import ids, upload, write_dataset

REPO = Path(__file__).resolve().parents[2]
BACKENDS = [
    pytest.param("gcs_server", marks=pytest.mark.gcs),
    pytest.param("azure_server", marks=pytest.mark.azure),
    pytest.param("seaweed_server", marks=pytest.mark.s3),
]


def _remote(
    server: Any, tmp_path: Path, n: int = 53, chunk_size: int = 6
) -> tuple[str, list[dict[str, Any]]]:
    items = write_dataset(tmp_path / "src", n, chunk_size=chunk_size)
    url = server.new_url("ds")
    upload(server, tmp_path / "src", url)
    return url, items


@pytest.mark.parametrize("backend", BACKENDS)
def test_full_epoch_equality(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server = request.getfixturevalue(backend)
    url, items = _remote(server, tmp_path)
    opts = server.storage_options
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "c"), storage_options=opts)
    assert list(ds) == items
    # The next epoch reads from the cache; a shuffled one covers every sample exactly once.
    shuffled = StreamingDataset(url, cache_dir=str(tmp_path / "c"), storage_options=opts, shuffle=True)
    assert sorted(ids(list(shuffled))) == list(range(len(items)))
    # Random access by range GETs on a fresh cache.
    fresh = StreamingDataset(url, cache_dir=str(tmp_path / "c2"), storage_options=opts)
    assert [fresh[i] for i in (0, 17, len(items) - 1)] == [items[0], items[17], items[-1]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_dataloader_workers_epoch(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server = request.getfixturevalue(backend)
    url, items = _remote(server, tmp_path)
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "c"), storage_options=server.storage_options)
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=2)
    got = sorted(i for batch in loader for i in batch["i"].tolist())
    assert got == list(range(len(items)))
    # A second epoch of the same loader (workers fork again from a parent that holds a store).
    assert sorted(i for batch in loader for i in batch["i"].tolist()) == got


@pytest.mark.parametrize("backend", BACKENDS)
async def test_async_epoch_equality(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server = request.getfixturevalue(backend)
    url, items = await asyncio.to_thread(_remote, server, tmp_path)
    ds = await asyncio.to_thread(
        StreamingDataset, url, cache_dir=str(tmp_path / "c"), storage_options=server.storage_options
    )
    assert [item async for item in ds] == items


@pytest.mark.gcs
def test_stores_are_closed_when_the_dataset_is_collected(
    gcs_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, items = _remote(gcs_server, tmp_path, n=20)
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "c"), storage_options=gcs_server.storage_options)
    assert list(ds) == items
    stores = ds.source._stores
    assert stores  # the sync path opened a store on aiolit's loop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del ds
        gc.collect()
        _loop.run(asyncio.sleep(0))
    assert stores == {}
    assert not [w for w in caught if "Unclosed" in str(w.message)]
    assert "Unclosed" not in caplog.text


_EXIT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from aiolit.streaming import StreamingDataLoader, StreamingDataset

    url, opts, cache = json.loads(sys.argv[1])
    ds = StreamingDataset(url, cache_dir=cache, storage_options=opts)
    n = len(list(ds))
    loader = StreamingDataLoader(ds, batch_size=4, num_workers=2)
    m = sum(len(b["i"]) for b in loader)
    print(json.dumps([n, m ,ds[3]["i"]]))
    # exit with the dataset (and its stores) still alive
    """
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_unclosed_session_at_exit(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server = request.getfixturevalue(backend)
    url, items = _remote(server, tmp_path, n=30)
    args = json.dumps([url, server.storage_options, str(tmp_path / "c")])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", _EXIT_SCRIPT, args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [len(items), len(items), 3]
    assert "Unclosed" not in proc.stderr, proc.stderr[-3000:]
