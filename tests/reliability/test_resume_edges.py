"""Resume edge cases (issue 8, items 2-4): persistent workers, early states, in_order=False.

Every check compares against a full uninterrupted run of a fresh, non-persistent loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aiolit import StreamingDataLoader, StreamingDataset
from aiolit.errors import StateDictError
from tests.streaming._data import write_dataset

N = 41  # 41 samples, chunks of 5, batch 4: the last batch of one worker is short


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOLIT_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("WORLD_SIZE", "RANK", "GLOBAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    os.environ.pop("MASTER_ADDR", None)


@pytest.fixture
def data(tmp_path: Path) -> str:
    path = tmp_path / "data"
    write_dataset(path, N, chunk_size=5)
    return str(path)


def _loader(path: str, **kwargs: Any) -> StreamingDataLoader:
    opts: dict[str, Any] = {"batch_size": 4, "num_workers": 2}
    opts.update(kwargs)
    return StreamingDataLoader(StreamingDataset(path, shuffle=True, seed=3), **opts)


def _epoch(loader: StreamingDataLoader, stop: int | None = None) -> list[list[int]]:
    out = []
    for batch in loader:
        out.append(batch["i"].tolist())
        if stop is not None and len(out) == stop:
            break
    return out


def _reference(path: str, epochs: int) -> list[list[list[int]]]:
    ref = _loader(path)
    return [_epoch(ref) for _ in range(epochs)]


def test_persistent_workers_break_mid_epoch_next_epoch_matches_non_persistent(data: str) -> None:
    ref = _reference(data, 4)
    assert ref[0] != ref[1]  # the shuffle differs per epoch: a replay would be visible
    loader = _loader(data, persistent_workers=True)
    assert _epoch(loader, stop=3) == ref[0][:3]
    assert _epoch(loader) == ref[1]  # not a replay of epoch 1
    assert _epoch(loader) == ref[2]  # the same workers, no break
    assert _epoch(loader, stop=1) == ref[3][:1]
    assert _epoch(loader) == _reference(data, 5)[4]


def test_persistent_workers_load_state_dict_after_workers_exist(data: str) -> None:
    ref_loader = _loader(data)
    full = [_epoch(ref_loader) for _ in range(2)]
    ref_loader = _loader(data)
    taken = _epoch(ref_loader, stop=4)
    state = ref_loader.state_dict()
    assert taken == full[0][:4]

    loader = _loader(data, persistent_workers=True)
    _epoch(loader)  # the persistent workers exist and have moved on
    _epoch(loader, stop=2)
    loader.load_state_dict(state)
    rest = _epoch(loader)
    assert rest == full[0][4:]
    got = sorted(i for b in taken + rest for i in b)
    assert got == list(range(N))  # no duplicates, no gaps
    assert _epoch(loader) == full[1]


def test_state_dict_before_first_batch_resumes_as_epoch_1(data: str) -> None:
    ref = _reference(data, 2)
    for persistent in (False, True):
        early = _loader(data, persistent_workers=persistent)
        state = early.state_dict()
        assert state["current_epoch"] == 0
        resumed = _loader(data, persistent_workers=persistent)
        resumed.load_state_dict(state)
        assert _epoch(resumed) == ref[0]
        assert _epoch(resumed) == ref[1]
        # Loaded into a loader that already ran: the next pass is epoch 1 again.
        resumed.load_state_dict(state)
        assert _epoch(resumed) == ref[0]


def test_state_dict_after_iter_before_first_batch_resumes_the_same_epoch(data: str) -> None:
    ref = _reference(data, 2)
    loader = _loader(data)
    _epoch(loader)
    it = iter(loader)
    assert next(it)["i"].tolist() == ref[1][0]
    # A state taken at the start of epoch 2 (nothing of it consumed) resumes epoch 2 whole.
    fresh = _loader(data)
    _epoch(fresh)
    state = fresh.state_dict()  # end of epoch 1
    resumed = _loader(data)
    resumed.load_state_dict(state)
    assert _epoch(resumed) == ref[1]


def _slow_worker_0(sample: Any) -> Any:
    """A transform that makes worker 0 slow, so that batches complete out of order."""
    import time

    from torch.utils.data import get_worker_info

    info = get_worker_info()
    if info is not None and info.id == 0:
        time.sleep(0.02)
    return sample


def test_in_order_false_resume_is_exact(data: str) -> None:
    def unordered() -> StreamingDataLoader:
        ds = StreamingDataset(data, shuffle=True, seed=3, transform=_slow_worker_0)
        return StreamingDataLoader(ds, batch_size=4, num_workers=2, in_order=False)

    full = list(range(N))
    for cut in (2, 5):
        loader = unordered()
        taken = _epoch(loader, stop=cut)
        state = loader.state_dict()
        assert "worker_counts" in state["dataset"]
        resumed = unordered()
        resumed.load_state_dict(state)
        rest = _epoch(resumed)
        got = sorted(i for b in taken + rest for i in b)
        assert got == full, f"cut after {cut} batches"
        assert sorted(i for b in _epoch(resumed) for i in b) == full  # the next epoch is whole


def test_in_order_false_with_a_wrapper_refuses_state_dict(data: str) -> None:
    from aiolit import CombinedStreamingDataset

    combined = CombinedStreamingDataset(
        [StreamingDataset(data), StreamingDataset(data)], iterate_over_all=True
    )
    loader = StreamingDataLoader(combined, batch_size=4, num_workers=2, in_order=False)
    _epoch(loader, stop=1)
    with pytest.raises(StateDictError, match="in_order=False"):
        loader.state_dict()


def test_building_a_loader_does_not_change_the_dataset(data: str) -> None:
    from aiolit import CombinedStreamingDataset

    ds = StreamingDataset(data)
    before = [int(x["i"]) for x in ds]
    assert before == list(range(N))
    StreamingDataLoader(ds, num_workers=2, batch_size=4)
    assert [int(x["i"]) for x in ds] == before
    a, b = StreamingDataset(data), StreamingDataset(data)
    combined = CombinedStreamingDataset([a, b], iterate_over_all=True, seed=1)
    alone = sorted(int(x["i"]) for x in combined)
    StreamingDataLoader(combined, num_workers=2, batch_size=4)
    assert sorted(int(x["i"]) for x in combined) == alone == sorted(list(range(N)) * 2)


def test_end_of_epoch_state_of_another_dataset_carries_the_epoch(data: str, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write_dataset(other, 23, chunk_size=4)
    src = _loader(str(other))
    _epoch(src)
    end_state = src.state_dict()
    ref = _reference(data, 3)
    loader = _loader(data)
    loader.load_state_dict(end_state)  # accepted: only the epoch (1, finished) carries over
    assert _epoch(loader) == ref[1]
    assert _epoch(loader) == ref[2]
    # Mid-epoch, a different layout is still refused with a clear error.
    src = _loader(str(other))
    _epoch(src, stop=2)
    with pytest.raises(StateDictError, match="does not match"):
        _loader(data).load_state_dict(src.state_dict())
