"""StreamingDataset over local data: epochs, shuffle, random access, transforms, loaders, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aiolit.errors import EncryptionError
from aiolit.format import FernetEncryption
from aiolit.streaming import Dir, StreamingDataset, TokensLoader
from tests.streaming._data import ids, sample, write_tokens


def test_import_does_not_import_torch() -> None:
    code = "import aiolit, aiolit.streaming, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_full_epoch_in_order(make_dataset: Any) -> None:
    path, items = make_dataset(50)
    ds = StreamingDataset(path)
    assert len(ds) == 50
    assert list(ds) == items
    assert list(ds) == items  # a second epoch, unshuffled, is the same


def test_local_prefix_goes_through_the_cache(make_dataset: Any, tmp_path: Path) -> None:
    path, items = make_dataset(30)
    ds = StreamingDataset(f"local:{path}", cache_dir=str(tmp_path / "c"))
    assert list(ds) == items
    assert ds.source.cache_dir is not None and str(ds.source.cache_dir).startswith(str(tmp_path / "c"))
    assert any(p.name.startswith("chunk-") for p in ds.source.cache_dir.iterdir())


def test_shuffle_is_deterministic_and_covers_everything(make_dataset: Any) -> None:
    path, _ = make_dataset(60)
    a = ids(list(StreamingDataset(path, shuffle=True, seed=3)))
    b = ids(list(StreamingDataset(path, shuffle=True, seed=3)))
    c = ids(list(StreamingDataset(path, shuffle=True, seed=4)))
    assert a == b
    assert sorted(a) == list(range(60))
    assert a != list(range(60)) and a != c


def test_each_epoch_reshuffles(make_dataset: Any) -> None:
    path, _ = make_dataset(60)
    ds = StreamingDataset(path, shuffle=True)
    e1, e2 = ids(list(ds)), ids(list(ds))
    assert sorted(e1) == sorted(e2) == list(range(60))
    assert e1 != e2
    ds.set_epoch(1)
    assert ids(list(ds)) == e1


def test_getitem_and_slices(make_dataset: Any) -> None:
    path, items = make_dataset(20)
    ds = StreamingDataset(path, transform=lambda x: x["i"] * 10)
    assert ds[3] == 30
    assert ds[-1] == 190
    assert ds[1:4] == items[1:4]  # no transform on slices, as LitData
    with pytest.raises(IndexError, match="length 20"):
        ds[20]


def test_transform_list_and_subclasses(make_dataset: Any) -> None:
    path, _ = make_dataset(15)
    ds = StreamingDataset(path, transform=[lambda x: x["i"], lambda i: i + 1])
    assert list(ds) == [i + 1 for i in range(15)]

    class WithGetitem(StreamingDataset):
        def __getitem__(self, index: Any) -> Any:
            return ("seen", super().__getitem__(index)["i"])

    sub = WithGetitem(path)
    assert list(sub) == [("seen", i) for i in range(15)]
    assert sub[2] == ("seen", 2)

    class WithTransform(StreamingDataset):
        def transform(self, x: Any) -> Any:
            return -x["i"]

    assert list(WithTransform(path)) == [-i for i in range(15)]


def test_subsample_and_upsample(make_dataset: Any) -> None:
    path, _ = make_dataset(50)
    half = StreamingDataset(path, subsample=0.5)
    assert len(half) == 25 and ids(list(half)) == list(range(25))
    up = StreamingDataset(path, subsample=2.0, shuffle=True)
    got = ids(list(up))
    assert len(got) == 100 and sorted(got) == sorted(list(range(50)) * 2)


def test_world_sizes_partition_disjointly(make_dataset: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = make_dataset(101, chunk_size=10)
    for world in (1, 2, 3, 4):
        for shuffle in (False, True):
            seen: list[int] = []
            counts = []
            for rank in range(world):
                monkeypatch.setenv("WORLD_SIZE", str(world))
                monkeypatch.setenv("RANK", str(rank))
                ds = StreamingDataset(path, shuffle=shuffle, drop_last=False)
                got = ids(list(ds))
                assert len(ds) == len(got)
                counts.append(len(got))
                seen += got
            assert sorted(seen) == list(range(101)), (world, shuffle)
            assert counts[:-1] == [101 // world] * (world - 1)


def test_drop_last_defaults_to_true_when_distributed(
    make_dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = make_dataset(101, chunk_size=10)
    monkeypatch.setenv("WORLD_SIZE", "2")
    lengths = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        lengths.append(len(list(StreamingDataset(path))))
    assert lengths == [50, 50]


def test_tokens_loader_blocks(tmp_path: Path) -> None:
    seqs = [np.arange(i * 100, i * 100 + 5 + i, dtype=np.int32) for i in range(4)]
    write_tokens(tmp_path / "t", seqs, chunk_size=12)
    ds = StreamingDataset(str(tmp_path / "t"), item_loader=TokensLoader(block_size=4))
    blocks = [b.tolist() for b in ds]
    # Blocks never cross chunks; each chunk's tail is dropped (LITDATA.md §1.7).
    assert blocks == [
        [0, 1, 2, 3],
        [4, 100, 101, 102],
        [200, 201, 202, 203],
        [300, 301, 302, 303],
        [304, 305, 306, 307],
    ]
    assert len(ds) == 5
    assert ds[1].tolist() == [4, 100, 101, 102]


def test_compressed_dataset_is_decompressed_into_the_cache(make_dataset: Any, tmp_path: Path) -> None:
    path, items = make_dataset(40, compression="zstd")
    assert any(p.endswith(".zstd.bin") for p in map(str, Path(path).iterdir()))
    before = sorted(p.name for p in Path(path).iterdir())
    ds = StreamingDataset(path)
    assert list(ds) == items and ds[5] == items[5]
    assert sorted(p.name for p in Path(path).iterdir()) == before  # source untouched


@pytest.mark.parametrize("level", ["sample", "chunk"])
def test_encrypted_dataset(make_dataset: Any, level: str) -> None:
    enc = FernetEncryption("secret", level=level)
    path, items = make_dataset(20, encryption=enc)
    assert list(StreamingDataset(path, encryption=enc)) == items
    with pytest.raises(EncryptionError):
        StreamingDataset(path)


def test_dir_with_path_and_url(make_dataset: Any, tmp_path: Path) -> None:
    path, items = make_dataset(10)
    cache = tmp_path / "mycache"
    ds = StreamingDataset(Dir(path=str(cache), url=f"local:{path}"))
    assert list(ds) == items
    assert (cache / "index.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shuffle": "yes"}, "shuffle"),
        ({"drop_last": 1}, "drop_last"),
        ({"seed": -1}, "seed"),
        ({"subsample": 0}, "subsample"),
        ({"max_cache_size": "lots"}, "max_cache_size"),
        ({"max_pre_download": -1}, "max_pre_download"),
        ({"item_loader": "tokens"}, "item_loader"),
        ({"item_loader": TokensLoader(4)}, "item_loader"),
        ({"transform": 3}, "transform"),
        ({"storage_options": "x"}, "storage_options"),
    ],
)
def test_bad_arguments(make_dataset: Any, kwargs: dict[str, Any], match: str) -> None:
    path, _ = make_dataset(5)
    with pytest.raises(ValueError, match=match):
        StreamingDataset(path, **kwargs)


def test_bad_input_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input_dir"):
        StreamingDataset("")
    with pytest.raises(ValueError, match="scheme"):
        StreamingDataset("ftp://host/x")
    with pytest.raises(FileNotFoundError, match=r"no index\.json"):
        (tmp_path / "empty").mkdir()
        StreamingDataset(str(tmp_path / "empty"))


def test_sample_helper_sanity() -> None:
    assert sample(3) == {"i": 3, "s": "xxx"}
