"""optimize/map(input_dir=...): inputs naming files under a local or remote folder."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import aiolit.processing as ld
from aiolit.errors import OptimizeError
from tests.processing import optfns
from tests.processing.readback import read_aiolit, read_litdata


def _text(i: int) -> str:
    return f"file {i} " + "x" * (i * 37 % 200)


def _make_local(root: Path, n: int) -> list[str]:
    paths = []
    for i in range(n):
        path = root / f"sub{i % 2}" / f"{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_text(i))
        paths.append(str(path))
    return paths


def _upload(url: str, options: dict[str, Any], n: int) -> list[str]:
    from aiolit.stores import open_store

    async def run() -> None:
        store = open_store(url, options)
        try:
            await asyncio.gather(*(store.put(f"sub{i % 2}/{i}.txt", _text(i).encode()) for i in range(n)))
        finally:
            await store.aclose()

    asyncio.run(run())
    return [f"{url}/sub{i % 2}/{i}.txt" for i in range(n)]


def test_local_input_dir_optimize_and_map(tmp_path: Path) -> None:
    paths = _make_local(tmp_path / "raw", 12)
    out = str(tmp_path / "out")
    ld.optimize(optfns.read_file_text, paths, out, input_dir=str(tmp_path / "raw"), chunk_size=5,
                num_workers=2, start_method="fork", verbose=False)  # fmt: skip
    expected = [{"name": f"{i}.txt", "text": _text(i)} for i in range(12)]
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected
    mapped = tmp_path / "mapped"
    ld.map(optfns.copy_upper, paths, str(mapped), input_dir=str(tmp_path / "raw"), num_workers=2,
           start_method="fork", verbose=False)  # fmt: skip
    assert {p.name: p.read_text() for p in mapped.iterdir()} == {
        f"{i}.txt.up": _text(i).upper() for i in range(12)
    }


def test_litdata_oracle_local_input_dir(tmp_path: Path) -> None:
    litdata = pytest.importorskip("litdata")
    paths = _make_local(tmp_path / "raw", 6)
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    ld.optimize(optfns.read_file_text, paths, ours, input_dir=str(tmp_path / "raw"), chunk_size=4,
                num_workers=1, start_method="fork", verbose=False)  # fmt: skip
    litdata.optimize(optfns.read_file_text, paths, theirs, input_dir=str(tmp_path / "raw"), chunk_size=4,
                     num_workers=1, start_method="fork", verbose=False, reorder_files=False)  # fmt: skip
    assert read_aiolit(ours) == read_litdata(theirs) == read_litdata(ours)


def test_inputs_without_a_path_under_input_dir(tmp_path: Path) -> None:
    paths = _make_local(tmp_path / "raw", 3)
    with pytest.raises(ValueError, match=r"input #1 \(.*elsewhere.*\) holds no path under input_dir"):
        ld.optimize(optfns.read_file_text, [paths[0], "/elsewhere/x.txt", paths[2]], str(tmp_path / "o"),
                    input_dir=str(tmp_path / "raw"), chunk_size=2, num_workers=1, verbose=False)  # fmt: skip
    with pytest.raises(ValueError, match="holds no path under input_dir"):
        ld.map(optfns.copy_upper, [paths[0], str(tmp_path / "raw" / ".." / "evil.txt")], str(tmp_path / "m"),
               input_dir=str(tmp_path / "raw"), num_workers=1, verbose=False)  # fmt: skip


@pytest.mark.s3
@pytest.mark.parametrize("server_name", ["s3_server", "seaweed_server"])
def test_remote_input_dir(server_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server = request.getfixturevalue(server_name)
    options = server.storage_options
    raw = server.new_url("raw")
    urls = _upload(raw, options, 14)
    out = str(tmp_path / "out")
    ld.optimize(optfns.read_file_text, urls, out, input_dir=raw, chunk_size=4, num_workers=2,
                start_method="fork", storage_options=options, verbose=False)  # fmt: skip
    expected = [{"name": f"{i}.txt", "text": _text(i)} for i in range(14)]
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected

    # pytree inputs: every path leaf under input_dir is downloaded; other leaves pass through
    pairs = [{"id": i, "a": urls[i], "b": urls[i + 1]} for i in range(0, 12, 2)]
    out2 = str(tmp_path / "pairs")
    ld.optimize(optfns.read_pair, pairs, out2, input_dir=raw, chunk_size=2, num_workers=2,
                keep_data_ordered=False, start_method="fork", storage_options=options, verbose=False)  # fmt: skip
    got = sorted(read_aiolit(out2), key=lambda s: s["id"])
    assert got == [{"id": i, "a": _text(i), "b": _text(i + 1)} for i in range(0, 12, 2)]

    mapped = tmp_path / "mapped"
    ld.map(optfns.copy_upper, urls, str(mapped), input_dir=raw, num_workers=2, start_method="fork",
           storage_options=options, verbose=False)  # fmt: skip
    assert {p.name: p.read_text() for p in mapped.iterdir()} == {
        f"{i}.txt.up": _text(i).upper() for i in range(14)
    }

    with pytest.raises(OptimizeError, match=r"input #1 from input_dir .* failed"):
        ld.optimize(optfns.read_file_text, [urls[0], f"{raw}/missing.txt"], str(tmp_path / "bad"),
                    input_dir=raw, chunk_size=2, num_workers=1, start_method="fork",
                    storage_options=options, verbose=False)  # fmt: skip


@pytest.mark.s3
def test_object_urls_without_input_dir_are_downloaded(s3_server: Any, tmp_path: Path) -> None:
    # LitData's README form: inputs = [os.path.join("s3://bucket/folder", name), ...], no input_dir
    options = s3_server.storage_options
    raw = s3_server.new_url("my_large_images")
    urls = _upload(raw, options, 6)
    mapped = tmp_path / "mapped"
    ld.map(optfns.copy_upper, urls, str(mapped), num_workers=2, start_method="fork", storage_options=options,
           verbose=False)  # fmt: skip
    assert {p.name: p.read_text() for p in mapped.iterdir()} == {
        f"{i}.txt.up": _text(i).upper() for i in range(6)
    }
    out = str(tmp_path / "out")
    ld.optimize(optfns.read_file_text, urls, out, chunk_size=4, num_workers=1, start_method="fork",
                storage_options=options, verbose=False)  # fmt: skip
    assert read_aiolit(out) == [{"name": f"{i}.txt", "text": _text(i)} for i in range(6)]
