"""aiolit writes, LitData 0.2.76 (``litdata.StreamingDataset``) reads the same values."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _format_helpers import cases
from _oracle_helpers import assert_equal, import_litdata, isolate_litdata, normalize, torchvision_works

from aiolit.format import ChunkWriter, FernetEncryption, Index, merge_shards

litdata = import_litdata()
torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

SALT = b"aiolit-test-salt"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_litdata(monkeypatch, tmp_path)


def _write(out: Path, samples: list[Any], *, ranks: int = 1, **kwargs: Any) -> Index:
    per_rank = -(-len(samples) // ranks)
    for rank in range(ranks):
        writer = ChunkWriter(str(out), rank=rank, **kwargs)
        for s in samples[rank * per_rank : (rank + 1) * per_rank]:
            writer.add(s)
        writer.done()
    return merge_shards(str(out))


def _litdata_read(out: Path, **kwargs: Any) -> list[Any]:
    ds = litdata.StreamingDataset(str(out), **kwargs)
    by_index = [normalize(ds[i]) for i in range(len(ds))]
    by_iter = [normalize(s) for s in ds]
    assert len(by_iter) == len(by_index)
    for a, b in zip(by_iter, by_index, strict=True):
        assert_equal(a, b)
    return by_index


def _rich(i: int) -> dict[str, Any]:
    return {
        "i": i,
        "f": i / 3,
        "s": f"item-{i}",
        "b": bytes([i % 256]) * 3,
        "flag": i % 2 == 0,
        "img": Image.fromarray(cases.image_array(i), "RGB"),
        "x": np.arange(12, dtype=np.float32).reshape(3, 4) + i,
        "v": np.arange(i + 1, dtype=np.int64),
        "t": torch.arange(6, dtype=torch.float32).reshape(2, 3) + i,
        "tv": torch.arange(3, dtype=torch.int32) + i,
        "nested": [i, (i + 1, {"d": float(i)})],
    }


def _rich_expected(i: int) -> dict[str, Any]:
    s = _rich(i)
    s["img"] = cases.image_array(i)
    s["t"], s["tv"] = s["t"].numpy(), s["tv"].numpy()
    return s


def test_rich_samples_two_writers_with_checksums(tmp_path: Path) -> None:
    n = 22
    index = _write(tmp_path, [_rich(i) for i in range(n)], ranks=2, chunk_size=4)
    assert [c.filename for c in index.chunks][:4] == [
        "chunk-0-0.bin",
        "chunk-0-1.bin",
        "chunk-0-2.bin",
        "chunk-1-0.bin",
    ]
    # an extra per-chunk key (aiolit's checksum) must be ignored by LitData
    for entry in index.chunks:
        entry.extra["checksum"] = (
            "sha256:" + hashlib.sha256((tmp_path / entry.filename).read_bytes()).hexdigest()
        )
    (tmp_path / "index.json").write_bytes(index.to_json())
    assert "checksum" in json.loads((tmp_path / "index.json").read_text())["chunks"][0]
    got = _litdata_read(tmp_path)
    assert len(got) == n
    for i, sample in enumerate(got):
        assert_equal(sample, _rich_expected(i), f"[{i}]")


@pytest.mark.parametrize("compression", ["zstd", "zstd:9"])
def test_whole_file_zstd(tmp_path: Path, compression: str) -> None:
    _write(tmp_path, [cases.ints(i) for i in range(10)], chunk_size=4, compression=compression)
    got = _litdata_read(tmp_path)
    assert got == [cases.ints(i) for i in range(10)]


@pytest.mark.parametrize("level", ["sample", "chunk"])
def test_fernet(tmp_path: Path, level: str) -> None:
    from litdata.utilities.encryption import FernetEncryption as LitFernet

    enc = FernetEncryption("pw", level, salt=SALT)  # type: ignore[arg-type]
    out = tmp_path / "out"
    _write(out, [cases.scalars(i) for i in range(9)], chunk_size=4, encryption=enc)
    enc.save(str(tmp_path / "key.json"))
    lit_enc = LitFernet.load(str(tmp_path / "key.json"), "pw")
    got = _litdata_read(out, encryption=lit_enc)
    assert got == [cases.scalars(i) for i in range(9)]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("block_size", [1, 16])
def test_tokens(tmp_path: Path, kind: str, block_size: int) -> None:
    seq_fn = cases.token_seq if kind == "numpy" else cases.token_seq_int32
    seqs = [seq_fn(i) if kind == "numpy" else torch.from_numpy(seq_fn(i)) for i in range(cases.N)]
    index = _write(tmp_path, seqs, chunk_size=cases.TOKENS_CHUNK_SIZE, item_loader="TokensLoader")
    ds = litdata.StreamingDataset(str(tmp_path), item_loader=litdata.TokensLoader(block_size=block_size))
    expected = cases.token_blocks([c.chunk_size for c in index.chunks], block_size, seq_fn)
    assert len(ds) == len(expected)
    for i, want in enumerate(expected):
        got = normalize(ds[i])
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, err_msg=f"block {i}")


def test_jpeg(tmp_path: Path) -> None:
    if not torchvision_works():
        pytest.skip("LitData decodes JPEG leaves with torchvision, which does not load here (CUDA wheel)")
    imgs = []
    for i in range(5):
        buf = io.BytesIO()
        Image.fromarray(cases.image_array(i)).save(buf, format="JPEG")
        imgs.append(Image.open(io.BytesIO(buf.getvalue())))
    _write(tmp_path, [{"img": img} for img in imgs], chunk_size=2)
    got = _litdata_read(tmp_path)
    for i, s in enumerate(got):
        assert (
            np.abs(s["img"].transpose(1, 2, 0).astype(int) - cases.image_array(i)).max()
            <= cases.JPEG_TOLERANCE
        )
