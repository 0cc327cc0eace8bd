"""Property tests for :mod:`aiolit._fast`: hostile bytes give a correct answer or a clean error.

Every case is checked against a pure-numpy reference that follows the same rules, so a parser that
accepts something it should not (a silent wrong answer) fails just like one that crashes.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiolit._fast import parse_header, parse_offsets, permute_within
from aiolit.errors import CorruptChunkError

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,  # reproducible in CI; the strategies still cover the space broadly
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def reference_parse(buf: bytes, expected_items: int = -1) -> np.ndarray | None:
    """The header rules in plain numpy; ``None`` means "must raise CorruptChunkError"."""
    if len(buf) < 4:
        return None
    n = int(np.frombuffer(buf, dtype="<u4", count=1)[0])
    if expected_items >= 0 and n != expected_items:
        return None
    header = 4 * (n + 2)
    if header > len(buf):
        return None
    offsets = np.frombuffer(buf, dtype="<u4", count=n + 1, offset=4)
    if offsets[0] != header:
        return None
    if np.any(np.diff(offsets.astype(np.int64)) < 0):
        return None
    if offsets[-1] > len(buf):
        return None
    return offsets


def check(buf: bytes, expected_items: int = -1) -> None:
    want = reference_parse(buf, expected_items)
    if want is None:
        with pytest.raises(CorruptChunkError):
            parse_header(buf, expected_items)
    else:
        got = parse_header(buf, expected_items)
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, want)


@st.composite
def valid_chunks(draw: st.DrawFn) -> bytes:
    # Draw only a few integers and expand them with numpy: hypothesis' per-draw cost dominates
    # otherwise, and the header parser only cares about the shape (count, sizes, trailer).
    n = draw(st.integers(0, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    max_size = draw(st.sampled_from([0, 1, 8, 40]))
    sizes = rng.integers(0, max_size + 1, size=n)
    offsets = np.cumsum([4 * (n + 2), *sizes.tolist()]).tolist()
    payload = rng.integers(0, 256, size=int(sizes.sum()) + draw(st.integers(0, 16)), dtype=np.uint8)
    return struct.pack(f"<{n + 2}I", n, *offsets) + payload.tobytes()


INTERESTING_U32 = (0, 1, 2, 3, 7, 8, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1)
# (kind, where, value): drawn as plain integers, which hypothesis generates and shrinks cheaply.
MUTATIONS = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 2**16), st.integers(0, 2**32 - 1)), min_size=1, max_size=3
)


def mutate(chunk: bytes, mutations: list[tuple[int, int, int]]) -> bytes:
    """Apply bit flips, truncations, extensions, header-word overwrites and insertions."""
    buf = bytearray(chunk)
    for kind, where, value in mutations:
        if kind == 0 and buf:  # flip one bit anywhere
            buf[where % len(buf)] ^= 1 << (value % 8)
        elif kind == 1:  # truncate
            del buf[where % (len(buf) + 1) :]
        elif kind == 2:  # extend with 1..32 bytes
            buf += value.to_bytes(4, "little") * (1 + where % 8)
        elif kind in (3, 4) and len(buf) >= 4:  # overwrite an aligned header word
            word = where % min(len(buf) // 4, 70)
            new = INTERESTING_U32[value % len(INTERESTING_U32)] if kind == 3 else value % 600
            struct.pack_into("<I", buf, 4 * word, new)
        elif kind == 5:  # insert 1..4 bytes (shifts everything after)
            i = where % (len(buf) + 1)
            buf[i:i] = value.to_bytes(4, "little")[: 1 + where % 4]
    return bytes(buf)


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes(buf: bytes) -> None:
    check(buf)


@settings(FUZZ, max_examples=300)
@given(valid_chunks(), st.booleans())
def test_valid_chunks_parse(buf: bytes, pass_expected: bool) -> None:
    n = struct.unpack_from("<I", buf)[0]
    got = parse_header(buf, n if pass_expected else -1)
    want = reference_parse(buf)
    assert want is not None
    np.testing.assert_array_equal(got, want)


@FUZZ
@given(valid_chunks(), MUTATIONS, st.integers(-1, 70))
def test_mutated_chunks(chunk: bytes, mutations: list[tuple[int, int, int]], expected_items: int) -> None:
    check(mutate(chunk, mutations), expected_items)


# A phrase from each of parse_header's error messages, one per check.
CHECKS = ("too short", "the index expects", "header for", "offsets[0] =", "offsets decrease", "truncated")


def test_mutations_bulk() -> None:
    # Volume without hypothesis' per-example overhead: 20,000 seeded mutants, same oracle.
    # Deterministic, so it cannot flake; the hypothesis tests above add shrinking and edge bias.
    rnd = random.Random(1234)
    outcomes = set()
    for case in range(20_000):
        n = rnd.randrange(0, 40)
        sizes = [rnd.randrange(0, 9) for _ in range(n)]
        offsets = np.cumsum([4 * (n + 2), *sizes]).tolist()
        chunk = struct.pack(f"<{n + 2}I", n, *offsets) + rnd.randbytes(sum(sizes) + rnd.randrange(0, 8))
        mutations = [
            (rnd.randrange(6), rnd.randrange(2**16), rnd.randrange(2**32)) for _ in range(rnd.randint(1, 3))
        ]
        buf = mutate(chunk, mutations)
        expected_items = n if case % 3 == 0 else -1
        want = reference_parse(buf, expected_items)
        try:
            got = parse_header(buf, expected_items)
        except CorruptChunkError as exc:
            assert want is None, f"case {case}: rejected a valid chunk: {exc}"
            outcomes.add(next(k for k in CHECKS if k in str(exc)))  # which check fired
        else:
            assert want is not None, f"case {case}: accepted a corrupt chunk"
            np.testing.assert_array_equal(got, want)
            outcomes.add("ok")
    # Every check fired at least once (the mutants reach all the branches).
    assert outcomes == {"ok", *CHECKS}


@settings(FUZZ, max_examples=500)
@given(valid_chunks(), MUTATIONS, st.integers(-1, 100), st.integers(-1, 80), st.integers(-1, 4000))
def test_parse_offsets_matches_reference(
    chunk: bytes, mutations: list[tuple[int, int, int]], at: int, n: int, limit: int
) -> None:
    buf = mutate(chunk, mutations)
    ok: np.ndarray | None = None
    if at >= 0 and n >= 0 and at + 4 * (n + 1) <= len(buf):
        table = np.frombuffer(buf, dtype="<u4", count=n + 1, offset=at)
        first = int(table[0])
        ok = table
        if np.any(np.diff(table.astype(np.int64)) < 0) or (limit >= 0 and table[-1] > limit):
            ok = None
    else:
        first = 0
    if at < 0 or n < 0:
        with pytest.raises(ValueError):
            parse_offsets(buf, at, n, first, limit)
    elif ok is None:
        with pytest.raises(CorruptChunkError):
            parse_offsets(buf, at, n, first, limit)
    else:
        np.testing.assert_array_equal(parse_offsets(buf, at, n, first, limit), ok)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50),
    st.integers(-(2**70), 2**70),
    st.integers(0, 2**40),
    st.integers(0, 2**20),
)
def test_permute_within_is_a_permutation(values: list[int], seed: int, epoch: int, stream: int) -> None:
    indices = np.array(values, dtype=np.int64)
    out = permute_within(indices, seed, epoch, stream)
    assert sorted(out.tolist()) == sorted(values)
    np.testing.assert_array_equal(out, permute_within(indices, seed, epoch, stream))
