"""StreamingDataLoader: workers (fork/spawn), state_dict/resume exactness, profiling, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiolit.errors import StateDictError
from aiolit.streaming import StreamingDataLoader, StreamingDataset


def batches_of(loader: StreamingDataLoader, limit: int | None = None) -> list[list[int]]:
    out = []
    for batch in loader:
        out.append(batch["i"].tolist())
        if limit is not None and len(out) == limit:
            break
    return out


@pytest.mark.parametrize("num_workers", [0, 2])
def test_full_epoch_with_workers(make_dataset: Any, num_workers: int) -> None:
    path, _ = make_dataset(37, chunk_size=5)
    loader = StreamingDataLoader(StreamingDataset(path), batch_size=4, num_workers=num_workers)
    got = [i for b in batches_of(loader) for i in b]
    assert sorted(got) == list(range(37))
    assert len(loader) == len(batches_of(loader))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_worker_start_methods(make_dataset: Any, context: str) -> None:
    path, _ = make_dataset(30, chunk_size=4)
    loader = StreamingDataLoader(
        StreamingDataset(f"local:{path}", shuffle=True),
        batch_size=3,
        num_workers=2,
        multiprocessing_context=context,
    )
    got = [i for b in batches_of(loader) for i in b]
    assert sorted(got) == list(range(30))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_after_every_batch_matches_uninterrupted_run(
    make_dataset: Any, num_workers: int, shuffle: bool
) -> None:
    # 37 samples, batch 4, 2 workers: workers get 5 and 5 batches, one of them short.
    path, _ = make_dataset(37, chunk_size=5)

    def loader() -> StreamingDataLoader:
        return StreamingDataLoader(
            StreamingDataset(path, shuffle=shuffle, seed=7), batch_size=4, num_workers=num_workers
        )

    reference = loader()
    states = []
    full: list[list[int]] = []
    for _epoch in range(2):
        for batch in reference:
            full.append(batch["i"].tolist())
            states.append(reference.state_dict())
    per_epoch = len(full) // 2
    assert sorted(i for b in full[:per_epoch] for i in b) == list(range(37))

    for cut in range(len(states) - 1):
        resumed = loader()
        resumed.load_state_dict(states[cut])
        rest = batches_of(resumed)
        if cut + 1 < per_epoch:
            rest += batches_of(resumed)  # the next epoch follows
        assert rest == full[cut + 1 :], f"cut after batch {cut}"


def test_state_from_another_dataset_is_refused(make_dataset: Any) -> None:
    path, _ = make_dataset(20)
    other, _ = make_dataset(21)
    loader = StreamingDataLoader(StreamingDataset(path, shuffle=True, seed=1), batch_size=2)
    next(iter(loader))
    state = loader.state_dict()
    with pytest.raises(StateDictError, match="seed"):
        StreamingDataLoader(StreamingDataset(path, shuffle=True, seed=2), batch_size=2).load_state_dict(state)
    with pytest.raises(StateDictError, match="input_dir"):
        StreamingDataLoader(StreamingDataset(other, shuffle=True, seed=1), batch_size=2).load_state_dict(
            state
        )
    forced = StreamingDataLoader(
        StreamingDataset(path, shuffle=True, seed=2, force_override_state_dict=True), batch_size=2
    )
    forced.load_state_dict(state)
    assert len([i for b in batches_of(forced) for i in b]) == 18
    with pytest.raises(StateDictError):
        loader.load_state_dict({"nope": 1})


def test_state_dict_keys_match_litdata(make_dataset: Any) -> None:
    path, _ = make_dataset(20)
    loader = StreamingDataLoader(StreamingDataset(path), batch_size=4, num_workers=2)
    it = iter(loader)
    next(it)
    next(it)
    state = loader.state_dict()
    assert set(state) == {"dataset", "current_epoch", "num_samples_yielded", "latest_worker_idx"}
    assert state["num_samples_yielded"] == 8 and state["latest_worker_idx"] == 1
    assert {"num_samples_yielded", "num_workers", "batch_size", "current_epoch", "input_dir_path", "input_dir_url",
            "cache_dir_path", "item_loader", "drop_last", "seed", "shuffle", "world_size", "subsampled_files",
            "region_of_interest"} == set(state["dataset"])  # fmt: skip
    del it


def test_shuffle_and_drop_last_forwarded(make_dataset: Any) -> None:
    path, _ = make_dataset(10)
    ds = StreamingDataset(path)
    loader = StreamingDataLoader(ds, batch_size=4, shuffle=True, drop_last=True)
    assert ds.shuffle and ds.drop_last
    assert sum(len(b) for b in batches_of(loader)) == 8


def test_profile_batches_writes_a_chrome_trace(make_dataset: Any, tmp_path: Path) -> None:
    path, _ = make_dataset(20)
    loader = StreamingDataLoader(
        StreamingDataset(path), batch_size=2, profile_batches=3, profile_dir=str(tmp_path)
    )
    batches_of(loader)
    trace = json.loads((tmp_path / "result.json").read_text())
    events = trace["traceEvents"]
    assert len(events) == 3 and all(e["ph"] == "X" and e["dur"] >= 0 and "ts" in e for e in events)


def test_bad_loader_arguments(make_dataset: Any) -> None:
    path, _ = make_dataset(5)
    ds = StreamingDataset(path)
    with pytest.raises(RuntimeError, match="StreamingDataset"):
        StreamingDataLoader([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        StreamingDataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        StreamingDataLoader(ds, num_workers=-1)
    with pytest.raises(ValueError, match="profile_batches"):
        StreamingDataLoader(ds, profile_batches=-2)
    with pytest.raises(ValueError, match="shuffle"):
        StreamingDataLoader(ds, shuffle="no")  # type: ignore[arg-type]
