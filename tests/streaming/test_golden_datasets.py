"""Every golden dataset written by real LitData releases, through every StreamingDataset read path.

tests/format/test_format_golden.py reads the same datasets through ``aiolit.format`` only; here
each one goes through the paths users take: iteration, ``ds[i]``, ``await ds.aget(i)``,
``async for`` and a ``StreamingDataLoader`` with 2 workers. Values are compared with
``golden/cases.py`` (exact types; JPEG within its tolerance). Arrow-footer datasets (LitData
>= 0.2.7x with pyarrow) are also read from S3, where ``ds[i]`` starts with a byte-range read.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiolit.errors import FormatError
from aiolit.format import FernetEncryption
from aiolit.streaming import ParquetLoader, StreamingDataLoader, StreamingDataset, TokensLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "format"))
from _format_helpers import GOLDEN, assert_same, cases, golden_datasets

DATASETS = golden_datasets()
READABLE = [(w, c) for w, c in DATASETS if (w, c) != ("0.2.76", "zstd_batch")]
BLOCK = 16  # TokensLoader block size for the token datasets


@cache
def _encryption(writer: str, case: str) -> FernetEncryption:
    return FernetEncryption.load(str(GOLDEN / writer / f"{case}.key.json"), cases.FERNET_PASSWORD)


def open_golden(tmp_path: Path, writer: str, case: str) -> StreamingDataset:
    """A StreamingDataset over a private copy of ``writer/case`` (reading never touches the corpus)."""
    path = tmp_path / f"{writer}-{case}"
    shutil.copytree(GOLDEN / writer / case, path)
    loader = cases.CASES[case]["loader"]
    kwargs: dict[str, Any] = {}
    if loader == "tokens":
        kwargs["item_loader"] = TokensLoader(block_size=BLOCK)
    elif loader == "parquet":
        kwargs["item_loader"] = ParquetLoader()
    if case.startswith("fernet"):
        kwargs["encryption"] = _encryption(writer, case)
    return StreamingDataset(str(path), **kwargs)


def expected_samples(ds: StreamingDataset, case: str) -> list[Any]:
    """The dataset's samples in global order, from cases.py."""
    loader = cases.CASES[case]["loader"]
    if loader == "tokens":
        seq_fn = cases.token_seq if case == "tokens_numpy" else cases.token_seq_int32
        counts = [e.chunk_size for e in ds.source.entries]
        return list(cases.token_blocks(counts, BLOCK, seq_fn))
    if loader == "parquet":
        return [r for e in ds.source.entries for r in cases.parquet_file_rows(e.filename)]
    return [cases.expected(case, i) for i in range(cases.N)]


def sample_key(sample: Any) -> Any:
    """What identifies a sample of any golden case (its index, or its first token)."""
    if isinstance(sample, tuple):
        return int(sample[0])
    if isinstance(sample, dict):
        for name in ("index", "i", "id", "y"):
            if name in sample:
                return int(sample[name])
        return int(sample["a"][0])  # nested
    return int(np.asarray(sample)[0])  # a token block


def check_all(got: list[Any], want: list[Any], case: str, path: str) -> None:
    """Exactly ``want``, in order."""
    tolerance = cases.JPEG_TOLERANCE if case == "dict_jpeg" else None
    assert len(got) == len(want), f"{path}: {len(got)} samples, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert_same(g, w, path=f"{path}[{i}]", jpeg_tolerance=tolerance)


def check_unordered(got: list[Any], want: list[Any], case: str, path: str) -> None:
    """Every sample of ``want`` exactly once (the loader interleaves its workers)."""
    by_key = {sample_key(w): w for w in want}
    assert len(by_key) == len(want)
    keys = [sample_key(g) for g in got]
    assert sorted(keys) == sorted(by_key), f"{path}: samples differ (duplicates or gaps)"
    check_all(got, [by_key[k] for k in keys], case, path)


def _keep(batch: list[Any]) -> list[Any]:
    return batch  # module level: picklable for the loader workers


@pytest.mark.parametrize(("writer", "case"), READABLE, ids=[f"{w}/{c}" for w, c in READABLE])
def test_every_read_path(tmp_path: Path, writer: str, case: str) -> None:
    ds = open_golden(tmp_path, writer, case)
    want = expected_samples(ds, case)
    assert len(ds) == len(want)
    check_all(list(ds), want, case, "iter")
    check_all([ds[i] for i in range(len(ds))], want, case, "ds[i]")
    check_all([ds[-1], ds[0]], [want[-1], want[0]], case, "ds[-1], ds[0]")

    async def consume() -> tuple[list[Any], list[Any]]:
        fresh = open_golden(tmp_path / "async", writer, case)
        got = [await fresh.aget(i) for i in range(len(fresh))]
        return got, [x async for x in fresh]

    by_aget, by_async_for = asyncio.run(consume())
    check_all(by_aget, want, case, "aget")
    check_all(by_async_for, want, case, "async for")

    loader = StreamingDataLoader(
        open_golden(tmp_path / "loader", writer, case), batch_size=3, num_workers=2, collate_fn=_keep
    )
    got = [x for batch in loader for x in batch]
    check_unordered(got, want, case, "loader")


def test_corpus_covers_every_layout() -> None:
    # a missing copy would silently shrink the parametrized test above
    assert len(READABLE) == 33
    assert {("0.2.76-pyarrow", "arrow_footer"), ("0.2.76-pyarrow", "nested")} <= set(READABLE)


def test_zstd_batch_without_magic_fails_closed_on_every_path(tmp_path: Path) -> None:
    ds = open_golden(tmp_path, "0.2.76", "zstd_batch")
    match = r"chunk-0-0\.bin is indexed as compression_level='batch' but lacks the LDFZ01 magic"

    async def async_for() -> list[Any]:
        return [x async for x in ds]

    loader = StreamingDataLoader(ds, batch_size=3, num_workers=2, collate_fn=_keep)
    reads: list[Callable[[], Any]] = [
        lambda: list(ds),
        lambda: ds[0],
        lambda: asyncio.run(ds.aget(0)),
        lambda: asyncio.run(async_for()),
        lambda: list(loader),
    ]
    for read in reads:
        with pytest.raises(FormatError, match=match):
            read()


@pytest.mark.s3
@pytest.mark.parametrize("case", ["arrow_footer", "nested"])
def test_arrow_footer_from_s3(s3_server: Any, tmp_path: Path, case: str) -> None:
    """Remote ``ds[i]`` first tries a byte-range read; an Arrow-footer item is empty, so it falls
    back to the whole chunk."""
    from tests.streaming.test_remote import upload

    url = s3_server.new_url(case)
    upload(s3_server, GOLDEN / "0.2.76-pyarrow" / case, url)
    opts = s3_server.storage_options
    want = [cases.expected(case, i) for i in range(cases.N)]
    ds = StreamingDataset(url, cache_dir=str(tmp_path / "c1"), storage_options=opts)
    check_all([ds[i] for i in (0, 17, 39)], [want[0], want[17], want[39]], case, "s3 ds[i]")

    async def consume() -> tuple[Any, list[Any]]:
        fresh = StreamingDataset(url, cache_dir=str(tmp_path / "c2"), storage_options=opts)
        return await fresh.aget(20), [x async for x in fresh]

    one, all_ = asyncio.run(consume())
    check_all([one], [want[20]], case, "s3 aget")
    check_all(all_, want, case, "s3 async for")
    check_all(
        list(StreamingDataset(url, cache_dir=str(tmp_path / "c3"), storage_options=opts)), want, case, "s3"
    )
