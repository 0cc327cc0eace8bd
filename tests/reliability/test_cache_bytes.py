"""Issue 8, items 5, 7, 8, 10, 11, 12: a stale or shared chunk cache, and hostile bytes.

Each test is named after its case and fails on the code before the fix: real S3 servers (moto
and SeaweedFS) for the remote cases, a real second process for the live-reader case, real
threads and loops for the shared cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiolit import _loop
from aiolit.errors import CorruptChunkError, FormatError
from aiolit.format import ChunkWriter, merge_shards
from aiolit.processing import merge_datasets
from aiolit.stores import open_store
from aiolit.streaming import StreamingDataLoader, StreamingDataset, _resolve
from tests.streaming._data import sample, upload, write_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOLIT_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("WORLD_SIZE", "RANK", "GLOBAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


def write(path: Path, items: list[Any], *, chunk_size: int = 7, **kwargs: Any) -> list[Any]:
    writer = ChunkWriter(str(path), chunk_size=chunk_size, **kwargs)
    for item in items:
        writer.add(item)
    writer.done()
    merge_shards(str(path))
    return items


def clear(server: Any, url: str) -> None:
    async def delete_all() -> None:
        store = open_store(url, server.storage_options)
        try:
            keys = [m.key async for m in store.list("")]
            await asyncio.gather(*(store.delete(k) for k in keys))
        finally:
            await store.aclose()

    _loop.run(delete_all())


def every_path(ds: StreamingDataset, expected: list[Any]) -> None:
    """Iteration, ds[i], aget, async for and a 2-worker loader all give ``expected``."""
    assert list(ds) == expected
    assert [ds[i] for i in range(len(expected))] == expected

    async def agets() -> list[Any]:
        return [await ds.aget(i) for i in range(len(expected))]

    async def afor() -> list[Any]:
        return [x async for x in ds]

    assert asyncio.run(agets()) == expected
    assert asyncio.run(afor()) == expected
    loader = StreamingDataLoader(ds, batch_size=1, num_workers=2, collate_fn=lambda b: b[0])
    assert sorted(loader, key=lambda x: x["i"]) == expected


# -- 8.5: stale or shared cache ---------------------------------------------------------------


@pytest.mark.s3
def test_rebuilt_dataset_not_read_from_stale_cache(seaweed_server: Any, tmp_path: Path) -> None:
    """merge_datasets rebuilds a dataset at the same URL with same-sized chunks: new samples."""
    opts = seaweed_server.storage_options
    url = seaweed_server.new_url("merged")
    cache = str(tmp_path / "cache")
    parts = [tmp_path / "a", tmp_path / "b"]
    old = write(parts[0], [sample(i) for i in range(10)]) + write(
        parts[1], [sample(i) for i in range(10, 20)]
    )
    merge_datasets([str(p) for p in parts], url, storage_options=opts)
    index = json.loads(_loop.run(open_store(url, opts).get("index.json")))
    assert float(index["updated_at"]) > 0  # every index aiolit writes carries one
    assert list(StreamingDataset(url, cache_dir=cache, storage_options=opts)) == old

    # Same shapes and sizes, other values: only the index (updated_at, checksums) tells them apart.
    new = [{"i": 1000 + x["i"], "s": "y" * len(x["s"])} for x in old]
    clear(seaweed_server, url)
    rebuilt = [tmp_path / "c", tmp_path / "d"]
    write(rebuilt[0], new[:10])
    write(rebuilt[1], new[10:])
    merge_datasets([str(p) for p in rebuilt], url, storage_options=opts)
    every_path(StreamingDataset(url, cache_dir=cache, storage_options=opts), new)

    # A chunk on disk that does not match its index entry (same size) is never adopted.
    ds = StreamingDataset(url, cache_dir=cache, storage_options=opts)
    assert ds.source.cache_dir is not None
    planted = ds.source.cache_dir / ds.source.names[1]
    data = bytearray(planted.read_bytes())
    data[-1] ^= 0xFF
    planted.write_bytes(bytes(data))
    fresh = StreamingDataset(url, cache_dir=cache, storage_options=opts)
    assert list(fresh) == new
    assert fresh.source.cache(10**9).rejected == 1


@pytest.mark.s3
def test_same_url_on_two_endpoints_does_not_share_a_cache(
    s3_server: Any, seaweed_server: Any, tmp_path: Path
) -> None:
    """``s3://bucket/ds`` on moto and on SeaweedFS are two datasets, even with equal indexes."""
    bucket = f"same-{uuid.uuid4().hex[:10]}"
    url = f"s3://{bucket}/ds"
    datasets = []
    for k, server in enumerate((s3_server, seaweed_server)):
        server._boto3().create_bucket(Bucket=bucket)
        local = tmp_path / f"src{k}"
        items = write(local, [{"i": 100 * k + i, "s": "z" * (i % 7)} for i in range(20)])
        # Same updated_at and no checksums: nothing in the index tells the two apart.
        index = json.loads((local / "index.json").read_text())
        index["updated_at"] = "1.0"
        for chunk in index["chunks"]:
            chunk.pop("checksum", None)
        (local / "index.json").write_text(json.dumps(index))
        upload(server, local, url)
        datasets.append((server, items))
    cache = str(tmp_path / "cache")
    for server, items in datasets + datasets:
        ds = StreamingDataset(url, cache_dir=cache, storage_options=server.storage_options)
        assert list(ds) == items
        assert [ds[i] for i in range(len(items))] == items


@pytest.mark.s3
def test_new_version_keeps_the_one_a_live_process_reads(
    seaweed_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening version 2 leaves version 1 to the process still reading it; removed after it ends."""
    monkeypatch.setattr(_resolve, "VERSION_GRACE_S", 0.0)
    opts = seaweed_server.storage_options
    url = seaweed_server.new_url("ds")
    cache = str(tmp_path / "cache")
    v1 = write_dataset(tmp_path / "v1", 30)
    upload(seaweed_server, tmp_path / "v1", url)
    reader = textwrap.dedent(
        f"""
        import json, sys
        from aiolit.streaming import StreamingDataset
        ds = StreamingDataset({url!r}, cache_dir={cache!r}, storage_options=json.loads(sys.argv[1]))
        first = list(ds)  # every chunk of version 1 is now in the cache
        print(str(ds.source.cache_dir), flush=True)
        sys.stdin.readline()  # the test opens version 2 meanwhile
        print(json.dumps([first, list(ds)]), flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    proc = subprocess.Popen(
        [sys.executable, "-c", reader, json.dumps(opts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        v1_dir = Path(proc.stdout.readline().strip())
        assert v1_dir.is_dir()
        clear(seaweed_server, url)
        v2 = write(tmp_path / "v2", [{"i": -x["i"], "s": x["s"]} for x in v1])
        upload(seaweed_server, tmp_path / "v2", url)
        ds2 = StreamingDataset(url, cache_dir=cache, storage_options=opts)
        assert ds2.source.cache_dir != v1_dir and v1_dir.is_dir()
        assert list(ds2) == v2
        proc.stdin.write("\n")
        proc.stdin.flush()
        first, second = json.loads(proc.stdout.readline())
        assert first == v1 and second == v1  # read from version 1 to the end, untouched
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(timeout=60) == 0
    StreamingDataset(url, cache_dir=cache, storage_options=opts)  # the reader is gone: cleaned
    assert not v1_dir.exists()


# -- 8.7: random access within the budget ------------------------------------------------------


def test_random_access_respects_max_cache_size(tmp_path: Path) -> None:
    """ds[i] and aget over 20 zstd chunks of ~100 kB stay within a 500 kB budget."""
    rng = np.random.default_rng(0)
    items = [{"i": i, "blob": rng.bytes(25_000)} for i in range(80)]
    write(tmp_path / "src", items, chunk_size=4, compression="zstd")
    ds = StreamingDataset(str(tmp_path / "src"), cache_dir=str(tmp_path / "cache"), max_cache_size="500kB")
    assert not ds.source.in_place  # whole-file zstd chunks go through the cache
    chunk_bytes = max(e.chunk_bytes for e in ds.source.entries)
    assert 20 * chunk_bytes > 4 * 500_000

    def cached_bytes() -> int:
        assert ds.source.cache_dir is not None
        return sum(p.stat().st_size for p in ds.source.cache_dir.glob("chunk-*.bin"))

    peaks = []
    for i in range(0, 80, 3):
        assert ds[i] == items[i]
        peaks.append(cached_bytes())

    async def agets() -> None:
        for i in range(1, 80, 3):
            assert await ds.aget(i) == items[i]
            peaks.append(cached_bytes())

    asyncio.run(agets())
    # the budget, overshot by at most the chunk being read (as iteration)
    assert max(peaks) <= 500_000 + chunk_bytes
    assert ds.source.cache(500_000).evictions > 0


# -- 8.8: one cache, two consumers on two threads ------------------------------------------


def _two_readers(ds: StreamingDataset, epochs: int) -> dict[str, list[Any]]:
    """Iterate ``ds`` sync on one thread and with ``async for`` on another, both at once."""
    results: dict[str, list[Any]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def sync_side() -> None:
        try:
            start.wait()
            results["sync"] = [x for _ in range(epochs) for x in ds]
        except BaseException as exc:
            errors.append(exc)

    async def consume() -> list[Any]:
        out = []
        for _ in range(epochs):
            out += [x async for x in ds]
        return out

    def async_side() -> None:
        try:
            start.wait()
            results["async"] = asyncio.run(consume())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f, daemon=True) for f in (sync_side, async_side)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a reader hung"
    assert not errors, errors
    return results


def test_sync_and_async_iteration_share_the_cache_safely(tmp_path: Path) -> None:
    """Sync iteration (aiolit's loop thread) and ``async for`` on another thread, at once.

    A budget of a few chunks makes both readers evict and re-download all the time. Before the
    fix this raised KeyError/FileNotFoundError or hung within a few rounds.
    """
    items = write_dataset(tmp_path / "src", 200, chunk_size=3)
    for trial in range(3):
        ds = StreamingDataset(
            f"local:{tmp_path / 'src'}",
            cache_dir=str(tmp_path / f"cache{trial}"),
            max_cache_size=700,
            max_pre_download=4,
        )
        results = _two_readers(ds, epochs=2)
        assert results["sync"] == items * 2
        assert results["async"] == items * 2
        cache = ds.source.cache(700)
        assert cache.evictions > 0  # the budget forced the two readers to share and evict
        assert cache.used_bytes == sum(cache._files.values())  # no reservation left behind


# -- 8.10: zstd bombs ----------------------------------------------------------------------


def _bomb(size: int, *, declare: bool) -> bytes:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=1, write_content_size=declare)
    obj = cctx.compressobj(size=size if declare else -1)
    zeros = bytes(1 << 20)
    parts = [obj.compress(zeros) for _ in range(size >> 20)]
    return b"".join(parts) + obj.flush()


@pytest.mark.parametrize("declare", [True, False], ids=["size-declared", "size-unknown"])
def test_zstd_bomb_chunk_fails_without_inflating(
    tmp_path: Path, declare: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 25 kB chunk that inflates to 200 MB: CorruptChunkError, decompressed once, capped."""
    src = tmp_path / "src"
    write_dataset(src, 30, chunk_size=7, compression="zstd")
    (src / "chunk-0-1.zstd.bin").write_bytes(_bomb(200 << 20, declare=declare))
    ds = StreamingDataset(str(src), cache_dir=str(tmp_path / "cache"))
    from aiolit.format import _codec

    calls = []
    real = _codec.zstd_decompress

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append((kwargs.get("what"), kwargs.get("expected_size")))
        return real(*args, **kwargs)

    monkeypatch.setattr(_codec, "zstd_decompress", counting)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptChunkError, match=r"chunk-0-1\.zstd\.bin"):
            list(ds)
        with pytest.raises(CorruptChunkError, match=r"chunk-0-1\.zstd\.bin"):
            ds[8]
        with pytest.raises(CorruptChunkError, match=r"chunk-0-1\.zstd\.bin"):
            asyncio.run(ds.aget(9))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20  # never near the 200 MB the frame inflates to
    bomb_calls = [c for c in calls if c[0] == "chunk-0-1.zstd.bin"]
    assert {size for _, size in bomb_calls} == {ds.source.entries[1].chunk_bytes}
    assert len(bomb_calls) == 3  # once per read path, never a second try; always capped
    assert ds[0] == sample(0)  # the healthy chunks still read


# -- 8.11: hostile index values --------------------------------------------------------------


def _mutated(src: Path, dst: Path, mutate: Any) -> Path:
    import shutil

    shutil.copytree(src, dst)
    index = json.loads((dst / "index.json").read_text())
    mutate(index)
    (dst / "index.json").write_text(json.dumps(index))
    return dst


def _read_all(input_dir: str, cache: Path) -> None:
    ds = StreamingDataset(input_dir, cache_dir=str(cache))
    for _ in ds:  # not list(ds): list() sizes its buffer from len(), which trusts the index
        pass
    if len(ds):
        ds[len(ds) - 1]


def test_hostile_index_values_are_format_errors(tmp_path: Path) -> None:
    """Huge chunk_size, a NUL in updated_at, unhashable data_spec keys: FormatError naming the field."""
    src = tmp_path / "src"
    write_dataset(src, 20, chunk_size=7)
    spec = json.loads(json.loads((src / "index.json").read_text())["config"]["data_spec"])
    spec[1]["context"] = json.dumps([[1], [2]])

    def huge(index: dict[str, Any]) -> None:
        index["chunks"][0]["chunk_size"] = 8 << 40

    def huge_header_fits_u32(index: dict[str, Any]) -> None:
        index["chunks"][0]["chunk_size"] = 2**32 - 1

    def huge_unknown_bytes(index: dict[str, Any]) -> None:
        index["chunks"][0]["chunk_size"] = 2**31
        index["chunks"][0]["chunk_bytes"] = 0

    def nul(index: dict[str, Any]) -> None:
        index["updated_at"] = "1\x002"

    def unhashable(index: dict[str, Any]) -> None:
        index["config"]["data_spec"] = json.dumps(spec)

    cases = [
        (huge, "chunk_size"),
        (huge_header_fits_u32, "chunk_size"),
        (huge_unknown_bytes, "chunk_size|header says 7 items"),
        (nul, "updated_at"),
        (unhashable, "data_spec"),
    ]
    tracemalloc.start()
    try:
        for k, (mutate, field) in enumerate(cases):
            bad = _mutated(src, tmp_path / f"bad{k}", mutate)
            for input_dir in (str(bad), f"local:{bad}"):
                with pytest.raises(FormatError, match=field):
                    _read_all(input_dir, tmp_path / "cache")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20  # nothing was sized by the hostile values


def test_range_read_accepts_unknown_chunk_bytes(tmp_path: Path) -> None:
    """``chunk_bytes: 0`` means unknown: ds[i]/aget by range read, and iteration, still work."""
    src = tmp_path / "src"
    items = write_dataset(src, 20, chunk_size=7)

    def unknown(index: dict[str, Any]) -> None:
        for chunk in index["chunks"]:
            chunk["chunk_bytes"] = 0

    bad = _mutated(src, tmp_path / "zero", unknown)
    ds = StreamingDataset(f"local:{bad}", cache_dir=str(tmp_path / "cache"))
    assert ds.source.range_readable
    assert [ds[i] for i in range(20)] == items

    async def agets() -> list[Any]:
        return [await ds.aget(i) for i in range(20)]

    assert asyncio.run(agets()) == items
    assert list(ds) == items
    assert list(StreamingDataset(str(bad))) == items


_FIELD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    target=st.sampled_from(
        [
            ("chunk", "chunk_size"),
            ("chunk", "chunk_bytes"),
            ("chunk", "dim"),
            ("chunk", "filename"),
            ("chunk", "checksum"),
            ("top", "updated_at"),
            ("config", "data_format"),
            ("config", "data_spec"),
            ("config", "compression"),
            ("config", "chunk_size"),
        ]
    ),
    value=_FIELD_VALUES,
    remote=st.booleans(),
)
def test_fuzzed_index_fields_only_raise_format_error(
    tmp_path_factory: pytest.TempPathFactory, target: tuple[str, str], value: Any, remote: bool
) -> None:
    """Any value of any of these index fields: reading works or fails with FormatError."""
    base = tmp_path_factory.mktemp("fuzz")
    src = base / "src"
    write_dataset(src, 12, chunk_size=5)
    where, key = target

    def mutate(index: dict[str, Any]) -> None:
        holder = {"chunk": index["chunks"][0], "top": index, "config": index["config"]}[where]
        holder[key] = value

    bad = _mutated(src, base / "bad", mutate)
    try:
        _read_all(f"local:{bad}" if remote else str(bad), base / "cache")
    except FormatError:
        pass
    except FileNotFoundError:
        assert key == "filename"  # a valid name of a chunk that is not there


# -- 8.12: verify ----------------------------------------------------------------------------


def test_verify_checks_in_place_chunks_and_cache_adoption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``verify=True`` catches a flipped byte in place; the cache never adopts a damaged copy."""
    src = tmp_path / "src"
    items = write_dataset(src, 30, chunk_size=7)
    chunk = src / "chunk-0-1.bin"
    good = chunk.read_bytes()
    damaged = bytearray(good)
    damaged[-1] ^= 0x01  # same size; the last sample's string changes, only sha256 can tell
    chunk.write_bytes(bytes(damaged))
    assert list(StreamingDataset(str(src))) != items  # the default reads in place, unverified
    ds = StreamingDataset(str(src), verify=True)
    with pytest.raises(CorruptChunkError, match=r"chunk-0-1\.bin.*sha256"):
        list(ds)
    with pytest.raises(CorruptChunkError, match="sha256"):
        ds[13]
    with pytest.raises(CorruptChunkError, match="sha256"):
        asyncio.run(ds.aget(13))
    loader = StreamingDataLoader(ds, batch_size=2, num_workers=2)
    with pytest.raises(CorruptChunkError, match="sha256"):
        list(loader)
    chunk.write_bytes(good)
    every_path(StreamingDataset(str(src), verify=True), items)

    # Through the cache: a damaged copy already on disk is replaced, not adopted.
    url = f"local:{src}"
    cached = StreamingDataset(url, cache_dir=str(tmp_path / "cache"))
    assert list(cached) == items
    assert cached.source.cache_dir is not None
    (cached.source.cache_dir / "chunk-0-1.bin").write_bytes(bytes(damaged))
    again = StreamingDataset(url, cache_dir=str(tmp_path / "cache"))
    assert list(again) == items
    assert [again[i] for i in range(len(items))] == items
    assert again.source.cache(10**9).rejected == 1
    assert (cached.source.cache_dir / "chunk-0-1.bin").read_bytes() == good

    # A later process trusts the verification stamp of an unchanged file instead of hashing it.
    from aiolit.streaming import _source

    _source._VERIFIED.clear()  # what a new process starts with
    hashed: list[Path] = []
    real = _source._checksum_problem
    monkeypatch.setattr(_source, "_checksum_problem", lambda p, e: hashed.append(p) or real(p, e))
    assert list(StreamingDataset(url, cache_dir=str(tmp_path / "cache"))) == items
    assert hashed == []
