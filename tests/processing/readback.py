"""Read an optimized dataset back, with aiolit.format and with LitData (the oracle)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def read_index(path: str) -> dict[str, Any]:
    with open(os.path.join(path, "index.json")) as f:
        return json.load(f)  # type: ignore[no-any-return]


def read_aiolit(path: str, encryption: Any = None) -> list[Any]:
    """Every sample, in index order, decoded by aiolit.format."""
    from aiolit.format import Index, SampleCodec, open_chunk

    with open(os.path.join(path, "index.json"), "rb") as f:
        index = Index.from_json(f.read())
    codec = SampleCodec(index.config["data_format"], index.config["data_spec"])
    samples = []
    for entry in index.chunks:
        with open(os.path.join(path, entry.filename), "rb") as f:
            view = open_chunk(f.read(), entry, index.config, encryption=encryption)
        for k in range(view.num_items):
            samples.append(codec.decode(view.item(k)))
    return samples


def read_litdata(path: str, **kwargs: Any) -> list[Any]:
    """Every sample, in order, read by litdata.StreamingDataset (skips when litdata is missing)."""
    litdata = pytest.importorskip("litdata", reason="litdata (the oracle) is not installed")
    dataset = litdata.StreamingDataset(path, **kwargs)
    return [dataset[i] for i in range(len(dataset))]
