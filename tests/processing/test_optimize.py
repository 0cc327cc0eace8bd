"""optimize(): the README examples with aiolit in place of litdata, read back two ways."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import aiolit.processing as ld
from aiolit.errors import OptimizeError
from tests.processing import fns
from tests.processing.readback import read_aiolit, read_index, read_litdata

FORK = "fork"  # fast worker start in tests; spawn is covered once below


def _children() -> list[Any]:
    return [p for p in multiprocessing.active_children() if p.is_alive()]


def test_readme_random_images_spawn(tmp_path: Path) -> None:
    out = str(tmp_path / "fast_data")
    ld.optimize(
        fn=fns.image_sample,
        inputs=list(range(30)),
        output_dir=out,
        num_workers=2,
        chunk_bytes="64MB",
        start_method="spawn",
        verbose=False,
    )
    index = read_index(out)
    assert index["config"]["data_format"][0] == "int"
    assert sorted(c["filename"] for c in index["chunks"]) == ["chunk-0-0.bin", "chunk-1-0.bin"]
    assert "updated_at" in index
    expected = [fns.image_sample(i) for i in range(30)]
    for reader in (read_aiolit, read_litdata):
        got = reader(out)
        assert len(got) == 30
        for sample, want in zip(got, expected, strict=True):
            assert sample["index"] == want["index"]
            assert sample["class"] == want["class"]
            assert np.array_equal(np.asarray(sample["image"]), np.asarray(want["image"]))


def test_ordered_split_ranks_and_env(tmp_path: Path) -> None:
    out = str(tmp_path)
    ld.optimize(
        fns.with_rank, list(range(20)), out, chunk_size=4, num_workers=3, start_method=FORK, verbose=False
    )
    samples = read_aiolit(out)
    assert [s["i"] for s in samples] == list(range(20))
    # LitData's sequential split: 6/7/7, writer rank = worker index
    assert [s["rank"] for s in samples] == [0] * 6 + [1] * 7 + [2] * 7
    assert {(s["workers"], s["nodes"]) for s in samples} == {(3, 1)}
    assert [s["i"] for s in read_litdata(out)] == list(range(20))
    assert not list(Path(out).glob("*.index.json"))  # shards are cleaned up


def test_readme_filter_generator(tmp_path: Path) -> None:
    out = str(tmp_path / "only_even_index_optimized")
    ld.optimize(fn=fns.keep_even, inputs=list(range(1000)), output_dir=out, chunk_bytes="64MB", num_workers=1)
    expected = list(range(0, 1000, 2))
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected


def test_readme_try_except(tmp_path: Path) -> None:
    out = str(tmp_path / "only_defined_ratio_optimized")
    ld.optimize(
        fns.safe_inverse, [0, 0, 0, 1, 2, 4, 0], out, chunk_bytes="64MB", num_workers=1, verbose=False
    )
    assert read_aiolit(out) == [1.0, 0.5, 0.25]
    assert read_litdata(out) == [1.0, 0.5, 0.25]


def test_none_filters_and_generators_expand(tmp_path: Path) -> None:
    ld.optimize(fns.odd_or_none, list(range(10)), str(tmp_path / "a"), chunk_size=2, num_workers=2,
                start_method=FORK, verbose=False)  # fmt: skip
    assert read_aiolit(str(tmp_path / "a")) == [1, 3, 5, 7, 9]
    ld.optimize(fns.repeat_i, list(range(5)), str(tmp_path / "b"), chunk_size=3, num_workers=2,
                start_method=FORK, verbose=False)  # fmt: skip
    expected = [{"i": i, "k": k} for i in range(5) for k in range(i)]
    assert read_aiolit(str(tmp_path / "b")) == expected
    assert read_litdata(str(tmp_path / "b")) == expected


def test_readme_append_and_overwrite(tmp_path: Path) -> None:
    out = str(tmp_path / "my_optimized_dataset")
    ld.optimize(fns.square_pair, list(range(100)), out, chunk_bytes="64MB", num_workers=2, start_method=FORK,
                verbose=False)  # fmt: skip
    with pytest.raises(OptimizeError, match="already contains an optimized"):
        ld.optimize(fns.square_pair, [1], out, chunk_bytes="64MB", num_workers=1, verbose=False)
    ld.optimize(fns.square_pair, list(range(100, 200)), out, chunk_bytes="64MB", num_workers=2,
                start_method=FORK, mode="append", verbose=False)  # fmt: skip
    names = [c["filename"] for c in read_index(out)["chunks"]]
    assert names == ["chunk-0-0.bin", "chunk-1-0.bin", "chunk-0-1.bin", "chunk-1-1.bin"]
    expected = [(i, i**2) for i in range(200)]
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected

    ld.optimize(fns.square_pair, list(range(5)), out, chunk_size=2, num_workers=1, mode="overwrite",
                verbose=False)  # fmt: skip
    assert read_aiolit(out) == [(i, i**2) for i in range(5)]
    assert sorted(os.listdir(out)) == ["chunk-0-0.bin", "chunk-0-1.bin", "chunk-0-2.bin", "index.json"]


def test_append_with_other_config_is_a_clear_error(tmp_path: Path) -> None:
    out = str(tmp_path)
    ld.optimize(fns.identity, [1, 2], out, chunk_size=2, num_workers=1, verbose=False)
    with pytest.raises(OptimizeError, match="cannot merge"):
        ld.optimize(fns.identity, ["a"], out, chunk_size=2, num_workers=1, mode="append", verbose=False)
    assert read_aiolit(out) == [1, 2]  # the old index is untouched


def test_readme_zstd(tmp_path: Path) -> None:
    out = str(tmp_path)
    ld.optimize(fns.square_pair, list(range(100)), out, chunk_bytes="64MB", num_workers=1, compression="zstd",
                verbose=False)  # fmt: skip
    assert os.listdir(out).count("chunk-0-0.zstd.bin") == 1
    assert read_index(out)["config"]["compression"] == "zstd"
    expected = [(i, i**2) for i in range(100)]
    assert read_aiolit(out) == expected
    pytest.importorskip("zstd", reason="litdata reads zstd chunks only with the `zstd` package")
    assert read_litdata(out) == expected


@pytest.mark.parametrize("level", ["sample", "chunk"])
def test_readme_fernet(tmp_path: Path, level: str) -> None:
    from aiolit.format import FernetEncryption

    out = str(tmp_path / "data")
    fernet = FernetEncryption(password="your_secure_password", level=level)
    ld.optimize(fns.image_sample, list(range(5)), out, num_workers=1, chunk_bytes="64MB", encryption=fernet,
                verbose=False)  # fmt: skip
    assert read_index(out)["config"]["encryption"] == {"algorithm": "fernet", "level": level}
    got = read_aiolit(out, encryption=fernet)
    assert [s["index"] for s in got] == list(range(5))
    assert np.array_equal(np.asarray(got[3]["image"]), np.asarray(fns.image_sample(3)["image"]))
    key = str(tmp_path / "fernet.pem")
    fernet.save(key)
    litdata_enc = pytest.importorskip("litdata.utilities.encryption")
    oracle = read_litdata(out, encryption=litdata_enc.FernetEncryption.load(key, "your_secure_password"))
    assert [s["class"] for s in oracle] == [fns.image_sample(i)["class"] for i in range(5)]


def _produce(q: Any) -> None:
    for i in range(50):
        q.put((i, i**2))
    q.put(ld.ALL_DONE)  # one sentinel, whatever the number of workers


def test_readme_queue_input(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context(FORK)
    q = ctx.Queue(maxsize=10)
    producer = ctx.Process(target=_produce, args=(q,))
    producer.start()
    out = str(tmp_path / "fast_data")
    ld.optimize(fn=fns.identity, queue=q, output_dir=out, num_workers=2, chunk_size=10, mode="overwrite",
                start_method=FORK, verbose=False)  # fmt: skip
    producer.join(timeout=30)
    expected = sorted((i, i**2) for i in range(50))
    assert sorted(read_aiolit(out)) == expected
    assert sorted(read_litdata(out)) == expected


def test_readme_unordered_shared_queue(tmp_path: Path) -> None:
    out = str(tmp_path)
    ld.optimize(fns.image_sample, list(range(40)), out, num_workers=2, chunk_bytes="64MB",
                keep_data_ordered=False, start_method=FORK, verbose=False)  # fmt: skip
    got = read_aiolit(out)
    assert sorted(s["index"] for s in got) == list(range(40))
    for sample in got:
        assert sample["class"] == fns.image_sample(sample["index"])["class"]
    assert sorted(s["index"] for s in read_litdata(out)) == list(range(40))


def test_readme_tokens_loader(tmp_path: Path) -> None:
    from aiolit.streaming.item_loader import TokensLoader

    out = str(tmp_path)
    ld.optimize(fns.tokens, list(range(12)), out, chunk_size=20, num_workers=2, item_loader=TokensLoader(),
                start_method=FORK, verbose=False)  # fmt: skip
    index = read_index(out)
    assert index["config"]["item_loader"] == "TokensLoader"
    expected = np.concatenate([next(fns.tokens(i)) for i in range(12)])
    assert sum(c["dim"] for c in index["chunks"]) == len(expected)
    litdata = pytest.importorskip("litdata")
    dataset = litdata.StreamingDataset(out, item_loader=litdata.TokensLoader(block_size=5))
    blocks = [np.asarray(dataset[i]) for i in range(len(dataset))]
    # Blocks never span chunks: each chunk's tail shorter than a block is not read.
    readable, start = [], 0
    for chunk in index["chunks"]:
        readable.append(expected[start : start + chunk["dim"] // 5 * 5])
        start += chunk["dim"]
    assert np.array_equal(np.concatenate(blocks), np.concatenate(readable))


def test_batch_size_and_fast_dev_run(tmp_path: Path) -> None:
    ld.optimize(fns.batch_sum, list(range(10)), str(tmp_path / "a"), chunk_size=2, num_workers=1, batch_size=3,
                verbose=False)  # fmt: skip
    assert read_aiolit(str(tmp_path / "a")) == [
        {"first": 0, "sum": 3, "n": 3}, {"first": 3, "sum": 12, "n": 3},
        {"first": 6, "sum": 21, "n": 3}, {"first": 9, "sum": 9, "n": 1},
    ]  # fmt: skip
    ld.optimize(fns.identity, list(range(100)), str(tmp_path / "b"), chunk_size=4, num_workers=2,
                fast_dev_run=3, start_method=FORK, verbose=False)  # fmt: skip
    assert read_aiolit(str(tmp_path / "b")) == [0, 1, 2, 50, 51, 52]


def test_iterable_inputs_keep_order(tmp_path: Path) -> None:
    ld.optimize(fns.identity, (i * 3 for i in range(25)), str(tmp_path), chunk_size=4, num_workers=2,
                start_method=FORK, verbose=False)  # fmt: skip
    assert read_aiolit(str(tmp_path)) == [i * 3 for i in range(25)]


def test_progress_bar_on_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ld.optimize(fns.identity, list(range(10)), str(tmp_path / "a"), chunk_size=4, num_workers=1)
    assert "10/10" in capfd.readouterr().err
    ld.optimize(
        fns.identity, list(range(10)), str(tmp_path / "b"), chunk_size=4, num_workers=1, verbose=False
    )
    assert capfd.readouterr().err == ""


def test_exception_in_fn(tmp_path: Path) -> None:
    out = str(tmp_path)
    with pytest.raises(OptimizeError) as info:
        ld.optimize(fns.fail_on_7, list(range(40)), out, chunk_size=2, num_workers=2, start_method=FORK,
                    verbose=False)  # fmt: skip
    message = str(info.value)
    assert "input #7 (7)" in message
    assert "ValueError: bad input 7" in message and "Traceback" in message
    assert not os.path.exists(os.path.join(out, "index.json"))
    assert not list(Path(out).glob("*index.json"))
    assert _children() == []


def test_exception_in_fn_unordered(tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match=r"input #7 \(7\)"):
        ld.optimize(fns.fail_on_7, list(range(40)), str(tmp_path), chunk_size=2, num_workers=2,
                    keep_data_ordered=False, start_method=FORK, verbose=False)  # fmt: skip
    assert not os.path.exists(tmp_path / "index.json")
    assert _children() == []


@pytest.mark.parametrize("ordered", [True, False])
def test_worker_killed(tmp_path: Path, ordered: bool) -> None:
    with pytest.raises(OptimizeError, match="died unexpectedly"):
        ld.optimize(fns.sigkill_on_5, list(range(20)), str(tmp_path), chunk_size=2, num_workers=2,
                    keep_data_ordered=ordered, start_method=FORK, verbose=False)  # fmt: skip
    assert not os.path.exists(tmp_path / "index.json")
    assert _children() == []


def test_multi_node_sequential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path)
    for node_rank in (0, 1):
        monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", str(node_rank))
        ld.optimize(fns.with_rank, list(range(20)), out, chunk_size=3, num_workers=2, num_nodes=2,
                    start_method=FORK, verbose=False)  # fmt: skip
        if node_rank == 0:
            assert not os.path.exists(os.path.join(out, "index.json"))
            assert os.path.exists(os.path.join(out, "0-index.json"))
    assert not list(Path(out).glob("*-index.json"))
    samples = read_aiolit(out)
    assert [s["i"] for s in samples] == list(range(20))
    assert [s["rank"] for s in samples] == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5
    assert {s["nodes"] for s in samples} == {2}
    assert [s["i"] for s in read_litdata(out)] == list(range(20))
    assert "updated_at" in json.loads(Path(out, "index.json").read_text())
