"""Token batches without workers: the loader takes them straight from the dataset's iterator.

With ``TokensLoader``, the default collate, no workers and no ``pin_memory``, a
``StreamingDataLoader`` builds torch's single-process iterator (for its side effects) but takes
each batch from the dataset's own iterator, skipping torch's per-batch fetch and profiler span.
Everything observable must be what torch's batching gives (the reference: the same loader with
``collate_fn=default_collate``, which takes torch's per-sample path): batches, order, shuffle,
``drop_last``, epochs, resume, torch's RNG, the profiler's spans. A spy on torch's
``_SingleProcessDataLoaderIter._next_data`` tells which path ran.
"""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate
from torch.utils.data.dataloader import _SingleProcessDataLoaderIter

from aiolit.streaming import (
    CombinedStreamingDataset,
    ParallelStreamingDataset,
    StreamingDataLoader,
    StreamingDataset,
    TokensLoader,
)
from tests.streaming._data import write_tokens

BLOCK = 8


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two token datasets (int32 tensors, uint16 numpy) of chunks of 4-12 blocks."""
    root = tmp_path_factory.mktemp("token-fast")
    rng = np.random.default_rng(3)
    out = {}
    for kind, dtype in (("tensor", np.int32), ("numpy", np.uint16)):
        seqs = [rng.integers(0, 60_000, size=int(rng.integers(3, 30)), dtype=dtype) for _ in range(45)]
        write_tokens(
            root / kind, [torch.from_numpy(s) for s in seqs] if kind == "tensor" else seqs, chunk_size=77
        )
        out[kind] = str(root / kind)
    return out


@pytest.fixture
def torch_fetches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the batches torch's single-process iterator fetched (``_next_data`` calls)."""
    calls = [0]
    real = _SingleProcessDataLoaderIter._next_data

    def spy(self: Any) -> Any:
        calls[0] += 1
        return real(self)

    monkeypatch.setattr(_SingleProcessDataLoaderIter, "_next_data", spy)
    return calls


def _ds(path: str, **kwargs: Any) -> StreamingDataset:
    return StreamingDataset(path, item_loader=TokensLoader(BLOCK), **kwargs)


def _pair(path: str, **opts: Any) -> tuple[StreamingDataLoader, StreamingDataLoader]:
    """(fast loader, reference loader through torch's per-sample batching), same settings."""
    ds_args = {k: opts.pop(k) for k in ("shuffle", "drop_last", "seed") if k in opts}
    fast = StreamingDataLoader(_ds(path, **ds_args), **opts)
    ref = StreamingDataLoader(_ds(path, **ds_args), collate_fn=default_collate, **opts)
    return fast, ref


def _assert_same(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert type(a) is torch.Tensor, f"batch {i} is a {type(a).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, (i, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(a, b), f"batch {i} differs"


def _blocks(batches: list[torch.Tensor]) -> list[bytes]:
    return [row.numpy().tobytes() for b in batches for row in b]


@pytest.mark.parametrize("kind", ["tensor", "numpy"])
@pytest.mark.parametrize("batch_size", [1, 3, 7, 16])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_fast_batches_equal_torch_batching(
    tokens: dict[str, str],
    torch_fetches: list[int],
    kind: str,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
) -> None:
    fast, ref = _pair(tokens[kind], batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
    n_blocks = len(_ds(tokens[kind]))
    epochs = []
    for _ in range(2):
        want = list(ref)
        assert torch_fetches[0] > 0
        torch_fetches[0] = 0
        got = list(fast)
        assert torch_fetches[0] == 0, "the fast path went through torch's fetcher"
        _assert_same(got, want)
        assert len(got) == len(fast) == len(ref)
        assert fast.state_dict() == ref.state_dict()
        # Every block once (drop_last: only the last short batch is missing).
        blocks = _blocks(got)
        assert len(blocks) == (n_blocks // batch_size * batch_size if drop_last else n_blocks)
        if drop_last or batch_size == 1:
            assert all(len(b) == batch_size for b in got)
        epochs.append(blocks)
    if shuffle:
        assert epochs[0] != epochs[1]  # the second epoch is reshuffled
        assert sorted(epochs[0]) == sorted(epochs[1]) or drop_last
    else:
        assert epochs[0] == epochs[1]


def test_fast_batches_equal_a_plain_torch_dataloader(
    tokens: dict[str, str], torch_fetches: list[int]
) -> None:
    # torch's own DataLoader over the same dataset (automatic batching, default_collate).
    want = list(DataLoader(_ds(tokens["numpy"], shuffle=True), batch_size=5))
    torch_fetches[0] = 0
    got = list(StreamingDataLoader(_ds(tokens["numpy"], shuffle=True), batch_size=5))
    assert torch_fetches[0] == 0
    _assert_same(got, want)


def test_batches_span_chunks(tokens: dict[str, str]) -> None:
    ds = _ds(tokens["tensor"])
    sizes = [iv.end - iv.start for iv in ds.intervals]
    assert max(sizes) < 16 and any(s % 7 for s in sizes)  # batches of 7 and 16 cross chunk ends
    blocks = list(ds)
    got = list(StreamingDataLoader(_ds(tokens["tensor"]), batch_size=16))
    _assert_same(got, [default_collate(blocks[i : i + 16]) for i in range(0, len(blocks), 16)])


def test_batches_are_fresh_tensors(tokens: dict[str, str]) -> None:
    loader = StreamingDataLoader(_ds(tokens["tensor"]), batch_size=3)
    batches = list(loader)  # all held at once: none is overwritten by a later one
    _assert_same(
        batches, list(StreamingDataLoader(_ds(tokens["tensor"]), batch_size=3, collate_fn=default_collate))
    )
    pointers = {b.untyped_storage().data_ptr() for b in batches}
    assert len(pointers) == len(batches)
    for b in batches:
        # Its own storage, exactly its size, writeable and resizable (as torch.stack's).
        assert b.is_contiguous() and b.untyped_storage().nbytes() == b.numel() * b.element_size()
        b.add_(1)
        b.resize_(b.numel())


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("batch_size", [3, 7])
def test_resume_at_every_cut(
    tokens: dict[str, str], torch_fetches: list[int], drop_last: bool, batch_size: int
) -> None:
    opts: dict[str, Any] = {"batch_size": batch_size, "shuffle": True, "drop_last": drop_last}
    path = tokens["tensor"]
    full = StreamingDataLoader(_ds(path, shuffle=True, drop_last=drop_last), batch_size=batch_size)
    epochs = [list(full), list(full), list(full)]
    for e in (0, 1):
        for cut in range(len(epochs[e])):
            loader, _ = _pair(path, **opts)
            for _ in range(e):
                list(loader)
            it = iter(loader)
            head = [next(it) for _ in range(cut)]
            state = loader.state_dict()
            del it
            resumed, _ = _pair(path, **opts)
            resumed.load_state_dict(state)
            torch_fetches[0] = 0
            tail = list(resumed)
            assert torch_fetches[0] == 0
            # The rest of the epoch, no duplicates, no gaps; then the next epoch as uninterrupted.
            _assert_same(head + tail, epochs[e])
            _assert_same(list(resumed), epochs[e + 1])


def test_torch_rng_is_drawn_as_by_torch(tokens: dict[str, str]) -> None:
    # torch's iterator draws its base seed from the global generator once per epoch: so does
    # the fast path (the iterator is still built), so a training script's random stream is unchanged.
    fast, ref = _pair(tokens["tensor"], batch_size=4)
    torch.manual_seed(1234)
    list(fast)
    after_fast = torch.get_rng_state()
    torch.manual_seed(1234)
    list(ref)
    assert torch.equal(after_fast, torch.get_rng_state())
    torch.manual_seed(1234)
    assert not torch.equal(after_fast, torch.get_rng_state())  # the epoch did draw


def test_torch_profiler_sees_every_batch(tokens: dict[str, str], torch_fetches: list[int]) -> None:
    from torch.profiler import ProfilerActivity, profile

    fast, ref = _pair(tokens["tensor"], batch_size=4)
    want = list(ref)
    torch_fetches[0] = 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        got = list(fast)
    _assert_same(got, want)
    assert torch_fetches[0] == len(want) + 1  # torch's iterator, and its final StopIteration
    name = "enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__"
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get(name) == len(want) + 1


def _plus_one(x: Any) -> Any:
    return x + 1


class _Sub(StreamingDataset):
    def __getitem__(self, index: Any) -> Any:
        return super().__getitem__(index) + 1


class _SubIter(StreamingDataset):
    def __iter__(self) -> Any:
        return (x + 1 for x in super().__iter__())


def test_excluded_cases_take_torchs_path(tokens: dict[str, str], torch_fetches: list[int]) -> None:
    path = tokens["tensor"]
    plain = list(StreamingDataLoader(_ds(path), batch_size=4, collate_fn=default_collate))
    plus = [b + 1 for b in plain]
    cases: list[tuple[str, StreamingDataLoader, list[Any]]] = [
        ("pin_memory", StreamingDataLoader(_ds(path), batch_size=4, pin_memory=True), plain),
        (
            "collate_fn",
            StreamingDataLoader(_ds(path), batch_size=4, collate_fn=lambda b: default_collate(b)),
            plain,
        ),
        ("transform", StreamingDataLoader(_ds(path, transform=_plus_one), batch_size=4), plus),
        ("__getitem__", StreamingDataLoader(_Sub(path, item_loader=TokensLoader(BLOCK)), batch_size=4), plus),
        (
            "__iter__",
            StreamingDataLoader(_SubIter(path, item_loader=TokensLoader(BLOCK)), batch_size=4),
            plus,
        ),
    ]
    for name, loader, want in cases:
        torch_fetches[0] = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pin_memory without an accelerator
            got = list(loader)
        assert torch_fetches[0] == len(want) + 1, name
        _assert_same(got, want)
    # The plain loader itself: no fetch through torch.
    torch_fetches[0] = 0
    _assert_same(list(StreamingDataLoader(_ds(path), batch_size=4)), plain)
    assert torch_fetches[0] == 0


@pytest.mark.parametrize("wrapper", ["combined", "parallel"])
def test_wrappers_take_torchs_path(tokens: dict[str, str], torch_fetches: list[int], wrapper: str) -> None:
    def make() -> Any:
        parts = [_ds(tokens["tensor"]), _ds(tokens["tensor"])]
        if wrapper == "combined":
            return CombinedStreamingDataset(parts, iterate_over_all=True, seed=1)
        return ParallelStreamingDataset(parts)

    want = list(DataLoader(make(), batch_size=4))
    loader = StreamingDataLoader(make(), batch_size=4)
    assert not loader._dataset_batches
    torch_fetches[0] = 0
    got = list(loader)
    assert torch_fetches[0] == len(got) + 1
    if wrapper == "combined":
        _assert_same(got, want)
    else:
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _assert_same(list(a), list(b))


def test_profile_batches_without_workers(
    tokens: dict[str, str], tmp_path: Path, torch_fetches: list[int]
) -> None:
    loader = StreamingDataLoader(
        _ds(tokens["tensor"]), batch_size=3, profile_batches=4, profile_dir=str(tmp_path)
    )
    got = list(loader)
    assert torch_fetches[0] == 0
    _assert_same(
        got, list(StreamingDataLoader(_ds(tokens["tensor"]), batch_size=3, collate_fn=default_collate))
    )
    events = json.loads((tmp_path / "result.json").read_text())["traceEvents"]
    assert [e["args"]["batch"] for e in events] == [0, 1, 2, 3]


def test_sync_iteration_inside_a_running_loop(tokens: dict[str, str], torch_fetches: list[int]) -> None:
    want = list(
        StreamingDataLoader(_ds(tokens["numpy"], shuffle=True), batch_size=5, collate_fn=default_collate)
    )

    async def consume() -> list[Any]:
        return list(StreamingDataLoader(_ds(tokens["numpy"], shuffle=True), batch_size=5))

    torch_fetches[0] = 0
    _assert_same(asyncio.run(consume()), want)
    assert torch_fetches[0] == 0


@pytest.mark.s3
def test_s3_dataset_takes_the_fast_path(
    s3_server: Any, tokens: dict[str, str], tmp_path: Path, torch_fetches: list[int]
) -> None:
    from tests.streaming._data import upload

    url = upload(s3_server, Path(tokens["tensor"]), s3_server.new_url("fast"))
    ref = StreamingDataLoader(_ds(tokens["tensor"], shuffle=True), batch_size=6, collate_fn=default_collate)
    want = [list(ref), list(ref)]
    torch_fetches[0] = 0
    ds = StreamingDataset(
        url,
        cache_dir=str(tmp_path / "cache"),
        storage_options=s3_server.storage_options,
        item_loader=TokensLoader(BLOCK),
        shuffle=True,
    )
    loader = StreamingDataLoader(ds, batch_size=6)
    # Cold (the first batch read by byte range, chunks downloading), iterated by sync code inside
    # a running event loop; then from the cache.

    async def cold() -> list[Any]:
        return list(loader)

    _assert_same(asyncio.run(cold()), want[0])
    _assert_same(list(loader), want[1])
    assert torch_fetches[0] == 0


# -- LitData's golden token datasets ----------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "format"))
from _format_helpers import GOLDEN, cases  # noqa: E402

GOLDEN_TOKENS = [(w, c) for w in ("0.2.45", "0.2.76") for c in ("tokens_torch", "tokens_numpy")]


@pytest.mark.parametrize(("writer", "case"), GOLDEN_TOKENS, ids=[f"{w}/{c}" for w, c in GOLDEN_TOKENS])
def test_golden_token_batches(writer: str, case: str, torch_fetches: list[int], tmp_path: Path) -> None:
    import shutil

    import litdata

    path = str(tmp_path / case)  # a private copy: reading never touches the corpus
    shutil.copytree(GOLDEN / writer / case, path)
    block = 16
    ds = StreamingDataset(path, item_loader=TokensLoader(block))
    seq_fn = cases.token_seq if case == "tokens_numpy" else cases.token_seq_int32
    blocks = cases.token_blocks([e.chunk_size for e in ds.source.entries], block, seq_fn)
    want = [default_collate(blocks[i : i + 5]) for i in range(0, len(blocks), 5)]
    got = list(StreamingDataLoader(ds, batch_size=5))
    assert torch_fetches[0] == 0
    _assert_same(got, want)
    # LitData's own loader over the same files gives the same batches.
    theirs = list(
        litdata.StreamingDataLoader(
            litdata.StreamingDataset(path, item_loader=litdata.TokensLoader(block)), batch_size=5
        )
    )
    _assert_same(got, theirs)
