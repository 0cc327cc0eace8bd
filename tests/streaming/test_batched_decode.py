"""Batched decoding of plain PyTree chunks: exactly the samples of the per-item path, every time.

The reference is the same dataset read with batching switched off (``_batch_producer`` returning
``(None, None)``), plus the samples as written. Encrypted/compressed-per-sample/framed chunks must
take the per-item path.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aiolit.errors import CorruptChunkError
from aiolit.format import FernetEncryption, SampleCodec
from aiolit.streaming import StreamingDataLoader, StreamingDataset
from aiolit.streaming._run import _BATCH, Need, Run
from aiolit.streaming._source import OpenChunk
from aiolit.streaming.item_loader import PyTreeLoader
from tests.streaming._data import sample

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
FERNET_PASSWORD = "golden-password"


# -- helpers ------------------------------------------------------------------------------------


def same(a: Any, b: Any, path: str = "sample") -> None:
    """Deep equality with exact types (arrays, tensors and images by value, dtype and shape)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif type(a).__module__.startswith("PIL."):
        assert a.mode == b.mode and a.size == b.size, path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)
    else:
        assert a == b, path


def same_all(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        same(a, b, f"sample {i}")


def per_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch batching off for the StreamingDatasets built afterwards."""
    monkeypatch.setattr(StreamingDataset, "_batch_producer", lambda self: (None, None))


class DecodeSpy:
    """Counts SampleCodec.decode_many calls and the items they decoded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.items = 0
        original = SampleCodec.decode_many

        def spy(codec: SampleCodec, data: Any, offsets: Any, indices: Any) -> list[Any]:
            self.calls += 1
            out = original(codec, data, offsets, indices)
            self.items += len(out)
            return out

        monkeypatch.setattr(SampleCodec, "decode_many", spy)


def rich(i: int) -> dict[str, Any]:
    """A sample with every fast-path leaf kind and a Python-path one (tensor)."""
    return {
        "i": i,
        "f": i / 3,
        "b": i % 2 == 0,
        "s": "é" * (i % 5),
        "raw": bytes([i % 256]) * (i % 4),
        "np": np.arange(i % 6, dtype=np.float32).reshape(-1, 1),
        "t": torch.full((2,), i, dtype=torch.int16),
        "nest": [i, (i + 1, str(i))],
    }


def write(path: Path, n: int, make: Callable[[int], Any] = rich, **kwargs: Any) -> list[Any]:
    from aiolit.format import ChunkWriter, merge_shards

    writer = ChunkWriter(str(path), **kwargs)
    items = [make(i) for i in range(n)]
    for item in items:
        writer.add(item)
    writer.done()
    merge_shards(str(path))
    return items


def golden_copy(tmp_path: Path, writer: str, case: str) -> tuple[str, Any]:
    """A private copy of a golden dataset and its encryption (if any)."""
    dst = tmp_path / f"{writer}-{case}"
    shutil.copytree(GOLDEN / writer / case, dst)
    encryption = None
    if case.startswith("fernet"):
        encryption = FernetEncryption.load(str(GOLDEN / writer / f"{case}.key.json"), FERNET_PASSWORD)
    return str(dst), encryption


def golden_pytree() -> list[tuple[str, str]]:
    out = []
    for wdir in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        for cdir in sorted(p for p in wdir.iterdir() if (p / "index.json").exists()):
            config = json.loads((cdir / "index.json").read_text())["config"]
            if config.get("item_loader") != "PyTreeLoader" or cdir.name in ("zstd_batch", "arrow_footer"):
                continue  # zstd_batch is broken on purpose; arrow_footer rows are not items
            out.append((wdir.name, cdir.name))
    return out


GOLDEN_PYTREE = golden_pytree()


def open_any(ds: StreamingDataset, chunk_id: int) -> OpenChunk:
    """Chunk ``chunk_id`` of ``ds``, opened in place or through the cache (compressed files)."""
    from aiolit import _loop

    if ds.source.in_place:
        return ds.source.open_local(chunk_id)
    return _loop.run(ds._aopen(chunk_id))


# -- ChunkView ----------------------------------------------------------------------------------


def test_plain_and_item_offsets(tmp_path: Path) -> None:
    items = write(tmp_path / "d", 50, chunk_size=20)
    ds = StreamingDataset(str(tmp_path / "d"))
    chunk = ds.source.open_local(0)
    view = chunk.view
    plain = view.plain()
    assert plain is not None
    buf, offsets = plain
    assert offsets is view.offsets and len(offsets) == view.num_items + 1 == 21
    for k in range(view.num_items):
        assert bytes(view.item(k)) == bytes(buf[int(offsets[k]) : int(offsets[k + 1])])
        assert bytes(view.item(k - view.num_items)) == bytes(view.item(k))
    for bad in (20, -21, 1000):
        with pytest.raises(IndexError, match=rf"item {bad} out of range for chunk-0-0\.bin with 20 items"):
            view.item(bad)
    assert ds.item_loader.load(chunk, 3)["i"] == items[3]["i"]


@pytest.mark.parametrize(("writer", "case"), GOLDEN_PYTREE, ids=[f"{w}/{c}" for w, c in GOLDEN_PYTREE])
def test_load_many_equals_load_on_golden(tmp_path: Path, writer: str, case: str) -> None:
    path, encryption = golden_copy(tmp_path, writer, case)
    ds = StreamingDataset(path, encryption=encryption)
    config = ds.source.index.config
    per_sample = (config.get("encryption") or {}).get("level") == "sample" or config.get(
        "compression_level"
    ) in ("sample", "batch")
    loader = ds.item_loader
    assert isinstance(loader, PyTreeLoader)
    rng = np.random.default_rng(0)
    for chunk_id in range(len(ds.source.entries)):
        chunk = open_any(ds, chunk_id)
        assert (chunk.view.plain() is None) == per_sample
        n = chunk.view.num_items
        for ks in (list(range(n)), rng.permutation(n).tolist(), [n - 1, 0, 0, n - 1], [], [-1, 2]):
            want = [loader.load(chunk, k) for k in ks]  # 0.2.76-pyarrow: rows from the Arrow footer
            same_all(loader.load_many(chunk, ks), want)


# -- StreamingDataset: batched == per item --------------------------------------------------------


def iterate_both(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[], StreamingDataset]
) -> tuple[list[Any], list[Any]]:
    batched = list(make())
    with monkeypatch.context() as m:
        per_item(m)
        reference = list(make())
    return batched, reference


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 31, 32, 33, 100])
def test_every_sample_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shuffle: bool, chunk_size: int
) -> None:
    items = write(tmp_path / "d", 230, chunk_size=chunk_size)
    spy = DecodeSpy(monkeypatch)
    batched, reference = iterate_both(
        monkeypatch, lambda: StreamingDataset(str(tmp_path / "d"), shuffle=shuffle, seed=3)
    )
    same_all(batched, reference)
    assert spy.items == 230  # every sample decoded in batches, none by the reference
    assert spy.calls == sum(-(-min(chunk_size, 230 - s) // _BATCH) for s in range(0, 230, chunk_size))
    if not shuffle:
        same_all(batched, items)
    else:
        assert sorted(x["i"] for x in batched) == list(range(230))


def test_async_iteration_is_batched_and_equal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = write(tmp_path / "d", 100, chunk_size=40)
    spy = DecodeSpy(monkeypatch)

    async def collect() -> list[Any]:
        return [x async for x in StreamingDataset(str(tmp_path / "d"))]

    same_all(asyncio.run(collect()), items)
    assert spy.items == 100


@pytest.mark.parametrize("as_list", [False, True])
def test_transforms_run_once_per_sample_in_consumer_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_list: bool
) -> None:
    write(tmp_path / "d", 90, chunk_size=50)

    def run() -> tuple[list[Any], list[str]]:
        events: list[str] = []

        def add_one(x: dict[str, Any]) -> dict[str, Any]:
            events.append(f"t{x['i']}")
            return {**x, "plus": x["i"] + 1}

        def tag(x: dict[str, Any]) -> dict[str, Any]:
            return {**x, "tag": "ok"}

        transform: Any = [add_one, tag] if as_list else add_one
        ds = StreamingDataset(str(tmp_path / "d"), shuffle=True, transform=transform)
        out = []
        for x in ds:
            events.append(f"c{x['i']}")
            out.append(x)
        return out, events

    batched, batched_events = run()
    with monkeypatch.context() as m:
        per_item(m)
        reference, reference_events = run()
    same_all(batched, reference)
    # each transform call directly precedes the consumer seeing that sample, as without batching
    assert batched_events == reference_events
    assert all(x["plus"] == x["i"] + 1 for x in batched)
    assert all(("tag" in x) == as_list for x in batched)


def test_subclass_getitem_sees_every_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "d", 70, chunk_size=40)
    seen: list[int] = []

    class Mine(StreamingDataset):
        def __getitem__(self, index: Any) -> Any:
            item = super().__getitem__(index)
            seen.append(item["i"])
            return {"wrapped": item["i"] * 2}

    spy = DecodeSpy(monkeypatch)
    out = list(Mine(str(tmp_path / "d"), shuffle=True))
    assert spy.calls == 0
    assert sorted(seen) == list(range(70))
    assert out == [{"wrapped": i * 2} for i in seen]


def test_loader_subclass_overriding_load_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = write(tmp_path / "d", 40, make=sample, chunk_size=40)

    class Upper(PyTreeLoader):
        def load(self, chunk: OpenChunk, k: int) -> Any:
            item = super().load(chunk, k)
            return {**item, "s": item["s"].upper() + "!"}

    spy = DecodeSpy(monkeypatch)
    out = list(StreamingDataset(str(tmp_path / "d"), item_loader=Upper()))
    assert spy.calls == 0
    assert out == [{**x, "s": x["s"].upper() + "!"} for x in items]


def test_with_subsample_and_start_offsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "d", 200, chunk_size=45)
    batched, reference = iterate_both(
        monkeypatch, lambda: StreamingDataset(str(tmp_path / "d"), shuffle=True, subsample=0.6)
    )
    same_all(batched, reference)


# -- resume ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_dataloader_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, num_workers: int
) -> None:
    items = write(tmp_path / "d", 150, make=sample, chunk_size=70)
    path = str(tmp_path / "d")

    def loader() -> StreamingDataLoader:
        return StreamingDataLoader(
            StreamingDataset(path, shuffle=True, seed=5), batch_size=4, num_workers=num_workers
        )

    def rows(batch: dict[str, Any]) -> list[tuple[int, str]]:
        return list(zip(batch["i"].tolist(), batch["s"], strict=True))

    def epoch_with_states() -> tuple[list[list[tuple[int, str]]], list[dict[str, Any]]]:
        ref = loader()
        full, states = [], []
        for batch in ref:
            full.append(rows(batch))
            states.append(ref.state_dict())
        return full, states

    full, states = epoch_with_states()
    assert sorted(i for b in full for i, _ in b) == list(range(150))
    assert all(s == items[i]["s"] for b in full for i, s in b)
    with monkeypatch.context() as m:
        per_item(m)
        assert epoch_with_states()[0] == full
    for cut in (0, 5, 17, len(full) - 2):
        resumed = loader()
        resumed.load_state_dict(states[cut])
        assert [rows(b) for b in resumed] == full[cut + 1 :], f"cut after batch {cut}"


# -- per-item fallbacks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compression": "zstd"},
        {"encryption": "sample"},
        {"encryption": "chunk"},
    ],
    ids=["zstd-chunk", "fernet-sample", "fernet-chunk"],
)
def test_compressed_and_encrypted_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any]
) -> None:
    enc = None
    if "encryption" in kwargs:
        enc = kwargs["encryption"] = FernetEncryption("pw", level=kwargs["encryption"])
    items = write(tmp_path / "d", 80, chunk_size=35, **kwargs)
    spy = DecodeSpy(monkeypatch)
    batched, reference = iterate_both(
        monkeypatch, lambda: StreamingDataset(str(tmp_path / "d"), encryption=enc, shuffle=True)
    )
    same_all(batched, reference)
    assert sorted(x["i"] for x in batched) == [x["i"] for x in items]
    # whole-chunk zstd/Fernet leave a plain chunk in memory; per-sample Fernet decodes per item
    assert spy.items == (0 if enc is not None and enc.level == "sample" else 80)


@pytest.mark.parametrize(("writer", "case"), GOLDEN_PYTREE, ids=[f"{w}/{c}" for w, c in GOLDEN_PYTREE])
def test_golden_datasets_stream_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str, case: str
) -> None:
    path, encryption = golden_copy(tmp_path, writer, case)
    config = json.loads((Path(path) / "index.json").read_text())["config"]
    per_sample = (config.get("encryption") or {}).get("level") == "sample" or config.get(
        "compression_level"
    ) in ("sample", "batch")
    spy = DecodeSpy(monkeypatch)
    for shuffle in (False, True):
        batched, reference = iterate_both(
            monkeypatch,
            lambda: StreamingDataset(path, encryption=encryption, shuffle=shuffle),  # noqa: B023
        )
        same_all(batched, reference)
        assert len(batched) == 40
    footer = writer.endswith("-pyarrow")  # rows come from the Arrow footer, not decode_many
    assert (spy.calls == 0) == (per_sample or footer)


# -- errors ---------------------------------------------------------------------------------------


def corrupt_item(path: Path, k: int) -> None:
    """Make item ``k`` of the first chunk undecodable (its first leaf size no longer adds up)."""
    chunk = path / "chunk-0-0.bin"
    data = bytearray(chunk.read_bytes())
    start = int(np.frombuffer(data, dtype="<u4", count=1, offset=4 * (k + 1))[0])
    data[start : start + 4] = (2**31).to_bytes(4, "little")
    chunk.write_bytes(bytes(data))


def test_corrupt_item_raises_at_that_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = write(tmp_path / "d", 60, make=sample, chunk_size=60)
    corrupt_item(tmp_path / "d", 37)

    def consume() -> tuple[list[Any], BaseException]:
        got: list[Any] = []
        with pytest.raises(CorruptChunkError) as info:
            for x in StreamingDataset(str(tmp_path / "d")):
                got.append(x)
        return got, info.value

    got, err = consume()
    assert got == items[:37]
    with monkeypatch.context() as m:
        per_item(m)
        ref_got, ref_err = consume()
    assert ref_got == got and str(ref_err) == str(err)


def test_failing_transform_is_not_rerun(tmp_path: Path) -> None:
    write(tmp_path / "d", 50, make=sample, chunk_size=50)
    calls: list[int] = []

    def fail_at_20(x: dict[str, Any]) -> int:
        calls.append(x["i"])
        if x["i"] == 20:
            raise RuntimeError("bad sample 20")
        return int(x["i"])

    got = []
    with pytest.raises(RuntimeError, match="bad sample 20"):
        for x in StreamingDataset(str(tmp_path / "d"), transform=fail_at_20):
            got.append(x)
    assert got == list(range(20)) and calls == list(range(21))


# -- Run ------------------------------------------------------------------------------------------


def drive(run: Run, chunk: Any) -> Iterator[Any]:
    walk = run.walk()
    reply = None
    while True:
        try:
            out = walk.send(reply)
        except StopIteration:
            return
        reply = chunk if type(out) is Need else None
        if type(out) is not Need:
            yield out


def test_run_produce_many_none_and_finish(tmp_path: Path) -> None:
    write(tmp_path / "d", 70, make=sample, chunk_size=70)
    ds = StreamingDataset(str(tmp_path / "d"))
    plan = ds._plan(ds._topology()[0], ds.current_epoch).worker(0)

    def produce(chunk: Any, chunk_id: int, k: int) -> str:
        return f"one-{k}"

    def many(chunk: Any, chunk_id: int, ks: list[int]) -> list[Any] | None:
        return None if ks[0] == _BATCH else [f"raw-{k}" for k in ks]

    def run(start: tuple[int, int]) -> list[Any]:
        r = Run(
            plan,
            start,
            ds.source,
            produce,
            max_cache_bytes=1 << 20,
            depth=1,
            produce_many=many,
            finish=str.upper,
        )
        try:
            return list(drive(r, ds.source.open_local(0)))
        finally:
            r.close_sync()

    # batches [0, 32) [32, 64) [64, 70): the middle one falls back to produce (no finish)
    assert run((0, 0)) == (
        [f"RAW-{k}" for k in range(_BATCH)]
        + [f"one-{k}" for k in range(_BATCH, 2 * _BATCH)]
        + [f"RAW-{k}" for k in range(2 * _BATCH, 70)]
    )
    # from offset 5: batches start at 5, 37, 69
    assert run((0, 5)) == [f"RAW-{k}" for k in range(5, 70)]
