"""train_test_split and StreamingDataset.subset."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiolit.streaming import StreamingDataLoader, StreamingDataset
from aiolit.streaming.split import train_test_split
from tests.streaming.test_combined import write_range


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    write_range(tmp_path / "d", 0, 100, chunk_size=7)
    return str(tmp_path / "d")


def test_readme_split(data_dir: str) -> None:
    dataset = StreamingDataset(data_dir)
    assert len(dataset) == 100
    train_dataset, val_dataset, test_dataset = train_test_split(dataset, splits=[0.3, 0.2, 0.5])
    assert [len(train_dataset), len(val_dataset), len(test_dataset)] == [30, 20, 50]
    parts = [[x["i"] for x in d] for d in (train_dataset, val_dataset, test_dataset)]
    assert sorted(parts[0] + parts[1] + parts[2]) == list(range(100))
    # random access and the loader see the same samples
    assert [train_dataset[k]["i"] for k in range(30)] == parts[0]
    loader = StreamingDataLoader(val_dataset, batch_size=4, num_workers=2, shuffle=True)
    assert sorted(i for b in loader for i in b["i"].tolist()) == sorted(parts[1])
    assert all(
        len(d) == n for d, n in zip((train_dataset, val_dataset, test_dataset), (30, 20, 50), strict=True)
    )
    # deterministic per seed, different for another seed
    again = train_test_split(StreamingDataset(data_dir), splits=[0.3, 0.2, 0.5])
    assert [[x["i"] for x in d] for d in again] == parts
    other = train_test_split(StreamingDataset(data_dir), splits=[0.3, 0.2, 0.5], seed=1)
    assert [x["i"] for x in other[0]] != parts[0]
    assert len(dataset) == 100  # the source is untouched


def test_split_without_shuffle_is_contiguous(data_dir: str) -> None:
    train, val = train_test_split(StreamingDataset(data_dir), splits=[0.8, 0.1], shuffle=False)
    assert [x["i"] for x in train] == list(range(80))
    assert [x["i"] for x in val] == list(range(80, 90))


def test_split_resume_state_names_its_regions(data_dir: str) -> None:
    train, _ = train_test_split(StreamingDataset(data_dir), splits=[0.5, 0.5])

    def loader() -> StreamingDataLoader:
        return StreamingDataLoader(
            train_test_split(StreamingDataset(data_dir), splits=[0.5, 0.5])[0], batch_size=5
        )

    reference = [b["i"].tolist() for b in loader()]
    first = loader()
    seen = []
    for b in first:
        seen.append(b["i"].tolist())
        if len(seen) == 3:
            break
    state = first.state_dict()
    assert sum(e - s for s, e in state["dataset"]["region_of_interest"]) == 50
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + [b["i"].tolist() for b in resumed] == reference
    assert len(train) == 50


def test_split_errors(data_dir: str) -> None:
    ds = StreamingDataset(data_dir)
    with pytest.raises(ValueError, match="float"):
        train_test_split(ds, splits=[1, 0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="sum"):
        train_test_split(ds, splits=[0.6, 0.6])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_test_split(ds, splits=[1.5])
    with pytest.warns(UserWarning, match="empty"):
        assert len(train_test_split(ds, splits=[0.5, 0.0])[1]) == 0


def test_subset(data_dir: str) -> None:
    ds = StreamingDataset(data_dir)
    picked = [3, 4, 5, 50, 99, 0, 1]
    sub = ds.subset(picked)
    assert len(sub) == 7
    assert [x["i"] for x in sub] == picked
    assert [sub[k]["i"] for k in range(7)] == picked
    assert [x["i"] for x in ds.subset(slice(10, 30, 2))] == list(range(10, 30, 2))
    # subset of a subset, of a split
    assert [x["i"] for x in sub.subset([1, 2])] == [4, 5]
    with pytest.raises(ValueError, match="outside"):
        ds.subset([100])
    # shuffle on a subset shuffles its own samples only
    shuffled = StreamingDataset(data_dir, shuffle=True).subset(range(20, 40))
    got = [x["i"] for x in StreamingDataLoader(shuffled, batch_size=1, shuffle=True)]
    assert sorted(int(i) for i in got) == list(range(20, 40))
