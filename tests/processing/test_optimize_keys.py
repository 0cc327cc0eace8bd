"""optimize(key_fn=...) and keyed lookup ds["key"], in LitData 0.2.76's on-disk layout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aiolit.processing as ld
from aiolit import StreamingDataLoader, StreamingDataset
from aiolit.errors import OptimizeError
from tests.processing import optfns
from tests.processing.readback import read_aiolit

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "litdata-keys"


def _all_paths(ds: StreamingDataset, keys: list[Any]) -> list[list[Any]]:
    """Every key through ds[key], get_by_key, aget and aget_by_key."""

    async def run() -> tuple[list[Any], list[Any]]:
        return [await ds.aget(k) for k in keys if isinstance(k, str)], [await ds.aget_by_key(k) for k in keys]

    via_aget, via_aget_by_key = asyncio.run(run())
    return [
        [ds[k] for k in keys if isinstance(k, str)],
        [ds.get_by_key(k) for k in keys],
        via_aget,
        via_aget_by_key,
    ]


def test_key_fn_roundtrip_and_index_section(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    ld.optimize(optfns.logged_square, list(range(23)), out, chunk_size=4, num_workers=2, key_fn=optfns.key_of,
                start_method="fork", verbose=False)  # fmt: skip
    index = json.loads(Path(out, "index.json").read_text())
    assert index["keys"] == {"version": 1, "num_shards": 1, "sharding": "none"}
    assert (Path(out) / "keys" / "shard-00000.parquet").is_file()
    samples = read_aiolit(out)
    assert samples == [{"i": i, "sq": i * i} for i in range(23)]
    ds = StreamingDataset(f"local:{out}", cache_dir=str(tmp_path / "cache"))
    keys = [f"item-{i}" for i in reversed(range(23))]
    for got in _all_paths(ds, keys):
        assert got == [{"i": i, "sq": i * i} for i in reversed(range(23))]
    assert ds[5] == {"i": 5, "sq": 25}  # ints stay positions
    assert list(ds) == samples  # a keyed dataset is an ordinary dataset otherwise
    loaded = [
        {k: int(v[0]) for k, v in b.items()} for b in StreamingDataLoader(ds, batch_size=1, num_workers=2)
    ]
    assert sorted(loaded, key=lambda s: s["i"]) == samples
    with pytest.raises(KeyError, match="item-99"):
        ds["item-99"]


def test_sidecar_rows_match_litdata_layout(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = str(tmp_path)
    ld.optimize(optfns.logged_square, list(range(11)), out, chunk_size=3, num_workers=2, key_fn=optfns.key_of,
                start_method="fork", verbose=False)  # fmt: skip
    ours = pq.read_table(tmp_path / "keys" / "shard-00000.parquet").to_pydict()
    theirs = pq.read_table(GOLDEN / "str_keys" / "keys" / "shard-00000.parquet").to_pydict()
    # same inputs, chunk size and workers as the LitData golden: the same rows, sorted by key
    assert ours == theirs


@pytest.mark.parametrize(
    ("name", "keys"),
    [("str_keys", [f"item-{i}" for i in range(11)]), ("int_keys", [1000 + 7 * i for i in range(11)])],
)
def test_reads_litdata_keyed_datasets(tmp_path: Path, name: str, keys: list[Any]) -> None:
    ds = StreamingDataset(f"local:{GOLDEN / name}", cache_dir=str(tmp_path / "c"))
    for got in _all_paths(ds, keys):
        if isinstance(keys[0], int) and not got:
            continue  # ds[int] is a position, not a key: int keys go through get_by_key only
        assert len(got) == 11
        for position, sample in enumerate(got):
            assert sample["i"] == position and np.array_equal(sample["v"], np.full(3, position))


def test_litdata_reads_our_keys(tmp_path: Path) -> None:
    litdata = pytest.importorskip("litdata")
    pytest.importorskip("polars", reason="LitData's keyed lookup needs polars")
    out = str(tmp_path)
    ld.optimize(optfns.logged_square, list(range(13)), out, chunk_size=4, num_workers=2, key_fn=optfns.key_of,
                start_method="fork", verbose=False)  # fmt: skip
    ds = litdata.StreamingDataset(out)
    assert [ds[f"item-{i}"] for i in range(13)] == [{"i": i, "sq": i * i} for i in range(13)]


def test_append_and_checkpoint_keep_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path)
    ld.optimize(optfns.logged_square, list(range(7)), out, chunk_size=2, num_workers=2, key_fn=optfns.key_of,
                start_method="fork", verbose=False)  # fmt: skip
    monkeypatch.setenv("AIOLIT_TEST_FAIL_AT", "17")
    with pytest.raises(OptimizeError):
        ld.optimize(optfns.logged_square, list(range(7, 20)), out, chunk_size=2, num_workers=2, mode="append",
                    key_fn=optfns.key_of, use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    monkeypatch.delenv("AIOLIT_TEST_FAIL_AT")
    ld.optimize(optfns.logged_square, list(range(7, 20)), out, chunk_size=2, num_workers=2, mode="append",
                key_fn=optfns.key_of, use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    ds = StreamingDataset(f"local:{out}", cache_dir=str(tmp_path / "c"))
    assert [ds[f"item-{i}"] for i in range(20)] == [{"i": i, "sq": i * i} for i in range(20)]
    assert [ds[i]["i"] for i in range(len(ds))] == list(range(20))


def test_key_errors(tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match="key 'same' for more than one sample"):
        ld.optimize(optfns.logged_square, list(range(5)), str(tmp_path / "dup"), chunk_size=2, num_workers=1,
                    key_fn=optfns.same_key, start_method="fork", verbose=False)  # fmt: skip
    assert not (tmp_path / "dup" / "index.json").exists()
    with pytest.raises(OptimizeError, match="key_fn must return a str or an int"):
        ld.optimize(optfns.logged_square, list(range(5)), str(tmp_path / "bad"), chunk_size=2, num_workers=1,
                    key_fn=optfns.float_key, start_method="fork", verbose=False)  # fmt: skip
    with pytest.raises(ValueError, match="TokensLoader"):
        from aiolit.streaming.item_loader import TokensLoader

        ld.optimize(optfns.logged_square, [1], str(tmp_path / "t"), chunk_size=2, item_loader=TokensLoader(),
                    key_fn=optfns.key_of, verbose=False)  # fmt: skip
    plain = str(tmp_path / "plain")
    ld.optimize(optfns.logged_square, list(range(3)), plain, chunk_size=2, num_workers=1, start_method="fork",
                verbose=False)  # fmt: skip
    with pytest.raises(KeyError, match="key_fn"):
        StreamingDataset(f"local:{plain}", cache_dir=str(tmp_path / "c"))["item-1"]


@pytest.mark.s3
def test_keyed_lookup_on_s3(s3_server: Any, tmp_path: Path) -> None:
    options = s3_server.storage_options
    url = s3_server.new_url("keyed")
    ld.optimize(optfns.logged_square, list(range(9)), url, chunk_size=2, num_workers=2, key_fn=optfns.key_of,
                start_method="fork", storage_options=options, verbose=False)  # fmt: skip
    ds = StreamingDataset(url, storage_options=options, cache_dir=str(tmp_path / "cache"))
    for got in _all_paths(ds, [f"item-{i}" for i in range(9)]):
        assert got == [{"i": i, "sq": i * i} for i in range(9)]


def test_append_with_key_fn_onto_an_unkeyed_dataset_fails_first(tmp_path: Path) -> None:
    out = str(tmp_path)
    ld.optimize(optfns.logged_square, list(range(4)), out, chunk_size=2, num_workers=1, start_method="fork",
                verbose=False)  # fmt: skip
    log = tmp_path / "calls.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIOLIT_TEST_LOG", str(log))
        with pytest.raises(OptimizeError, match=r"no keys/shard-00000\.parquet"):
            ld.optimize(optfns.logged_square, list(range(4, 8)), out, chunk_size=2, num_workers=1, mode="append",
                        key_fn=optfns.key_of, start_method="fork", verbose=False)  # fmt: skip
    assert not log.exists()  # refused before fn ran
    assert [s["i"] for s in read_aiolit(out)] == [0, 1, 2, 3]


def test_keys_of_an_ordered_generator_input(tmp_path: Path) -> None:
    # a generator is streamed to the workers in segments and the chunks are put back in input
    # order at the end: the keys must follow the same order
    out = str(tmp_path)
    ld.optimize(optfns.logged_square, (i for i in range(600)), out, chunk_size=50, num_workers=2,
                key_fn=optfns.key_of, start_method="fork", verbose=False)  # fmt: skip
    assert [s["i"] for s in read_aiolit(out)] == list(range(600))
    ds = StreamingDataset(f"local:{out}", cache_dir=str(tmp_path / "c"))
    assert [ds[f"item-{i}"]["i"] for i in range(0, 600, 7)] == list(range(0, 600, 7))
