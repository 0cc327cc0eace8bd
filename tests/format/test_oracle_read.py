"""``litdata.optimize`` (0.2.76) writes, aiolit.format reads the same values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _format_helpers import cases, read_all, read_index
from _oracle_helpers import assert_equal, import_litdata, isolate_litdata

from aiolit.format import FRAMED_MAGIC, FernetEncryption, TokenBlocks, open_chunk, token_dtype
from aiolit.format._codec import ZSTD_MAGIC

litdata = import_litdata()
torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_litdata(monkeypatch, tmp_path)


def _optimize(fn: Any, n: int, out: Path, **kwargs: Any) -> Path:
    # fork: the worker does not re-import torch (seconds per call with spawn)
    litdata.optimize(
        fn=fn,
        inputs=list(range(n)),
        output_dir=str(out),
        num_workers=1,
        start_method="fork",
        verbose=False,
        **kwargs,
    )
    return out


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
        "nested": [i, i + 1],
        "meta": {"d": float(i), "tags": ["a", f"t{i}"]},
    }


def _aiolit_view(value: Any) -> Any:
    """aiolit's decoded values as plain numpy/Python (tensors and PIL images as arrays)."""
    if isinstance(value, dict):
        return {k: _aiolit_view(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_aiolit_view(v) for v in value)
    if type(value).__module__ == "torch":
        return value.numpy()
    if type(value).__module__.startswith("PIL."):
        return np.asarray(value)
    return value


def _expected(i: int) -> dict[str, Any]:
    s = _rich(i)
    s["img"] = cases.image_array(i)
    s["t"], s["tv"] = s["t"].numpy(), s["tv"].numpy()
    return s


def test_rich_samples(tmp_path: Path) -> None:
    out = _optimize(_rich, 11, tmp_path / "out", chunk_size=4)
    index = read_index(out)
    assert "json" in index.config["data_format"]  # 0.2.76 stores list/dict values as json leaves
    got = read_all(out)
    assert len(got) == 11
    for i, sample in enumerate(got):
        assert_equal(_aiolit_view(sample), _expected(i), f"[{i}]")


def _np_sample(i: int) -> dict[str, Any]:
    return {"x": np.arange(12, dtype=np.float32).reshape(3, 4) + i, "y": i}


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "zstd"},  # 0.2.76 default level: LDFZ01 framed
        {"compression": "zstd", "compression_batch_size": 3},
        {"compression": "zstd", "compression_level": "sample"},
        {"compression": "zstd:9", "compression_level": "chunk"},
    ],
    ids=["batch", "batch-k3", "sample", "chunk"],
)
def test_zstd_levels(tmp_path: Path, options: dict[str, Any]) -> None:
    out = _optimize(_np_sample, 10, tmp_path / "out", chunk_size=4, **options)
    index = read_index(out)
    first = (out / index.chunks[0].filename).read_bytes()
    level = options.get("compression_level", "batch")
    # the layout really is the one asked for (LitData silently skips it for JSON-like samples)
    assert first.startswith(FRAMED_MAGIC) == (level == "batch")
    assert first.startswith(ZSTD_MAGIC) == (level == "chunk")
    if level == "sample":
        assert bytes(open_chunk(first, index.chunks[0], index.config)._buf[24:28]) == ZSTD_MAGIC
    got = read_all(out)
    for i, sample in enumerate(got):
        assert_equal(sample, _np_sample(i), f"[{i}]")


def _scalars(i: int) -> dict[str, Any]:
    return cases.scalars(i)


@pytest.mark.parametrize("level", ["sample", "chunk"])
def test_fernet(tmp_path: Path, level: str) -> None:
    from litdata.utilities.encryption import FernetEncryption as LitFernet

    lit_enc = LitFernet("secret", level=level)
    out = _optimize(_scalars, 9, tmp_path / "out", chunk_size=4, encryption=lit_enc)
    lit_enc.save(str(tmp_path / "key.json"))
    enc = FernetEncryption.load(str(tmp_path / "key.json"), "secret")
    got = read_all(out, encryption=enc)
    assert got == [cases.scalars(i) for i in range(9)]


def _tokens(i: int) -> np.ndarray:
    return cases.token_seq(i)


def test_tokens(tmp_path: Path) -> None:
    out = _optimize(_tokens, 25, tmp_path / "out", chunk_size=250, item_loader=litdata.TokensLoader())
    index = read_index(out)
    assert index.item_loader == "TokensLoader"
    counts = [c.chunk_size for c in index.chunks]
    assert counts == [len(c) for c in cases.token_chunks([len(cases.token_seq(i)) for i in range(25)], 250)]
    dtype = token_dtype(index.config["data_format"][0])
    streams = [
        open_chunk((out / e.filename).read_bytes(), e, index.config).tokens(dtype) for e in index.chunks
    ]
    blocks = TokenBlocks([e.dim or 0 for e in index.chunks], 16)
    expected = cases.token_blocks(counts, 16)
    assert blocks.num_blocks == len(expected)
    for i, want in enumerate(expected):
        chunk, offset = blocks.locate(i)
        np.testing.assert_array_equal(streams[chunk][offset : offset + 16], want)
