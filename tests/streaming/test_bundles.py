"""Token batches travel from DataLoader workers in bundles (``streaming/_bundle.py``).

The oracle is torch's own batching of the same dataset (``collate_fn=default_collate``: one
message per batch, torch's round-robin): the bundled loader must yield the same batches in the
same order, with the same state, resume from any batch, and hand every block out exactly once.
A spy on ``Bundle.batches`` (called in the loader's process only) proves bundles were sent.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from aiolit.streaming import StreamingDataLoader, StreamingDataset, TokensLoader
from aiolit.streaming._bundle import Bundle, Packer, Unbundle
from tests.streaming._data import upload, write_tokens

BLOCK = 4


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # ~1000 blocks in ~10 chunks: > 32 batches per worker at batch 3, so bundles reach their cap.
    rng = np.random.default_rng(11)
    seqs = [rng.integers(0, 60_000, size=int(rng.integers(5, 80)), dtype=np.uint16) for _ in range(95)]
    root = tmp_path_factory.mktemp("bundles")
    write_tokens(root / "src", seqs, chunk_size=403)
    return root / "src"


@pytest.fixture
def bundle_spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Batches per bundle received by the loader's process."""
    sizes: list[int] = []
    real = Bundle.batches

    def spy(self: Bundle) -> list[Any]:
        sizes.append(len(self.rows))
        return real(self)

    monkeypatch.setattr(Bundle, "batches", spy)
    return sizes


def _loader(path: str, *, per_item: bool = False, **kwargs: Any) -> StreamingDataLoader:
    ds_args = {
        k: kwargs.pop(k) for k in ("shuffle", "drop_last", "cache_dir", "storage_options") if k in kwargs
    }
    ds = StreamingDataset(path, item_loader=TokensLoader(BLOCK), **ds_args)
    if per_item:
        kwargs["collate_fn"] = default_collate
    return StreamingDataLoader(ds, **kwargs)


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.dtype == b.dtype and a.shape == b.shape, (i, a.shape, b.shape)
        assert torch.equal(a, b), f"batch {i} differs"


def _blocks(batches: list[torch.Tensor]) -> Counter[bytes]:
    return Counter(row.numpy().tobytes() for b in batches for row in b)


@pytest.mark.parametrize(("num_workers", "drop_last"), [(2, False), (3, True), (3, False)])
def test_bundled_batches_equal_torch_batching(
    tokens: Path, bundle_spy: list[int], num_workers: int, drop_last: bool
) -> None:
    opts = {"batch_size": 3, "num_workers": num_workers, "shuffle": True, "drop_last": drop_last}
    ref = _loader(str(tokens), per_item=True, **opts)
    fast = _loader(str(tokens), **opts)
    for _ in range(2):  # two epochs: the shuffle changes
        want = [b.clone() for b in ref]
        got = [b.clone() for b in fast]
        _assert_same(got, want)
        assert fast.state_dict() == ref.state_dict()
    # Bundles were sent (1, 2, 4, ... up to 32 batches), far fewer messages than batches.
    assert sum(bundle_spy) == 2 * len(got)
    assert max(bundle_spy) == 32 and len(bundle_spy) < len(got)
    if not drop_last:  # every block of the dataset, exactly once
        every = [torch.from_numpy(np.asarray(x)).reshape(1, -1) for x in StreamingDataset(
            str(tokens), item_loader=TokensLoader(BLOCK))]  # fmt: skip
        assert _blocks(got) == _blocks(every)


@pytest.mark.parametrize("done", [1, 2, 7, 40, 101])
def test_resume_inside_a_bundle(tokens: Path, done: int) -> None:
    opts = {"batch_size": 3, "num_workers": 2, "shuffle": True}
    want = [b.clone() for b in _loader(str(tokens), per_item=True, **opts)]
    fast = _loader(str(tokens), **opts)
    it = iter(fast)
    head = [next(it).clone() for _ in range(done)]
    state = fast.state_dict()
    del it
    resumed = _loader(str(tokens), **opts)
    resumed.load_state_dict(state)
    _assert_same(head + [b.clone() for b in resumed], want)


def test_break_and_persistent_workers(tokens: Path) -> None:
    # A pass left mid-bundle: the next iter() starts a fresh epoch, nothing stale is replayed.
    opts = {"batch_size": 3, "num_workers": 2, "shuffle": True, "persistent_workers": True}
    ref = _loader(str(tokens), per_item=True, **opts)
    fast = _loader(str(tokens), **opts)
    for _ in range(2):
        for k, (a, b) in enumerate(zip(fast, ref, strict=False)):
            assert torch.equal(a, b)
            if k == 20:
                break
    _assert_same([b.clone() for b in fast], [b.clone() for b in ref])


def test_worker_without_batches(tmp_path: Path, bundle_spy: list[int]) -> None:
    # 2 batches for 4 workers: two workers send only their empty `last` bundle.
    write_tokens(tmp_path / "tiny", [np.arange(24, dtype=np.uint16)], chunk_size=24)
    opts = {"batch_size": 3, "num_workers": 4}
    want = list(_loader(str(tmp_path / "tiny"), per_item=True, **opts))
    _assert_same(list(_loader(str(tmp_path / "tiny"), **opts)), want)
    assert sum(bundle_spy) == len(want) == 2


def _torch_order(lengths: list[int], first: int, sizes: list[int]) -> tuple[list[Any], list[Any]]:
    """(items torch delivers: (worker, bundle) per worker per round; the batches unbundled)."""
    n_workers = len(lengths)
    workers = [(first + i) % n_workers for i in range(n_workers)]
    pending = {w: list(range(lengths[w])) for w in workers}
    items: list[tuple[int, Bundle]] = []
    active, r = list(workers), 0
    while active:
        n = sizes[min(r, len(sizes) - 1)]
        for w in list(active):
            take, pending[w] = pending[w][:n], pending[w][n:]
            # As Packer sends them: a short (or empty) bundle is the last one.
            last = len(take) < n
            items.append((w, Bundle([(w, b) for b in take], [1] * len(take), last)))
            if last:
                active.remove(w)
    expected, counts, live = [], [0] * n_workers, list(workers)
    while live:
        for w in list(live):
            if counts[w] == lengths[w]:
                live.remove(w)
                continue
            expected.append((w, counts[w]))
            counts[w] += 1
    return items, expected


def test_unbundle_order_matches_round_robin() -> None:
    """Round-robin over the active workers from ``first_worker``, a worker dropping out after its
    last batch; fed in torch's order (one bundle per worker per round)."""
    for first in range(4):
        items, expected = _torch_order([5, 9, 0, 7], first, [1, 2, 4])
        where = {batch: i for i, (_, bundle) in enumerate(items) for batch in bundle.data}
        current, pulled = [-1], [0]

        def source(
            items: list[tuple[int, Bundle]] = items, current: list[int] = current, pulled: list[int] = pulled
        ) -> Any:
            for w, bundle in items:
                current[0] = w
                pulled[0] += 1
                yield bundle

        got = []
        for batch in Unbundle(source(), lambda c=current: c[0], 4, first):
            got.append(batch)
            # Never reads ahead more than a round of bundles (a `last` bundle ends its worker).
            assert pulled[0] <= where[batch[0]] + 4
        assert got == [[b] for b in expected], first
        assert pulled[0] == len(items)


def test_packer_rows_share_one_buffer() -> None:
    made: list[int] = []

    def alloc(rows: int) -> tuple[Any, Any]:
        made.append(rows)
        a = np.zeros((rows, 2), np.int64)
        return a, a

    packer = Packer(alloc, 3, cap=4)

    def walk() -> Any:
        for i, rows in enumerate([3, 3, 3, 3, 3, 3, 3, 2]):
            batch, view = packer.new(rows)
            view[:] = i
            yield batch

    bundles = list(packer.bundles(walk()))
    assert [b.rows for b in bundles] == [[3], [3, 3], [3, 3, 3, 3], [2]]
    assert [b.last for b in bundles] == [False, False, False, True]
    assert made == [3, 6, 12, 12]  # one buffer per bundle, sized for its batches
    flat = [int(x[0, 0]) for b in bundles for x in b.batches()]
    assert flat == list(range(8))
    # Ending on a full bundle: an empty `last` one follows.
    packer = Packer(alloc, 3, cap=4)
    bundles = list(packer.bundles(batch for batch, _ in (packer.new(3) for _ in range(3))))
    assert [(b.rows, b.last) for b in bundles] == [([3], False), ([3, 3], False), ([], True)]


@pytest.mark.s3
def test_remote_bundles_byte_exact(
    s3_server: Any, tokens: Path, tmp_path: Path, bundle_spy: list[int]
) -> None:
    url = upload(s3_server, tokens, s3_server.new_url("bundled"))
    opts = {"batch_size": 3, "num_workers": 2, "shuffle": True}
    want = [b.clone() for b in _loader(str(tokens), **opts)]
    remote = _loader(
        url, cache_dir=str(tmp_path / "cache"), storage_options=s3_server.storage_options, **opts
    )
    _assert_same([b.clone() for b in remote], want)
    assert len(bundle_spy) < len(want)
