"""Micro-benchmarks: aiolit._fast (Cython) against the numpy/Python code it replaces.

Run: ``PYTHONPATH=src python benchmarks/bench_fast.py`` (after ``python setup.py build_ext --inplace``).
Prints one row per case: best-of-repeats time per call for numpy and Cython, and numpy/Cython.
"""

from __future__ import annotations

import argparse
import struct
import timeit
from collections.abc import Callable
from functools import partial

import numpy as np
import numpy.typing as npt

from aiolit._fast import gather_token_blocks, parse_header, permutation, token_blocks_locate
from aiolit.errors import CorruptChunkError


def per_call(fn: Callable[[], object], budget: float) -> float:
    """Best per-call time in seconds (min over repeats: the least disturbed by other processes)."""
    timer = timeit.Timer(fn)
    number, elapsed = timer.autorange()
    number = max(1, int(number * budget / max(elapsed, 1e-9) / 5))
    return min(timer.repeat(repeat=5, number=number)) / number


def fmt(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:7.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:7.2f} us"
    return f"{seconds * 1e3:7.2f} ms"


def make_chunk(n: int, item_bytes: int = 64) -> bytes:
    header = 4 * (n + 2)
    offsets = header + item_bytes * np.arange(n + 1, dtype=np.int64)
    return struct.pack("<I", n) + offsets.astype("<u4").tobytes() + bytes(item_bytes * n)


def numpy_parse_header(buf: bytes, expected_items: int = -1) -> npt.NDArray[np.uint32]:
    """The same checks as parse_header, written the way one would in numpy."""
    if len(buf) < 4:
        raise CorruptChunkError("short")
    n = int(np.frombuffer(buf, dtype="<u4", count=1)[0])
    if expected_items >= 0 and n != expected_items:
        raise CorruptChunkError("count")
    if 4 * (n + 2) > len(buf):
        raise CorruptChunkError("header")
    offsets = np.frombuffer(buf, dtype="<u4", count=n + 1, offset=4)
    if offsets[0] != 4 * (n + 2):
        raise CorruptChunkError("first")
    bad = np.flatnonzero(offsets[1:] < offsets[:-1])
    if bad.size:
        raise CorruptChunkError(f"decrease at {bad[0]}")
    if offsets[-1] > len(buf):
        raise CorruptChunkError("truncated")
    return offsets


def bench_header(budget: float) -> list[tuple[str, float, float]]:
    rows = []
    for n in [1, 256, 4096, 100_000]:
        buf = make_chunk(n, item_bytes=8)
        np.testing.assert_array_equal(parse_header(buf, n), numpy_parse_header(buf, n))
        rows.append(
            (
                f"parse_header N={n}",
                per_call(partial(numpy_parse_header, buf, n), budget),
                per_call(partial(parse_header, buf, n), budget),
            )
        )
    return rows


def bench_tokens(budget: float) -> list[tuple[str, float, float]]:
    rows = []
    rng = np.random.default_rng(0)
    block = 2048
    for n_chunks in [1000, 100_000]:
        blocks_per_chunk = rng.integers(50, 100, size=n_chunks)
        cum = np.concatenate([[0], np.cumsum(blocks_per_chunk)]).astype(np.int64)
        for batch in [8, 32, 64]:
            ids = rng.integers(0, cum[-1], size=batch)

            def numpy_locate(ids: npt.NDArray[np.int64] = ids, cum: npt.NDArray[np.int64] = cum) -> object:
                chunks = np.searchsorted(cum, ids, side="right") - 1
                return chunks, (ids - cum[chunks]) * block

            def fast_locate(ids: npt.NDArray[np.int64] = ids, cum: npt.NDArray[np.int64] = cum) -> object:
                return token_blocks_locate(ids, cum, block)

            rows.append(
                (
                    f"locate {batch} blocks / {n_chunks} chunks",
                    per_call(numpy_locate, budget),
                    per_call(fast_locate, budget),
                )
            )
    for dtype in [np.uint16, np.int32]:
        # One chunk's token stream that a batch gathers its blocks from (as a token loader does).
        tokens = rng.integers(0, 30000, size=75 * block).astype(dtype)
        for batch in [8, 32, 64]:
            order = rng.integers(0, 75, size=batch).astype(np.int64)
            out = np.empty((batch, block), dtype=dtype)

            def numpy_copy(
                tokens: npt.NDArray[np.generic] = tokens,
                order: npt.NDArray[np.int64] = order,
                out: npt.NDArray[np.generic] = out,
            ) -> None:
                np.stack([tokens[k * block : (k + 1) * block] for k in order.tolist()], out=out)

            def fast_copy(
                tokens: npt.NDArray[np.generic] = tokens,
                order: npt.NDArray[np.int64] = order,
                out: npt.NDArray[np.generic] = out,
                batch: int = batch,
            ) -> None:
                gather_token_blocks(tokens, order, 0, batch, block, out)

            fast_copy()
            want = out.copy()
            numpy_copy()
            np.testing.assert_array_equal(out, want)
            rows.append(
                (
                    f"copy {batch}x{block} {np.dtype(dtype).name}",
                    per_call(numpy_copy, budget),
                    per_call(fast_copy, budget),
                )
            )
    return rows


def numpy_legacy_perm(n: int) -> npt.NDArray[np.int64]:
    """LitData's way: a fresh RandomState seeded with [seed, epoch] per shuffle."""
    return np.random.RandomState([42, 3]).permutation(n)


def numpy_rng_perm(n: int) -> npt.NDArray[np.int64]:
    """The modern numpy equivalent (PCG64 + SeedSequence)."""
    return np.random.default_rng((42, 3)).permutation(n)


def bench_perm(budget: float) -> list[tuple[str, float, float]]:
    rows = []
    for n in [16, 256, 4096, 65_536, 1_000_000]:
        rows.append(
            (
                f"perm n={n} vs RandomState([s,e])",
                per_call(partial(numpy_legacy_perm, n), budget),
                per_call(partial(permutation, n, 42, 3), budget),
            )
        )
        rows.append(
            (
                f"perm n={n} vs default_rng((s,e))",
                per_call(partial(numpy_rng_perm, n), budget),
                per_call(partial(permutation, n, 42, 3), budget),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per measurement")
    args = parser.parse_args()
    rows = bench_header(args.budget) + bench_tokens(args.budget) + bench_perm(args.budget)
    width = max(len(name) for name, _, _ in rows)
    print(f"{'case':<{width}}  {'numpy':>10}  {'aiolit':>10}  {'numpy/aiolit':>12}")
    for name, baseline, fast in rows:
        print(f"{name:<{width}}  {fmt(baseline)}  {fmt(fast)}  {baseline / fast:11.1f}x")


if __name__ == "__main__":
    main()
