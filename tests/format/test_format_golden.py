"""Every golden dataset written by real LitData releases, read through aiolit.format only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _format_helpers import (
    GOLDEN,
    assert_same,
    cases,
    fernet_key_path,
    golden_datasets,
    read_all,
    read_index,
)

from aiolit.errors import EncryptionError, FormatError
from aiolit.format import FernetEncryption, SampleCodec, TokenBlocks, open_chunk, token_dtype

DATASETS = golden_datasets()
PYTREE = [
    (w, c)
    for w, c in DATASETS
    if cases.CASES[c]["loader"] == "pytree" and not (w == "0.2.76" and c == "zstd_batch")
]
TOKENS = [(w, c) for w, c in DATASETS if cases.CASES[c]["loader"] == "tokens"]


def test_corpus_is_complete() -> None:
    # 14 + 18 + 2 datasets (README); a missing copy would silently shrink the parametrized tests
    assert len(DATASETS) == 34
    assert len(PYTREE) == 27 and len(TOKENS) == 4


@pytest.mark.parametrize(("writer", "case"), DATASETS, ids=[f"{w}/{c}" for w, c in DATASETS])
def test_index_round_trips_byte_identical(writer: str, case: str) -> None:
    raw = (GOLDEN / writer / case / "index.json").read_bytes()
    index = read_index(GOLDEN / writer / case)
    assert index.to_json() == raw
    assert index.num_samples == sum(c["chunk_size"] for c in json.loads(raw)["chunks"])


@pytest.mark.parametrize(("writer", "case"), PYTREE, ids=[f"{w}/{c}" for w, c in PYTREE])
def test_pytree_dataset_values(writer: str, case: str) -> None:
    encryption = None
    if case.startswith("fernet"):
        encryption = FernetEncryption.load(str(fernet_key_path(writer, case)), cases.FERNET_PASSWORD)
    samples = read_all(GOLDEN / writer / case, encryption=encryption)
    assert len(samples) == cases.N
    tolerance = cases.JPEG_TOLERANCE if case == "dict_jpeg" else None
    for i, sample in enumerate(samples):
        assert_same(sample, cases.expected(case, i), path=f"{writer}/{case}[{i}]", jpeg_tolerance=tolerance)


def test_zstd_batch_without_magic_fails_closed() -> None:
    d = GOLDEN / "0.2.76" / "zstd_batch"
    index = read_index(d)
    entry = index.chunks[0]
    with pytest.raises(
        FormatError, match=r"chunk-0-0\.bin is indexed as compression_level='batch' but lacks"
    ):
        open_chunk((d / entry.filename).read_bytes(), entry, index.config)


@pytest.mark.parametrize("case", ["fernet_sample", "fernet_chunk"])
def test_fernet_without_or_with_wrong_key(case: str) -> None:
    d = GOLDEN / "0.2.76" / case
    index = read_index(d)
    entry = index.chunks[0]
    data = (d / entry.filename).read_bytes()
    with pytest.raises(EncryptionError, match=r"chunk-0-0\.bin is encrypted \(fernet, level '" + case[7:]):
        open_chunk(data, entry, index.config)
    wrong = FernetEncryption("not-the-password", case[7:])  # type: ignore[arg-type]
    with pytest.raises(EncryptionError, match="Fernet decryption failed: wrong password"):
        open_chunk(data, entry, index.config, wrong).item(0)
    other_level = FernetEncryption("x", "chunk" if case == "fernet_sample" else "sample")
    with pytest.raises(EncryptionError, match="but the given encryption is"):
        open_chunk(data, entry, index.config, other_level)


def test_fernet_key_file_matches_manifest_key() -> None:
    enc = FernetEncryption.load(str(fernet_key_path("0.2.45", "fernet_chunk")), cases.FERNET_PASSWORD)
    manifest = json.loads((GOLDEN / "manifest.json").read_text())
    assert enc.key.decode() == manifest["datasets"]["0.2.45/fernet_chunk"]["fernet_key"]
    assert enc.level == "chunk"


@pytest.mark.parametrize(("writer", "case"), TOKENS, ids=[f"{w}/{c}" for w, c in TOKENS])
@pytest.mark.parametrize("block_size", [1, 7, 16, 300])
def test_token_blocks(writer: str, case: str, block_size: int) -> None:
    d = GOLDEN / writer / case
    index = read_index(d)
    assert index.item_loader == "TokensLoader"
    dtype = token_dtype(index.config["data_format"][0])
    seq_fn = cases.token_seq if case == "tokens_numpy" else cases.token_seq_int32
    counts = [c.chunk_size for c in index.chunks]
    # the writer's filling rule reproduces the index
    assert [len(c) for c in cases.token_chunks([len(seq_fn(i)) for i in range(cases.N)])] == counts
    expected = cases.token_blocks(counts, block_size, seq_fn)
    streams = [open_chunk((d / e.filename).read_bytes(), e, index.config).tokens(dtype) for e in index.chunks]
    blocks = TokenBlocks([e.dim or 0 for e in index.chunks], block_size)
    assert blocks.num_blocks == len(expected)
    for i, want in enumerate(expected):
        chunk, offset = blocks.locate(i)
        got = streams[chunk][offset : offset + block_size]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, err_msg=f"block {i}")
    if block_size == 16:
        assert blocks.num_blocks == 170


@pytest.mark.parametrize(("writer", "case"), TOKENS, ids=[f"{w}/{c}" for w, c in TOKENS])
def test_token_items_decode_as_sequences(writer: str, case: str) -> None:
    d = GOLDEN / writer / case
    index = read_index(d)
    codec_format = index.config["data_format"][0]
    seq_fn = cases.token_seq if case == "tokens_numpy" else cases.token_seq_int32
    i = 0
    for e in index.chunks:
        view = open_chunk((d / e.filename).read_bytes(), e, index.config)
        for k in range(view.num_items):
            # a tokens item has no size header: it is the leaf itself
            leaf = SampleCodec([codec_format], None)._serializers[0].deserialize(view.item(k))
            arr = leaf if isinstance(leaf, np.ndarray) else leaf.numpy()
            np.testing.assert_array_equal(arr, seq_fn(i))
            i += 1
    assert i == cases.N


@pytest.mark.parametrize("writer", ["0.2.45", "0.2.76"])
def test_parquet_index(writer: str) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    d = GOLDEN / writer / "parquet"
    index = read_index(d)
    assert index.item_loader == "ParquetLoader"
    assert index.config["data_spec"] is None
    rows = [r for e in index.chunks for r in pq.read_table(d / e.filename).to_pylist()]
    assert rows == [r for e in index.chunks for r in cases.parquet_file_rows(e.filename)]
    assert [e.chunk_size for e in index.chunks] == [20, 20]


@pytest.mark.parametrize(
    ("writer", "case"),
    [("0.2.45", c) for c in ("ints", "dict_pil", "dict_jpeg", "scalars", "numpy_nd", "nested")]
    + [("0.2.76", "tensor_nd")],
)
def test_written_data_spec_and_format_match_litdata(writer: str, case: str) -> None:
    index = read_index(GOLDEN / writer / case)
    codec = SampleCodec.for_sample(cases.build_sample(case, 0))
    assert codec.data_format == index.config["data_format"]
    assert codec.data_spec == index.config["data_spec"]
