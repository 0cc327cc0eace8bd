"""ChunkWriter -> open_chunk round trips, filling rule, safety errors (aiolit only)."""

from __future__ import annotations

import collections
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _format_helpers import GOLDEN, assert_same, cases, read_all, read_index

from aiolit.errors import CorruptChunkError, FormatError, PickleNotAllowedError
from aiolit.format import ChunkEntry, ChunkWriter, FernetEncryption, Index, SampleCodec, open_chunk
from aiolit.format._json_leaf import decode_json_leaf

SALT = b"aiolit-test-salt"  # fixed salt: the 480k-round key derivation is cached across tests


def _write(tmp: Path, samples: list[Any], **kwargs: Any) -> Index:
    kwargs.setdefault("chunk_size", 4)
    writer = ChunkWriter(str(tmp), **kwargs)
    for s in samples:
        writer.add(s)
    writer.done()
    return Index.from_json((tmp / "0.index.json").read_bytes())


def _scalars(i: int) -> dict[str, Any]:
    return {"i": i, "f": i / 7, "s": f"é{i}", "b": bytes([i]) * i, "flag": i % 3 == 0, "neg": -(2**62) + i}


@pytest.mark.parametrize("compression", [None, "zstd", "zstd:9"])
@pytest.mark.parametrize("level", [None, "sample", "chunk"])
def test_round_trip_compression_encryption(
    tmp_path: Path, compression: str | None, level: str | None
) -> None:
    enc = None if level is None else FernetEncryption("pw", level, salt=SALT)  # type: ignore[arg-type]
    samples = [_scalars(i) for i in range(10)]
    index = _write(tmp_path, samples, compression=compression, encryption=enc)
    suffix = f".{compression}.bin" if compression else ".bin"
    assert [c.filename for c in index.chunks] == [f"chunk-0-{i}{suffix}" for i in range(3)]
    assert [c.chunk_size for c in index.chunks] == [4, 4, 2]
    assert index.config["encryption"] == (None if enc is None else {"algorithm": "fernet", "level": level})
    assert index.config["compression"] == compression
    (tmp_path / "index.json").write_bytes(index.to_json())
    got = read_all(tmp_path, encryption=enc)
    for i, sample in enumerate(got):
        assert_same(sample, samples[i], path=f"[{i}]")


def test_round_trip_many_leaf_kinds(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from PIL import Image

    def sample(i: int) -> Any:
        return (
            np.arange(6, dtype=np.int16).reshape(2, 3) * i,
            np.arange(i + 1, dtype=np.float64),
            torch.full((2, 2), float(i), dtype=torch.bfloat16),
            torch.tensor(3.5 + i),
            torch.arange(i + 1, dtype=torch.int64),
            Image.fromarray(np.full((2, 3, 3), i, np.uint8)),
            collections.OrderedDict(a=[i, {"b": None}]),
        )

    samples = [sample(i) for i in range(5)]
    index = _write(tmp_path, samples, chunk_size=2)
    assert index.config["data_format"] == [
        "numpy", "no_header_numpy:10", "tensor", "tensor", "no_header_tensor:18", "pil", "int", "pickle",
    ]  # fmt: skip
    (tmp_path / "index.json").write_bytes(index.to_json())
    with pytest.raises(PickleNotAllowedError, match=r"field 7 \(data_format\[7\] = 'pickle'\) is pickled"):
        read_all(tmp_path)
    got = read_all(tmp_path, allow_pickle=True)
    for i, s in enumerate(got):
        np.testing.assert_array_equal(s[0], samples[i][0])
        np.testing.assert_array_equal(s[1], samples[i][1])
        assert s[2].dtype == torch.bfloat16 and torch.equal(s[2], samples[i][2])
        assert s[3].shape == () and s[3].item() == 3.5 + i
        assert torch.equal(s[4], samples[i][4])
        assert s[5].mode == "RGB" and np.array_equal(np.asarray(s[5]), np.asarray(samples[i][5]))
        assert s[6] == samples[i][6] and type(s[6]) is collections.OrderedDict


def test_tensor_header_is_big_endian_and_legacy_is_read() -> None:
    torch = pytest.importorskip("torch")
    codec = SampleCodec(["tensor"], None)
    payload = codec.encode(torch.tensor(3.5))
    assert payload[4:] == bytes.fromhex("00000001 00000000 00006040")
    legacy = bytes.fromhex("0c000000") + bytes.fromhex("01000000 00000000 00006040")
    assert codec.decode(legacy).item() == 3.5


def test_chunk_bytes_filling_rule(tmp_path: Path) -> None:
    # int items are 12 bytes (4-byte size + 8): chunk_bytes=24 gives 2,2,2,1 (LITDATA.md §1.9)
    index = _write(tmp_path, list(range(7)), chunk_size=None, chunk_bytes=24)
    assert [(c.chunk_size, c.chunk_bytes) for c in index.chunks] == [(2, 40), (2, 40), (2, 40), (1, 24)]
    assert index.config["chunk_bytes"] == 24 and index.config["chunk_size"] is None


def test_tokens_filling_rule_matches_litdata(tmp_path: Path) -> None:
    seqs = [cases.token_seq(i) for i in range(cases.N)]
    index = _write(tmp_path, seqs, chunk_size=cases.TOKENS_CHUNK_SIZE, item_loader="TokensLoader")
    golden = read_index(GOLDEN / "0.2.76" / "tokens_numpy")
    # same entries as LitData's, plus the checksum aiolit adds (LitData ignores it)
    ours = [c.to_dict() for c in index.chunks]
    assert all(d.pop("checksum").startswith("sha256:") for d in ours)
    assert ours == [c.to_dict() for c in golden.chunks]
    assert {k: index.config[k] for k in ("data_format", "data_spec", "item_loader", "chunk_size")} == {
        k: golden.config[k] for k in ("data_format", "data_spec", "item_loader", "chunk_size")
    }
    for entry in index.chunks:  # byte-identical chunks to LitData's
        assert (tmp_path / entry.filename).read_bytes() == (
            GOLDEN / "0.2.76/tokens_numpy" / entry.filename
        ).read_bytes()
    with pytest.raises(FormatError, match="TokensLoader samples must be 1-D numpy arrays or torch tensors"):
        ChunkWriter(str(tmp_path / "x"), chunk_size=3, item_loader="TokensLoader").add(np.zeros((2, 2)))


@pytest.mark.parametrize("case", ["ints", "dict_pil", "scalars", "numpy_nd", "nested", "multiworker"])
def test_written_chunks_identical_to_litdata_0_2_45(tmp_path: Path, case: str) -> None:
    golden = read_index(GOLDEN / "0.2.45" / case)
    ranks = [int(c.filename.split("-")[1]) for c in golden.chunks]
    per_rank = collections.Counter(ranks)
    start = 0
    for rank in sorted(per_rank):
        writer = ChunkWriter(str(tmp_path), rank=rank, chunk_size=golden.config["chunk_size"])
        n = sum(c.chunk_size for c in golden.chunks if c.filename.startswith(f"chunk-{rank}-"))
        for i in range(start, start + n):
            writer.add(cases.build_sample(case, i))
        writer.done()
        start += n
    for entry in golden.chunks:
        assert (tmp_path / entry.filename).read_bytes() == (
            GOLDEN / "0.2.45" / case / entry.filename
        ).read_bytes()


def test_later_sample_with_other_types_is_refused(tmp_path: Path) -> None:
    writer = ChunkWriter(str(tmp_path), chunk_size=4)
    writer.add({"a": 1, "b": "x"})
    with pytest.raises(
        FormatError, match=r"field 0 is 'int' \(set by the first sample\) but this sample has a float"
    ):
        writer.add({"a": 1.5, "b": "y"})
    with pytest.raises(FormatError, match="differs from the dataset's data_spec"):
        writer.add({"a": 1})


def test_writer_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of chunk_size and chunk_bytes"):
        ChunkWriter(str(tmp_path))
    with pytest.raises(FormatError, match="unsupported compression 'gzip'"):
        ChunkWriter(str(tmp_path), chunk_size=1, compression="gzip")
    assert ChunkWriter(str(tmp_path), chunk_bytes="64MB").chunk_bytes == 64_000_000


def _ints_chunk() -> tuple[bytes, ChunkEntry, dict[str, Any]]:
    d = GOLDEN / "0.2.76" / "ints"
    index = read_index(d)
    return (d / index.chunks[0].filename).read_bytes(), index.chunks[0], index.config


def test_truncated_and_garbage_chunks() -> None:
    data, entry, config = _ints_chunk()
    with pytest.raises(CorruptChunkError, match=r"chunk-0-0\.bin is truncated: 100 bytes, the index says"):
        open_chunk(data[:100], entry, config)
    no_size = ChunkEntry(entry.filename, entry.chunk_size, 0)
    with pytest.raises(CorruptChunkError, match="chunk truncated: offsets"):
        open_chunk(data[:100], no_size, config)
    with pytest.raises(CorruptChunkError, match="chunk header says"):
        open_chunk(b"\xff" * 64, no_size, config)
    bad = bytearray(data)
    bad[8:12] = struct.pack("<I", 10**6)
    with pytest.raises(CorruptChunkError, match="offsets decrease at index 1"):
        open_chunk(bytes(bad), entry, config)
    wrong_count = ChunkEntry(entry.filename, 3, entry.chunk_bytes)
    with pytest.raises(CorruptChunkError, match="chunk header says 16 items but the index expects 3"):
        open_chunk(data, wrong_count, config)


def test_corrupt_item_payload() -> None:
    data, entry, config = _ints_chunk()
    codec = SampleCodec(config["data_format"], config["data_spec"])
    view = open_chunk(data, entry, config)
    with pytest.raises(CorruptChunkError, match="do not match the item size 23"):
        codec.decode(bytes(view.item(0))[:-1])
    with pytest.raises(IndexError, match="item 16 out of range"):
        view.item(16)


def test_corrupt_compressed_and_framed() -> None:
    d = GOLDEN / "0.2.45" / "zstd"
    index = read_index(d)
    entry = index.chunks[0]
    data = (d / entry.filename).read_bytes()
    with pytest.raises(CorruptChunkError, match=r"chunk-0-0\.zstd\.bin is not valid zstd data"):
        open_chunk(data[:20], entry, index.config)
    d = GOLDEN / "0.2.76" / "zstd_batch_k5"
    index = read_index(d)
    entry = index.chunks[0]
    data = bytearray((d / entry.filename).read_bytes())
    with pytest.raises(CorruptChunkError, match="is truncated"):
        open_chunk(bytes(data[:60]), entry, index.config)
    data[-10:] = b"\x00" * 10
    view = open_chunk(bytes(data), entry, index.config)
    with pytest.raises(CorruptChunkError, match=r"frame 3 of chunk-0-0\.bin is not valid zstd data"):
        view.item(15)


def test_json_leaf_tags() -> None:
    u32, i64, f64 = (
        (lambda v: struct.pack("<I", v)),
        (lambda v: struct.pack("<q", v)),
        (lambda v: struct.pack("<d", v)),
    )
    s = lambda t: u32(len(t.encode())) + t.encode()  # noqa: E731
    assert decode_json_leaf(b"\x02" + u32(3) + i64(0) + i64(1) + i64(-2)) == [0, 1, -2]
    assert decode_json_leaf(b"\x01" + u32(2) + s("a") + s("bé")) == ["a", "bé"]
    assert decode_json_leaf(b"\x03" + u32(1) + f64(0.5)) == [0.5]
    assert decode_json_leaf(b"\x04" + u32(2) + b"\x01\x00") == [True, False]
    nested = b"\x05" + u32(2) + s("x") + b"\x08" + i64(7) + s("y") + b"\x0b"
    assert decode_json_leaf(nested) == {"x": 7, "y": None}
    records = b"\x06" + u32(2) + u32(2) + s("k") + s("v") + b"\x11" + s("a") + b"\x12" + i64(1)
    records += b"\x10" + b"\x14\x01"
    assert decode_json_leaf(records) == [{"k": "a", "v": 1}, {"k": None, "v": True}]
    assert decode_json_leaf(b"\x00" + u32(8) + b'{"a": 1}') == {"a": 1}
    assert decode_json_leaf(json.dumps([1, "x"]).encode()) == [1, "x"]
    with pytest.raises(CorruptChunkError, match="json leaf truncated"):
        decode_json_leaf(b"\x02" + u32(3) + i64(0))
    with pytest.raises(CorruptChunkError, match="unknown tag 15"):
        decode_json_leaf(b"\x0f")


def test_unknown_serializer_and_user_override() -> None:
    with pytest.raises(FormatError, match="unknown serializer 'weird:1' for field 0"):
        SampleCodec(["weird:1"], None)

    class Upper:
        def serialize(self, item: Any) -> tuple[bytes, str | None]:
            return item.upper().encode(), "shout"

        def deserialize(self, data: bytes) -> Any:
            return bytes(data).decode().lower()

        def can_serialize(self, item: Any) -> bool:
            return isinstance(item, str)

    codec = SampleCodec.for_sample({"a": "hi"}, serializers={"shout": Upper()})
    assert codec.data_format == ["shout"]
    assert codec.decode(codec.encode({"a": "hey"})) == {"a": "hey"}


def test_entries_carry_a_checksum_of_the_plain_chunk(tmp_path: Path) -> None:
    import hashlib

    import zstandard

    index = _write(tmp_path, list(range(40)), chunk_size=16, compression="zstd")
    for entry in index.chunks:
        algo, _, digest = entry.extra["checksum"].partition(":")
        plain = zstandard.ZstdDecompressor().decompress((tmp_path / entry.filename).read_bytes())
        assert algo == "sha256" and hashlib.sha256(plain).hexdigest() == digest
        assert len(plain) == entry.chunk_bytes
    off = _write(tmp_path / "off", list(range(4)), chunk_size=16, checksum=None)
    assert all("checksum" not in c.extra for c in off.chunks)
