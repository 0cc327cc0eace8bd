"""StreamingRawDataset over a local directory and the moto S3 server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiolit import _loop
from aiolit.errors import ObjectNotFoundError
from aiolit.raw import BaseIndexer, FileIndexer, FileMetadata, StreamingRawDataset
from aiolit.raw.indexer import INDEX_FILENAME
from aiolit.stores import open_store

# Relative path -> content; sizes vary (empty file included), nested up to depth 3.
NAMES = ["a.txt", "b.bin", "empty.dat", "img/0.jpg", "img/0.png", "img/1.jpg", "img/1.png", "x/y/z.txt"]


def make_files(root: Path, names: list[str] = NAMES, seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    for name in names:
        data = b"" if name.startswith("empty") else rng.randbytes(rng.randint(1, 5000))
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        files[name] = data
    return files


def cached_index(cache: Path, input_dir: str) -> Path:
    return cache / hashlib.md5(input_dir.encode()).hexdigest() / INDEX_FILENAME


def test_local_every_file(tmp_path: Path) -> None:
    files = make_files(tmp_path / "data")
    ds = StreamingRawDataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(ds) == len(NAMES)
    assert [f.path for f in ds.files] == [str(tmp_path / "data" / n) for n in sorted(NAMES)]
    assert [f.size for f in ds.files] == [len(files[n]) for n in sorted(NAMES)]
    assert [ds[i] for i in range(len(ds))] == [files[n] for n in sorted(NAMES)]
    assert ds.__getitems__([7, 0, 3]) == [files[sorted(NAMES)[i]] for i in (7, 0, 3)]
    assert ds[-1] == files["x/y/z.txt"]
    with pytest.raises(IndexError, match="out of range"):
        ds[len(NAMES)]
    # item_type="path" on a plain local directory returns the files in place.
    paths = StreamingRawDataset(tmp_path / "data", cache_dir=tmp_path / "cache", item_type="path")
    assert paths[0] == str(tmp_path / "data" / "a.txt")


def test_transform_and_filters(tmp_path: Path) -> None:
    files = make_files(tmp_path / "data")
    ds = StreamingRawDataset(
        tmp_path / "data",
        cache_dir=tmp_path / "c1",
        indexer=FileIndexer(extensions=["JPG", ".png"]),
        transform=lambda data: hashlib.sha1(data).hexdigest(),
    )
    names = ["img/0.jpg", "img/0.png", "img/1.jpg", "img/1.png"]
    assert [ds[i] for i in range(len(ds))] == [hashlib.sha1(files[n]).hexdigest() for n in names]
    shallow = StreamingRawDataset(
        tmp_path / "data", cache_dir=tmp_path / "c2", indexer=FileIndexer(max_depth=1)
    )
    assert [os.path.basename(f.path) for f in shallow.files] == ["a.txt", "b.bin", "empty.dat"]


class PairDataset(StreamingRawDataset):
    """The README's grouping example: (image, mask) pairs by file stem."""

    def setup(self, files: list[FileMetadata]) -> list[FileMetadata] | list[list[FileMetadata]]:
        by_stem: dict[str, list[FileMetadata]] = {}
        for f in files:
            if "/img/" in f.path:
                by_stem.setdefault(os.path.splitext(f.path)[0], []).append(f)
        return [sorted(group, key=lambda f: f.path) for _, group in sorted(by_stem.items())]


def test_grouping_via_setup(tmp_path: Path) -> None:
    files = make_files(tmp_path / "data")
    ds = PairDataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(ds) == 2
    assert ds[1] == [files["img/1.jpg"], files["img/1.png"]]
    assert ds.__getitems__([0, 1]) == [
        [files["img/0.jpg"], files["img/0.png"]],
        [files["img/1.jpg"], files["img/1.png"]],
    ]
    sized = PairDataset(
        tmp_path / "data", cache_dir=tmp_path / "cache", transform=lambda g: [len(b) for b in g]
    )
    assert sized[0] == [len(files["img/0.jpg"]), len(files["img/0.png"])]


def test_index_cache_and_recompute(tmp_path: Path) -> None:
    import zstd  # type: ignore[import-untyped]  # LitData's own zstd binding: the index must be readable by it

    make_files(tmp_path / "data")
    data_dir = str(tmp_path / "data")
    ds = StreamingRawDataset(data_dir, cache_dir=tmp_path / "cache")
    index_path = cached_index(tmp_path / "cache", data_dir)
    content = json.loads(zstd.decompress(index_path.read_bytes()))
    assert sorted(content) == ["created_at", "files", "source"]
    assert content["source"] == data_dir
    assert content["files"] == [{"path": f.path, "size": f.size} for f in ds.files]
    assert not (tmp_path / "data" / INDEX_FILENAME).exists()  # a local source dir is left untouched

    (tmp_path / "data" / "new.txt").write_bytes(b"new")
    assert len(StreamingRawDataset(data_dir, cache_dir=tmp_path / "cache")) == len(NAMES)  # cached index
    fresh = StreamingRawDataset(data_dir, cache_dir=tmp_path / "cache", recompute_index=True)
    assert len(fresh) == len(NAMES) + 1
    assert fresh[sorted([*NAMES, "new.txt"]).index("new.txt")] == b"new"
    # The rebuilt index replaced the cached one.
    assert len(StreamingRawDataset(data_dir, cache_dir=tmp_path / "cache")) == len(NAMES) + 1


class TxtIndexer(BaseIndexer):
    """A LitData-style sync indexer: only .txt files, found with os.walk."""

    def discover_files(self, input_dir: str, storage_options: dict[str, Any] | None) -> list[FileMetadata]:
        found = [
            os.path.join(d, n) for d, _, names in os.walk(input_dir) for n in names if n.endswith(".txt")
        ]
        return [FileMetadata(p, os.path.getsize(p)) for p in sorted(found)]


def test_custom_sync_indexer_and_corrupt_cache(tmp_path: Path) -> None:
    files = make_files(tmp_path / "data")
    ds = StreamingRawDataset(tmp_path / "data", cache_dir=tmp_path / "cache", indexer=TxtIndexer())
    assert [ds[i] for i in range(len(ds))] == [files["a.txt"], files["x/y/z.txt"]]
    # A damaged cached index is ignored and rebuilt.
    index_path = cached_index(tmp_path / "cache", str(tmp_path / "data"))
    index_path.write_bytes(b"garbage")
    assert len(StreamingRawDataset(tmp_path / "data", cache_dir=tmp_path / "cache")) == len(NAMES)
    assert index_path.read_bytes() != b"garbage"


def test_stale_index_names_the_fix(tmp_path: Path) -> None:
    make_files(tmp_path / "data")
    StreamingRawDataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    os.unlink(tmp_path / "data" / "a.txt")
    ds = StreamingRawDataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    with pytest.raises(ObjectNotFoundError, match="recompute_index=True"):
        ds[0]


def test_missing_and_empty_dirs(tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError, match="does not exist") as info:
        StreamingRawDataset(tmp_path / "nope", cache_dir=tmp_path / "cache")
    assert str(tmp_path / "nope") in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObjectNotFoundError, match="no files found"):
        StreamingRawDataset(tmp_path / "empty", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="item_type"):
        StreamingRawDataset(tmp_path / "empty", item_type="text")  # type: ignore[arg-type]


def test_litdata_reads_our_index_and_we_read_theirs(tmp_path: Path) -> None:
    pytest.importorskip("litdata")
    from litdata import StreamingRawDataset as LitRaw

    files = make_files(tmp_path / "data")
    data_dir = str(tmp_path / "data")
    ours = StreamingRawDataset(data_dir, cache_dir=tmp_path / "c1")
    (tmp_path / "data" / "late.txt").write_bytes(b"late")
    theirs = LitRaw(data_dir, cache_dir=str(tmp_path / "c1"))
    assert len(theirs) == len(ours) == len(NAMES)  # LitData used our cached index, not a new listing
    assert [theirs[i] for i in range(len(theirs))] == [files[n] for n in sorted(NAMES)]

    LitRaw(data_dir, cache_dir=str(tmp_path / "c2"))  # LitData lists 9 files and caches its index
    os.unlink(tmp_path / "data" / "late.txt")
    again = StreamingRawDataset(data_dir, cache_dir=tmp_path / "c2")
    assert sorted(os.path.basename(f.path) for f in again.files) == sorted(
        [os.path.basename(n) for n in NAMES] + ["late.txt"]
    )


class RecordingDataset(StreamingRawDataset):
    """Writes one line per ``__getitems__`` call (pid, batch size) to prove the DataLoader uses it."""

    log: str = ""

    def __getitems__(self, indices: Any) -> list[Any]:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {len(indices)}\n")
        return super().__getitems__(indices)


def check_dataloader(ds: RecordingDataset, expected: list[bytes], log: Path) -> None:
    from torch.utils.data import DataLoader

    ds.log = str(log)
    # Any object with __len__/__getitem__ works; torch's stubs ask for a Dataset subclass.
    loader: DataLoader[Any] = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=list)  # type: ignore[arg-type]
    batches = list(loader)
    assert [item for batch in batches for item in batch] == expected
    calls = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(n) for _, n in calls) == sorted(len(b) for b in batches)
    assert len({pid for pid, _ in calls}) == 2 and str(os.getpid()) not in {pid for pid, _ in calls}


def test_dataloader_workers_local(tmp_path: Path) -> None:
    names = [f"f{i:03d}.bin" for i in range(37)]
    files = make_files(tmp_path / "data", names, seed=3)
    ds = RecordingDataset(tmp_path / "data", cache_dir=tmp_path / "cache")
    check_dataloader(ds, [files[n] for n in names], tmp_path / "calls.log")


def test_import_does_not_load_torch() -> None:
    code = "import sys, aiolit.raw, aiolit.raw.indexer; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- S3 (moto) -------------------------------------------------------------------------------


def upload(server: Any, url: str, files: dict[str, bytes]) -> None:
    async def put_all() -> None:
        store = open_store(url, server.storage_options)
        try:
            await asyncio.gather(*(store.put(k, v) for k, v in files.items()))
        finally:
            await store.aclose()

    _loop.run(put_all())


@pytest.fixture
def s3_files(s3_server: Any, tmp_path: Path) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    files = make_files(tmp_path / "src", [*NAMES, *(f"many/{i:02d}.bin" for i in range(20))], seed=1)
    url = s3_server.new_url("raw/files")
    upload(s3_server, url, files)
    return url, files, s3_server.storage_options


@pytest.mark.s3
def test_s3_every_file_and_index(s3_files: Any, s3_server: Any, tmp_path: Path) -> None:
    url, files, opts = s3_files
    names = sorted(files)
    ds = StreamingRawDataset(url, cache_dir=tmp_path / "cache", storage_options=opts)
    assert [f.path for f in ds.files] == [f"{url}/{n}" for n in names]
    assert ds.__getitems__(list(range(len(ds)))) == [files[n] for n in names]
    assert ds[3] == files[names[3]]
    assert cached_index(tmp_path / "cache", url).exists()

    # The index was uploaded next to the files: a fresh cache dir loads it instead of listing.
    upload(s3_server, url, {"late.bin": b"late"})
    other = StreamingRawDataset(url, cache_dir=tmp_path / "cache2", storage_options=opts)
    assert len(other) == len(files)
    assert len(
        StreamingRawDataset(url, cache_dir=tmp_path / "cache2", storage_options=opts, recompute_index=True)
    ) == (len(files) + 1)


@pytest.mark.s3
def test_s3_cache_files_and_paths(s3_files: Any, tmp_path: Path) -> None:
    url, files, opts = s3_files
    names = sorted(files)
    ds = StreamingRawDataset(url, cache_dir=tmp_path / "cache", storage_options=opts, cache_files=True)
    assert ds.__getitems__([0, 5, 9]) == [files[names[i]] for i in (0, 5, 9)]
    cache = Path(ds.cache_dir)
    assert (cache / names[5]).read_bytes() == files[names[5]]
    # A second read is served from the cache: prove it by changing the cached copy's content.
    (cache / names[5]).write_bytes(b"x" * len(files[names[5]]))
    assert ds[5] == b"x" * len(files[names[5]])

    paths = StreamingRawDataset(url, cache_dir=tmp_path / "p", storage_options=opts, item_type="path")
    got = paths.__getitems__(list(range(len(paths))))
    assert got == [os.path.join(paths.cache_dir, *n.split("/")) for n in names]
    assert [Path(p).read_bytes() for p in got] == [files[n] for n in names]


@pytest.mark.s3
async def test_s3_async_api(s3_files: Any, tmp_path: Path) -> None:
    url, files, opts = s3_files
    names = sorted(files)
    ds = await PairDataset.acreate(url, cache_dir=tmp_path / "cache", storage_options=opts)
    assert len(ds) == 2
    assert await ds.aget(0) == [files["img/0.jpg"], files["img/0.png"]]
    flat = await StreamingRawDataset.acreate(
        url, cache_dir=tmp_path / "cache2", storage_options=opts, transform=len, max_concurrency=4
    )
    assert await flat.aget_many(range(len(flat))) == [len(files[n]) for n in names]


@pytest.mark.s3
def test_s3_dataloader_workers(s3_files: Any, tmp_path: Path) -> None:
    url, files, opts = s3_files
    ds = RecordingDataset(url, cache_dir=tmp_path / "cache", storage_options=opts)
    check_dataloader(ds, [files[n] for n in sorted(files)], tmp_path / "calls.log")


@pytest.mark.s3
def test_s3_missing_prefix(s3_server: Any, tmp_path: Path) -> None:
    url = s3_server.new_url("nothing/here")
    with pytest.raises(ObjectNotFoundError, match="no files found in s3://"):
        StreamingRawDataset(url, cache_dir=tmp_path / "cache", storage_options=s3_server.storage_options)
