"""TokensLoader batches: with the default collate, a StreamingDataLoader's workers build each batch
as one tensor (``copy_token_blocks``). Everything observable must match the per-item path (forced
here with ``collate_fn=default_collate``): batches, short batches, length, resume, state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from aiolit.streaming import StreamingDataLoader, StreamingDataset, TokensLoader
from tests.streaming._data import write_tokens

BLOCK = 8


def _seqs(kind: str, n: int = 40, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    dtype = {"tensor": np.int32, "numpy": np.uint16, "int64": np.int64}[kind]
    seqs = [rng.integers(0, 60_000, size=int(rng.integers(3, 30)), dtype=dtype) for _ in range(n)]
    return [torch.from_numpy(s) for s in seqs] if kind == "tensor" else seqs


@pytest.fixture(scope="module")
def token_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("token-batches")
    dirs = {}
    for kind in ("tensor", "numpy", "int64"):
        # Chunks of 4..12 blocks with ragged tails: batches span chunks.
        write_tokens(root / kind, _seqs(kind), chunk_size=77)
        dirs[kind] = str(root / kind)
    return dirs


def _loader(path: str, *, per_item: bool = False, **kwargs: Any) -> StreamingDataLoader:
    ds_args = {k: kwargs.pop(k) for k in ("shuffle", "drop_last", "transform") if k in kwargs}
    ds = StreamingDataset(path, item_loader=TokensLoader(BLOCK), **ds_args)
    if per_item:
        kwargs["collate_fn"] = default_collate
    return StreamingDataLoader(ds, **kwargs)


def _assert_same(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert isinstance(a, torch.Tensor), f"batch {i} is a {type(a).__name__}"
        assert a.dtype == b.dtype and a.shape == b.shape, (i, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(a, b), f"batch {i} differs"


@pytest.mark.parametrize("kind", ["tensor", "numpy", "int64"])
@pytest.mark.parametrize(("batch_size", "num_workers"), [(1, 0), (5, 0), (8, 2), (3, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_equal_per_item(
    token_dirs: dict[str, str], kind: str, batch_size: int, num_workers: int, shuffle: bool
) -> None:
    opts = {"batch_size": batch_size, "num_workers": num_workers, "shuffle": shuffle}
    fast = _loader(token_dirs[kind], **opts)
    ref = _loader(token_dirs[kind], per_item=True, **opts)
    assert fast._dataset_batches and not ref._dataset_batches
    assert fast.batch_size == batch_size
    assert len(fast) == len(ref)
    for _ in range(2):  # two epochs (the shuffle changes)
        want = list(ref)
        got = list(fast)
        _assert_same(got, want)
        assert len(got) == len(fast)
        assert fast.state_dict() == ref.state_dict()
    if num_workers and batch_size > 1:
        # Each worker ends with its own short batch, as torch's batching gives.
        assert sum(len(b) < batch_size for b in got) >= 1


def test_numpy_tokens_collate_to_tensor(token_dirs: dict[str, str]) -> None:
    ds = StreamingDataset(token_dirs["numpy"], item_loader=TokensLoader(BLOCK))
    items = list(ds)
    assert isinstance(items[0], np.ndarray)
    batches = list(StreamingDataLoader(ds, batch_size=4))
    assert batches[0].dtype == torch.uint16
    _assert_same(batches, [default_collate(items[i : i + 4]) for i in range(0, len(items), 4)])
    # The loader's flag never leaks into plain iteration of its dataset.
    assert all(isinstance(x, np.ndarray) and x.shape == (BLOCK,) for x in ds)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_drop_last(token_dirs: dict[str, str], num_workers: int) -> None:
    opts = {"batch_size": 4, "num_workers": num_workers, "drop_last": True}
    fast, ref = _loader(token_dirs["tensor"], **opts), _loader(token_dirs["tensor"], per_item=True, **opts)
    _assert_same(list(fast), list(ref))
    assert len(fast) == len(ref)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_after_every_batch(token_dirs: dict[str, str], num_workers: int, shuffle: bool) -> None:
    opts = {"batch_size": 5, "num_workers": num_workers, "shuffle": shuffle}
    path = token_dirs["tensor"]
    ref = _loader(path, per_item=True, **opts)
    epochs = [list(ref), list(ref)]
    fast = _loader(path, **opts)
    ref = _loader(path, per_item=True, **opts)
    states: list[tuple[int, int, dict[str, Any]]] = []  # (epoch, batches done, state)
    for e in range(2):
        for k, (a, b) in enumerate(zip(fast, ref, strict=True)):
            assert torch.equal(a, b)
            state = fast.state_dict()
            assert state == ref.state_dict()
            assert state["num_samples_yielded"] == (k + 1) * 5
            states.append((e, k + 1, state))
    for e, done, state in states:
        resumed = _loader(path, **opts)
        resumed.load_state_dict(state)
        got = list(resumed)
        if done == len(epochs[e]):
            want = epochs[1] if e == 0 else []  # a finished epoch resumes into the next one
            got = got if e == 0 else []
        else:
            want = epochs[e][done:]
        _assert_same(got, want)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_state_from_per_item_loader(token_dirs: dict[str, str], num_workers: int) -> None:
    # The two paths share one state format: a per-item state resumes a batched loader exactly.
    opts = {"batch_size": 3, "num_workers": num_workers, "shuffle": True}
    ref = _loader(token_dirs["numpy"], per_item=True, **opts)
    it = iter(ref)
    head = [next(it) for _ in range(5)]
    state = ref.state_dict()
    tail = list(it)
    resumed = _loader(token_dirs["numpy"], **opts)
    resumed.load_state_dict(state)
    _assert_same(list(resumed), tail)
    assert len(head) + len(tail) == len(resumed)


class _Sub(StreamingDataset):
    def __getitem__(self, index: Any) -> Any:
        return super().__getitem__(index) + 1


def _plus_one(x: Any) -> Any:
    return x + 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fallbacks_to_per_item(token_dirs: dict[str, str], num_workers: int) -> None:
    path = token_dirs["tensor"]
    opts: dict[str, Any] = {"batch_size": 4, "num_workers": num_workers}
    plain = list(_loader(path, per_item=True, **opts))

    with_transform = _loader(path, transform=_plus_one, **opts)
    assert not with_transform._dataset_batches
    _assert_same(list(with_transform), [b + 1 for b in plain])

    custom = StreamingDataLoader(
        StreamingDataset(path, item_loader=TokensLoader(BLOCK)),
        collate_fn=lambda b: default_collate(b),
        **opts,
    )
    assert not custom._dataset_batches
    _assert_same(list(custom), plain)

    sub = StreamingDataLoader(_Sub(path, item_loader=TokensLoader(BLOCK)), **opts)
    assert not sub._dataset_batches
    _assert_same(list(sub), [b + 1 for b in plain])

    # A transform set after the loader was built: the dataset collates its items itself.
    late = _loader(path, **opts)
    assert late._dataset_batches
    late.dataset.transform = _plus_one  # type: ignore[attr-defined]
    _assert_same(list(late), [b + 1 for b in plain])


def test_pytree_datasets_keep_torch_batching(tmp_path: Path) -> None:
    from tests.streaming._data import write_dataset

    write_dataset(tmp_path / "d", 10)
    loader = StreamingDataLoader(StreamingDataset(str(tmp_path / "d")), batch_size=4)
    assert not loader._dataset_batches
    assert [b["i"].tolist() for b in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_large_batches_travel_in_shared_memory(
    token_dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiolit.streaming.dataset as dataset_module

    monkeypatch.setattr(dataset_module, "_PIPE_BYTES", 0)  # forked workers see it too
    opts = {"batch_size": 6, "num_workers": 2, "shuffle": True}
    _assert_same(
        list(_loader(token_dirs["int64"], **opts)), list(_loader(token_dirs["int64"], per_item=True, **opts))
    )
