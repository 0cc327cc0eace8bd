"""map() and merge_datasets(): the README examples with aiolit in place of litdata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import aiolit.processing as ld
from aiolit.errors import OptimizeError
from tests.processing import fns
from tests.processing.readback import read_aiolit, read_index, read_litdata


def test_map_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ld.map(fn=fns.write_text, inputs=list(range(4)), output_dir=str(out), num_workers=2, start_method="fork",
           verbose=False)  # fmt: skip
    assert sorted(os.listdir(out)) == [f"out-{i}.txt" for i in range(4)]
    assert (out / "out-3.txt").read_text() == "value 3"


def test_map_readme_resize_images(tmp_path: Path) -> None:
    from PIL import Image

    input_dir = tmp_path / "my_large_images"
    input_dir.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 30, 3), i * 20, dtype=np.uint8)).save(input_dir / f"img{i}.png")
    inputs = [os.path.join(input_dir, f) for f in os.listdir(input_dir)]

    out = tmp_path / "my_resized_images"
    ld.map(fn=_resize_image, inputs=inputs, output_dir=str(out), num_workers=2, keep_data_ordered=False,
           start_method="fork", verbose=False)  # fmt: skip
    for i in range(4):
        image = Image.open(out / f"img{i}.png")
        assert image.size == (8, 8)
        assert np.asarray(image)[0, 0, 0] == i * 20


def _resize_image(image_path: str, output_dir: str) -> None:
    from PIL import Image

    Image.open(image_path).resize((8, 8)).save(os.path.join(output_dir, os.path.basename(image_path)))


def test_map_error_names_input(tmp_path: Path) -> None:
    with pytest.raises(OptimizeError, match=r"input #2 \(2\)") as info:
        ld.map(fns.map_fail, list(range(5)), str(tmp_path), num_workers=1, verbose=False)
    assert "RuntimeError: map failed" in str(info.value)


def test_map_error_when_not_empty(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        ld.map(fns.write_text, [1], str(tmp_path), error_when_not_empty=True, verbose=False)


def test_readme_merge_datasets(tmp_path: Path) -> None:
    out_dirs = [str(tmp_path / f"fast_data_{k}") for k in range(3)]
    for k, out_dir in enumerate(out_dirs):
        ld.optimize(fn=fns.image_sample, inputs=list(range(k * 10, k * 10 + 10)), output_dir=out_dir,
                    num_workers=2, chunk_bytes="64MB", start_method="fork", verbose=False)  # fmt: skip
    merged = str(tmp_path / "merged_fast_data")
    ld.merge_datasets(input_dirs=out_dirs, output_dir=merged)
    index = read_index(merged)
    assert [c["filename"] for c in index["chunks"]] == [f"chunk-0-{i}.bin" for i in range(6)]
    assert float(index["updated_at"]) > 0  # a new version for readers' caches (issue 8.5)
    assert index["config"] == read_index(out_dirs[0])["config"]
    for reader in (read_aiolit, read_litdata):
        got = reader(merged)
        assert [s["index"] for s in got] == list(range(30))
        assert [s["class"] for s in got] == [fns.image_sample(i)["class"] for i in range(30)]


def test_merge_compressed_names_and_mismatch(tmp_path: Path) -> None:
    a, b, c = (str(tmp_path / n) for n in "abc")
    ld.optimize(fns.identity, [1, 2, 3], a, chunk_size=2, num_workers=1, compression="zstd", verbose=False)
    ld.optimize(fns.identity, [4, 5], b, chunk_size=2, num_workers=1, compression="zstd", verbose=False)
    ld.optimize(fns.identity, [6], c, chunk_size=2, num_workers=1, verbose=False)
    ld.merge_datasets([a, b], str(tmp_path / "ab"))
    names = [ch["filename"] for ch in json.loads(Path(tmp_path, "ab", "index.json").read_text())["chunks"]]
    assert names == ["chunk-0-0.zstd.bin", "chunk-0-1.zstd.bin", "chunk-0-2.zstd.bin"]
    assert read_aiolit(str(tmp_path / "ab")) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="compression"):
        ld.merge_datasets([a, c], str(tmp_path / "ac"))
    assert not os.path.exists(tmp_path / "ac" / "index.json")
    with pytest.raises(ValueError, match="at least two"):
        ld.merge_datasets([a], str(tmp_path / "x"))
