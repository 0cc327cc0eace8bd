"""Unit tests for the Cython hot paths in :mod:`aiolit._fast`."""

from __future__ import annotations

import mmap
import re
import struct
from collections import Counter
from math import factorial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from aiolit._fast import (
    gather_token_blocks,
    parse_header,
    parse_offsets,
    permutation,
    permute_within,
    token_blocks_locate,
)
from aiolit.errors import CorruptChunkError


def make_chunk(payloads: list[bytes], trailer: bytes = b"") -> bytes:
    """A classic LitData chunk: u32 N | u32 offsets[N+1] | payloads (| trailer)."""
    n = len(payloads)
    offsets = [4 * (n + 2)]
    for p in payloads:
        offsets.append(offsets[-1] + len(p))
    return struct.pack(f"<{n + 2}I", n, *offsets) + b"".join(payloads) + trailer


# --------------------------------------------------------------------------------------- header


# LITDATA.md §1.7 case (ii): the verified bytes of chunk-0-0.bin (two int32 token sequences).
LITDATA_TOKENS_CHUNK = (
    bytes.fromhex("02000000100000002400000" + "03c000000")
    + np.concatenate([np.arange(0, 5, dtype="<i4"), np.arange(100, 106, dtype="<i4")]).tobytes()
)


def test_parse_header_litdata_hexdump() -> None:
    offsets = parse_header(LITDATA_TOKENS_CHUNK, expected_items=2)
    assert offsets.dtype == np.uint32
    assert offsets.tolist() == [16, 36, 60]
    assert len(LITDATA_TOKENS_CHUNK) == 60
    tokens = np.frombuffer(LITDATA_TOKENS_CHUNK[offsets[1] : offsets[2]], dtype="<i4")
    assert tokens.tolist() == [100, 101, 102, 103, 104, 105]


@pytest.mark.parametrize(
    "make_buf",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: np.frombuffer(b, dtype=np.uint8).copy(),
        lambda b: memoryview(b"\x00" + b)[1:],  # unaligned start
    ],
    ids=["bytes", "bytearray", "memoryview", "numpy", "unaligned"],
)
def test_parse_header_buffer_kinds(make_buf: object) -> None:
    chunk = make_chunk([b"a", b"", b"bcd", b"efgh"])
    buf = make_buf(chunk)  # type: ignore[operator]
    offsets = parse_header(buf)
    assert offsets.tolist() == [24, 25, 25, 28, 32]
    assert len(chunk) == 32


def test_parse_header_is_zero_copy_and_keeps_writeability() -> None:
    chunk = bytearray(make_chunk([b"xy", b"z"]))
    offsets = parse_header(chunk)
    assert offsets.flags.writeable
    assert np.shares_memory(offsets, np.frombuffer(chunk, dtype=np.uint8))
    struct.pack_into("<I", chunk, 8, 21)  # the view sees changes made through the source
    assert offsets[1] == 21
    with pytest.raises(BufferError):  # the export pins the bytearray: no resize under the view
        chunk.extend(b"!")

    ro = parse_header(bytes(make_chunk([b"xy"])))
    assert not ro.flags.writeable
    with pytest.raises(ValueError):
        ro[0] = 1


def test_parse_header_mmap_pins_file(tmp_path: Path) -> None:
    path = tmp_path / "chunk-0-0.bin"
    path.write_bytes(make_chunk([b"hello", b"world!"]))
    with path.open("rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    offsets = parse_header(mm, expected_items=2)
    assert offsets.tolist() == [16, 21, 27]
    assert not offsets.flags.writeable
    with pytest.raises(BufferError):  # cannot unmap while the offsets view exists
        mm.close()
    del offsets
    mm.close()


def test_parse_header_empty_chunk_and_arrow_footer() -> None:
    assert parse_header(make_chunk([])).tolist() == [8]
    # Arrow-footer chunks: all offsets equal the header size, then bytes past offsets[N].
    footer_chunk = struct.pack("<5I", 3, 20, 20, 20, 20) + b"ARROW1....LDARW01\x00"
    assert parse_header(footer_chunk, expected_items=3).tolist() == [20, 20, 20, 20]


@pytest.mark.parametrize(
    ("buf", "expected", "message"),
    [
        (b"", -1, "chunk is 0 bytes, too short for its 4-byte item count"),
        (b"\x01\x00\x00", -1, "chunk is 3 bytes"),
        (struct.pack("<I", 5), -1, "chunk header for 5 items needs 28 bytes but the chunk has only 4"),
        (make_chunk([b"ab"]), 2, "chunk header says 1 items but the index expects 2"),
        (b"LDFZ01\x00\x00" + bytes(64), 3, "chunk header says 1514554444 items but the index expects 3"),
        (
            struct.pack("<3I", 1, 16, 14) + b"ab",
            -1,
            "offsets[0] = 16 but the header of 1 items ends at byte 12",
        ),
        (
            struct.pack("<5I", 3, 20, 24, 22, 26) + bytes(6),
            -1,
            "offsets decrease at index 1: offsets[1] = 24 > offsets[2] = 22",
        ),
        (
            make_chunk([b"abc", b"defg"])[:-1],
            -1,
            "chunk truncated: offsets[2] = 23 (end of the last item) but the chunk has only 22 bytes",
        ),
    ],
)
def test_parse_header_errors(buf: bytes, expected: int, message: str) -> None:
    with pytest.raises(CorruptChunkError, match=re.escape(message)):
        parse_header(buf, expected_items=expected)


def test_parse_header_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse_header(b"\x07")


def test_parse_header_rejects_non_buffers() -> None:
    with pytest.raises(TypeError):
        parse_header("not bytes")  # type: ignore[arg-type]
    with pytest.raises((BufferError, ValueError)):  # non-contiguous
        parse_header(np.zeros(64, dtype=np.uint8)[::2])


def test_parse_offsets_relative_table() -> None:
    # LDFZ01-style: 24-byte prefix, then offsets relative to the uncompressed payloads.
    buf = bytes(24) + struct.pack("<4I", 0, 40, 80, 120) + bytes(8)
    offsets = parse_offsets(buf, 24, 3, first=0, limit=120)
    assert offsets.tolist() == [0, 40, 80, 120]
    assert parse_offsets(buf, 24, 0).tolist() == [0]
    with pytest.raises(CorruptChunkError, match=r"offsets\[3\] = 120 exceeds the limit of 119 bytes"):
        parse_offsets(buf, 24, 3, limit=119)
    with pytest.raises(CorruptChunkError, match=r"offsets\[0\] = 0 but it must be 4"):
        parse_offsets(buf, 24, 3, first=4)
    with pytest.raises(CorruptChunkError, match="ends at byte 52 but the buffer has only 48 bytes"):
        parse_offsets(buf, 24, 6)
    with pytest.raises(CorruptChunkError, match="but the buffer has only 48 bytes"):
        parse_offsets(buf, 24, 2**62)
    with pytest.raises(ValueError, match="must be >= 0"):
        parse_offsets(buf, -1, 3)


# --------------------------------------------------------------------------------------- tokens


def test_token_blocks_locate_binary_search() -> None:
    # chunks with 3, 0 (empty), 2, 4 blocks
    cum = np.array([0, 3, 3, 5, 9], dtype=np.int64)
    ids = np.array([0, 2, 3, 4, 5, 8, 1], dtype=np.int64)
    chunks, pos = token_blocks_locate(ids, cum)
    assert chunks.tolist() == [0, 0, 2, 2, 3, 3, 0]
    assert pos.tolist() == [0, 2, 0, 1, 0, 3, 1]
    assert chunks.dtype == np.int64 and pos.dtype == np.int64
    _, token_offsets = token_blocks_locate(ids, cum, block_size=2048)
    assert token_offsets.tolist() == [0, 4096, 0, 2048, 0, 6144, 2048]


def test_token_blocks_locate_matches_searchsorted() -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 5, size=300)
    cum = np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
    ids = rng.integers(0, cum[-1], size=5000)
    chunks, pos = token_blocks_locate(ids, cum)
    want = np.searchsorted(cum, ids, side="right") - 1
    np.testing.assert_array_equal(chunks, want)
    np.testing.assert_array_equal(pos, ids - cum[want])


def test_token_blocks_locate_accepts_lists_and_empty() -> None:
    chunks, pos = token_blocks_locate([4], [0, 2, 6])
    assert (chunks.tolist(), pos.tolist()) == ([1], [2])
    chunks, pos = token_blocks_locate(np.array([], dtype=np.int64), [0])
    assert chunks.shape == (0,) and pos.shape == (0,)


@pytest.mark.parametrize(
    ("ids", "cum", "exc", "message"),
    [
        ([5], [0, 2, 5], IndexError, "block_ids[0] = 5 is out of range [0, 5)"),
        ([0, -1], [0, 2, 5], IndexError, "block_ids[1] = -1 is out of range [0, 5)"),
        ([0], [1, 2], ValueError, "must be [0, b0, b0+b1, ...]"),
        ([0], [], ValueError, "must be [0, b0, b0+b1, ...]"),
        ([0], [[0, 4]], ValueError, "expected a 1-D array, got shape (1, 2)"),
        ([0.5], [0, 4], TypeError, "expected an integer array, got dtype float64"),
    ],
)
def test_token_blocks_locate_errors(ids: list[float], cum: list[int], exc: type, message: str) -> None:
    with pytest.raises(exc, match=re.escape(message)):
        token_blocks_locate(ids, cum)


def test_gather_token_blocks_from_chunk_bytes() -> None:
    # The real use: token views straight into a chunk buffer (LITDATA.md §1.7, B=4).
    offsets = parse_header(LITDATA_TOKENS_CHUNK)
    tokens = np.frombuffer(LITDATA_TOKENS_CHUNK, dtype="<i4", offset=int(offsets[0]))
    out = np.empty((2, 4), dtype="<i4")
    gather_token_blocks(tokens, np.array([1, 0]), 0, 2, 4, out)
    assert out.tolist() == [[4, 100, 101, 102], [0, 1, 2, 3]]


def test_gather_token_blocks_empty_batch_and_read_only_out() -> None:
    tokens = np.arange(16, dtype=np.uint16)
    gather_token_blocks(tokens, np.array([], dtype=np.int64), 0, 0, 8, np.empty((0, 8), dtype=np.uint16))
    out = np.empty((1, 2), dtype=np.uint16)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        gather_token_blocks(tokens, np.array([0]), 0, 1, 2, out)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_gather_token_blocks(dtype: npt.DTypeLike, as_tensor: bool) -> None:
    import torch

    tokens = np.arange(43, dtype=dtype)  # 10 blocks of 4 and a tail of 3
    order = np.array([9, 0, 4, 4, 7], dtype=np.int64)
    out = np.full((5, 4), 7, dtype=dtype)
    target = torch.from_numpy(out) if as_tensor else out
    gather_token_blocks(tokens, order, 1, 3, 4, target, 2)  # blocks 0, 4, 4 into rows 2-4
    want = np.full((5, 4), 7, dtype=dtype)
    want[2:5] = [tokens[k * 4 : k * 4 + 4] for k in (0, 4, 4)]
    np.testing.assert_array_equal(out, want)
    gather_token_blocks(tokens, order, 0, 2, 4, target)  # blocks 9 (the last whole one), 0
    np.testing.assert_array_equal(out[:2], [tokens[36:40], tokens[0:4]])
    gather_token_blocks(tokens, order, 5, 0, 4, target, 5)  # nothing


@pytest.mark.parametrize(
    ("args", "exc", "message"),
    [
        ((np.array([10]), 0, 1, 4, np.empty((1, 4), np.int32)), IndexError, "block 10 (order[0]) is outside"),
        ((np.array([-1]), 0, 1, 4, np.empty((1, 4), np.int32)), IndexError, "block -1 (order[0])"),
        (
            (np.array([0, 1]), 1, 2, 4, np.empty((2, 4), np.int32)),
            IndexError,
            "blocks [1, 3) are outside an order of 2",
        ),
        (
            (np.array([0, 1]), 0, 2, 4, np.empty((2, 4), np.int32), 1),
            IndexError,
            "rows [1, 3) are outside out's 2 rows",
        ),
        (
            (np.array([0]), 0, 1, 4, np.empty((1, 5), np.int32)),
            ValueError,
            "out must have shape (rows, 4), got (1, 5)",
        ),
        ((np.array([0]), 0, 1, 4, np.empty((1, 8), np.int32)[:, ::2]), ValueError, "C-contiguous"),
        (
            (np.array([0]), 0, 1, 4, np.empty((1, 4), np.int64)),
            ValueError,
            "out has 8-byte items, tokens 4-byte",
        ),
        ((np.array([0.5]), 0, 1, 4, np.empty((1, 4), np.int32)), TypeError, "expected an integer array"),
    ],
)
def test_gather_token_blocks_errors(args: tuple[Any, ...], exc: type, message: str) -> None:
    tokens = np.arange(42, dtype=np.int32)
    with pytest.raises(exc, match=re.escape(message)):
        gather_token_blocks(tokens, *args)


def test_gather_token_blocks_checks_tensors_and_tokens() -> None:
    import torch

    order = np.array([0], dtype=np.int64)
    with pytest.raises(ValueError, match="contiguous CPU tensor"):
        gather_token_blocks(
            np.arange(8, dtype=np.int32), order, 0, 1, 4, torch.empty(4, 2, dtype=torch.int32).t()
        )
    with pytest.raises(ValueError, match="out must have shape"):
        gather_token_blocks(np.arange(8, dtype=np.int32), order, 0, 1, 4, torch.empty(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="tokens must be contiguous"):
        gather_token_blocks(np.arange(16, dtype=np.int32)[::2], order, 0, 1, 4, np.empty((1, 4), np.int32))
    with pytest.raises(ValueError, match="tokens must be 1-D"):
        gather_token_blocks(np.zeros((2, 4), np.int32), order, 0, 1, 4, np.empty((1, 4), np.int32))


# --------------------------------------------------------------------------------- permutations


def test_permutation_is_a_permutation_and_deterministic() -> None:
    for n in [0, 1, 2, 3, 10, 257, 10_000]:
        p = permutation(n, 42, 1)
        assert p.dtype == np.int64
        assert sorted(p.tolist()) == list(range(n))
        np.testing.assert_array_equal(p, permutation(n, 42, 1))


M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def reference_permutation(n: int, seed: int, epoch: int, stream: int = 0) -> list[int]:
    """The documented algorithm in plain Python: splitmix64 keyed by (seed, epoch, stream),
    Lemire's 32-bit bounded draw with rejection, Fisher-Yates from the top."""
    state = _mix64(
        _mix64(_mix64((seed + GOLDEN) & M64) ^ ((epoch + 2 * GOLDEN) & M64)) ^ ((stream + 3 * GOLDEN) & M64)
    )

    def next32() -> int:
        nonlocal state
        state = (state + GOLDEN) & M64
        return _mix64(state) >> 32

    a = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        m = next32() * bound
        if (m & 0xFFFFFFFF) < bound:
            t = (2**32 - bound) % bound
            while (m & 0xFFFFFFFF) < t:
                m = next32() * bound
        j = m >> 32
        a[i], a[j] = a[j], a[i]
    return a


def test_permutation_matches_reference_algorithm() -> None:
    # Pins the algorithm: the order must never change between releases or platforms, or resumed
    # runs would replay different samples.
    assert permutation(10, 42, 1).tolist() == [8, 5, 0, 3, 4, 2, 9, 6, 1, 7]
    assert permutation(10, 0, 0, 7).tolist() == [6, 7, 4, 1, 3, 8, 5, 0, 9, 2]
    for n, seed, epoch, stream in [(10, 42, 1, 0), (10, 0, 0, 7), (1000, 123, 4, 99), (3, 2**63, 1, 2)]:
        assert permutation(n, seed, epoch, stream).tolist() == reference_permutation(n, seed, epoch, stream)


def test_permutation_keys_differ() -> None:
    base = permutation(1000, 42, 1)
    for other in [permutation(1000, 43, 1), permutation(1000, 42, 2), permutation(1000, 42, 1, 1)]:
        assert not np.array_equal(base, other)
    # Huge and negative keys are reduced modulo 2**64.
    np.testing.assert_array_equal(permutation(50, -1, 1), permutation(50, 2**64 - 1, 1))
    np.testing.assert_array_equal(permutation(50, 2**64 + 5, 3), permutation(50, 5, 3))


def test_permutation_is_not_numpy_order() -> None:
    assert not np.array_equal(permutation(100, 42, 1), np.random.RandomState([42, 1]).permutation(100))


def test_permute_within_matches_permutation() -> None:
    values = np.arange(500, 1000, dtype=np.int64)
    original = values.copy()
    out = permute_within(values, 7, 3, 11)
    np.testing.assert_array_equal(values, original)  # input untouched
    np.testing.assert_array_equal(out, values[permutation(500, 7, 3, 11)])
    np.testing.assert_array_equal(permute_within(np.arange(500), 7, 3, 11), permutation(500, 7, 3, 11))
    assert permute_within([5], 1, 1).tolist() == [5]
    assert permute_within(np.array([], dtype=np.int32), 1, 1).shape == (0,)


def test_permute_within_errors() -> None:
    with pytest.raises(ValueError, match="1-D"):
        permute_within(np.zeros((2, 2), dtype=np.int64), 1, 1)
    with pytest.raises(TypeError, match="integers"):
        permute_within(np.array([0.5, 1.5]), 1, 1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        permutation(-1, 1, 1)
    with pytest.raises(TypeError):
        permutation(3, 1.5, 1)  # type: ignore[arg-type]
    assert permutation(5, np.int64(7), np.uint32(2)).tolist() == permutation(5, 7, 2).tolist()


def test_permutation_uniform_over_all_orders() -> None:
    # Every one of the 4! orders equally likely: chi-square over 24,000 deterministic draws.
    # Deterministic keys, so the statistic is a fixed number; 23 dof, p=0.001 critical value 49.7.
    draws = 24_000
    counts = Counter(tuple(permutation(4, seed, 5).tolist()) for seed in range(draws))
    assert len(counts) == factorial(4)
    expected = draws / factorial(4)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 49.7


def test_permutation_uniform_positions() -> None:
    # Where each element lands, over 20,000 shuffles of 10 (epochs vary): 81 dof, critical 129.
    n, draws = 10, 20_000
    table = np.zeros((n, n), dtype=np.int64)
    for epoch in range(draws):
        table[np.arange(n), permutation(n, 3, epoch)] += 1
    expected = draws / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    assert chi2 < 129.0
