"""Local read throughput: aiolit vs litdata on the same data, and the page-cache read rate.

Run: ``PYTHONPATH=src python benchmarks/bench_streaming.py [--samples 200000] [--tokens 20000000]
[--shapes all|none|NAME,...] [--per-item] [--loader-batches 8,32] [--loader-workers 0,2]``

``--per-item`` switches off batched decoding of plain PyTree chunks and whole-batch token copies
(the A/B baseline: the loader then collates one block tensor per sample, as before).

Both libraries read the same directories (written by aiolit's ChunkWriter in LitData's format),
after one warm-up pass so the files are in the page cache. No DataLoader: this measures the
dataset iteration itself in one process, except the token DataLoader rows: a full pass of each
library's ``StreamingDataLoader`` per batch size and worker count (persistent workers, started
in a warm-up epoch; the best of 5 epochs). Their share of the page-cache read rate is against
the better of two measurements of it, before and after the loaders (see :func:`page_cache_rate`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

# Small-sample shapes: name -> sample i. Per-sample overhead dominates all of them.
SHAPES: dict[str, Callable[[int], Any]] = {
    "dict:int/str/int": lambda i: {"index": i, "text": f"sample {i}", "label": i % 10},
    "tuple:int*3": lambda i: (i, -i, 3 * i),
    "dict:int/float/bool": lambda i: {"id": i, "score": i / 7, "keep": i % 2 == 0},
    "dict:f32[16]/int": lambda i: {"x": np.full(16, i, np.float32), "y": i % 10},
    "dict:u8[4x4]/int": lambda i: {"img": np.full((4, 4), i % 256, np.uint8), "y": i % 10},
    "dict:str100": lambda i: {"text": f"{i:08d} " + "lorem ipsum " * 8},
}


def write_small(path: str, n: int, make: Callable[[int], Any] = SHAPES["dict:int/str/int"]) -> None:
    from aiolit.format import ChunkWriter, merge_shards

    writer = ChunkWriter(path, chunk_bytes="8MB")
    for i in range(n):
        writer.add(make(i))
    writer.done()
    merge_shards(path)


def write_tokens(path: str, n_tokens: int) -> None:
    from aiolit.format import ChunkWriter, merge_shards
    from aiolit.streaming import TokensLoader

    rng = np.random.default_rng(0)
    writer = ChunkWriter(path, chunk_size=2**22, item_loader=TokensLoader())
    done = 0
    while done < n_tokens:
        seq = rng.integers(0, 50_000, size=int(rng.integers(500, 5000)), dtype=np.int32)
        writer.add(seq)
        done += len(seq)
    writer.done()
    merge_shards(path)


def rate(fn: Callable[[], Iterable[Any]], repeat: int = 2) -> tuple[float, int]:
    """Best items/s over ``repeat`` passes (after a warm-up pass)."""
    n = sum(1 for _ in fn())
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        count = sum(1 for _ in fn())
        best = max(best, count / (time.perf_counter() - start))
    return best, n


def loader_rate(loader: Iterable[Any], repeat: int = 5) -> tuple[float, int]:
    """Best rows/s of epochs over one loader (after a warm-up epoch that also starts its workers)."""
    rows = sum(len(b) for b in loader)
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        count = sum(len(b) for b in loader)
        best = max(best, count / (time.perf_counter() - start))
    return best, rows


def page_cache_rate(path: str, repeat: int = 5, buffer_bytes: int = 2**20) -> float:
    """Bytes/s of reading every chunk file from the page cache: the ceiling for a local reader.

    The best of ``repeat`` passes of ``readinto`` into one reused, page-aligned buffer of
    ``buffer_bytes`` (what ``dd bs=1M`` does). Not ``read()`` of each whole file into a new
    ``bytes``: its rate depends on where the allocator puts that buffer (a fresh mapping that
    page-faults on every 4 kB, or reused heap; 16-byte rather than 64-byte alignment, which
    alone made the kernel's copy 3x slower here), so it measured 1-11 GB/s on one machine.
    """
    import mmap

    files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".bin")]
    buffer = mmap.mmap(-1, buffer_bytes)  # anonymous: page-aligned
    view = memoryview(buffer)
    best = 0.0
    try:
        for _ in range(repeat):
            total = 0
            start = time.perf_counter()
            for f in files:
                with open(f, "rb", buffering=0) as fh:
                    while n := fh.readinto(view):
                        total += n
            best = max(best, total / (time.perf_counter() - start))
    finally:
        view.release()
        buffer.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--tokens", type=int, default=20_000_000)
    parser.add_argument("--block", type=int, default=2049)
    parser.add_argument("--shapes", default="all", help="comma-separated SHAPES names, 'all' or 'none'")
    parser.add_argument("--per-item", action="store_true", help="decode one sample per call (no batching)")
    parser.add_argument("--loader-batches", default="8,32", help="token DataLoader batch sizes ('' skips)")
    parser.add_argument("--loader-workers", default="0,2", help="token DataLoader worker counts")
    args = parser.parse_args()

    import litdata

    import aiolit.streaming as al

    if args.per_item:
        from aiolit.streaming.dataset import StreamingDataset

        StreamingDataset._batch_producer = lambda self: (None, None)  # type: ignore[method-assign]
        StreamingDataset._can_batch_tokens = lambda self: False  # type: ignore[method-assign]

    root = tempfile.mkdtemp(prefix="aiolit-bench-")
    try:
        names = {"all": list(SHAPES), "none": []}.get(args.shapes, args.shapes.split(","))
        print(
            f"{'small samples (' + str(args.samples) + ')':24s} {'aiolit/s':>10s} {'litdata/s':>10s}  ratio"
        )
        for name in names:
            small = os.path.join(root, f"small-{len(os.listdir(root))}")
            write_small(small, args.samples, SHAPES[name])
            a_small, _ = rate(lambda: al.StreamingDataset(small))  # noqa: B023 - used right here
            l_small, _ = rate(lambda: litdata.StreamingDataset(small))  # noqa: B023
            print(f"{name:24s} {a_small:10,.0f} {l_small:10,.0f}  {a_small / l_small:.2f}x")
            shutil.rmtree(small, ignore_errors=True)

        tokens = os.path.join(root, "tokens")
        write_tokens(tokens, args.tokens)
        a_tok, nb = rate(lambda: al.StreamingDataset(tokens, item_loader=al.TokensLoader(args.block)))
        l_tok, _ = rate(
            lambda: litdata.StreamingDataset(tokens, item_loader=litdata.TokensLoader(args.block))
        )
        token_bytes = np.dtype(np.int32).itemsize  # write_tokens' dtype
        print(f"token blocks ({nb} x {args.block}): aiolit {a_tok * args.block / 1e6:,.1f} Mtok/s  "
              f"litdata {l_tok * args.block / 1e6:,.1f} Mtok/s  ratio {a_tok / l_tok:.2f}x")  # fmt: skip

        # The page-cache rate is measured before and after the loaders and the better one is the
        # ceiling (on a shared machine a neighbour may slow either measurement down).
        pages = [page_cache_rate(tokens)]
        batches = [int(b) for b in args.loader_batches.split(",") if b]
        workers = [int(w) for w in args.loader_workers.split(",") if w]
        rows = []
        for bs in batches:
            for nw in workers:
                opts: dict[str, Any] = {"batch_size": bs, "num_workers": nw, "persistent_workers": nw > 0}
                a_ds = al.StreamingDataset(tokens, item_loader=al.TokensLoader(args.block))
                a_dl, _ = loader_rate(al.StreamingDataLoader(a_ds, **opts))
                l_ds = litdata.StreamingDataset(tokens, item_loader=litdata.TokensLoader(args.block))
                l_dl, _ = loader_rate(litdata.StreamingDataLoader(l_ds, **opts))
                rows.append((bs, nw, a_dl, l_dl))
        pages.append(page_cache_rate(tokens))
        page = max(pages)
        tok_bytes = a_tok * args.block * token_bytes
        print(f"page-cache read (readinto, best of 5 passes, before/after the loaders): "
              f"{pages[0] / 1e9:.2f}/{pages[1] / 1e9:.2f} GB/s; "
              f"aiolit's dataset iteration at {tok_bytes / page:.0%} of {page / 1e9:.2f}")  # fmt: skip
        if rows:
            print(f"{'DataLoader (Mtok/s)':24s} {'aiolit':>8s} {'litdata':>8s}  ratio  aiolit/page-cache")
        for bs, nw, a_dl, l_dl in rows:
            a_mt, l_mt = a_dl * args.block / 1e6, l_dl * args.block / 1e6
            share = a_dl * args.block * token_bytes / page
            print(
                f"{f'batch {bs}, workers {nw}':24s} {a_mt:8,.1f} {l_mt:8,.1f}  {a_dl / l_dl:4.2f}x  {share:.0%}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
