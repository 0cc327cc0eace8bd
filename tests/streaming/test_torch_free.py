"""Torch at the edges: StreamingDataset, Combined and Parallel datasets, ``async for``, ``aget``
and ``optimize`` run without importing torch, and the datasets are still torch
``IterableDataset``s for every ``DataLoader`` however the imports are ordered."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import aiolit

SRC = Path(aiolit.__file__).resolve().parents[1]
REPO = Path(__file__).resolve().parents[2]


def _run(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_the_async_service_path_never_imports_torch(tmp_path: Path) -> None:
    code = r"""
import asyncio, sys
import aiolit
from aiolit import StreamingDataset, CombinedStreamingDataset, ParallelStreamingDataset

def fn(i):
    return {"i": i, "s": "x" * (i % 7)}

aiolit.optimize(fn=fn, inputs=list(range(40)), output_dir="ds", chunk_size=7, num_workers=1)
ds = StreamingDataset("ds", shuffle=True, seed=3)
assert sorted(s["i"] for s in ds) == list(range(40))
assert ds[17] == {"i": 17, "s": "xxx"}

async def main():
    got = [s["i"] async for s in StreamingDataset("ds")]
    assert got == list(range(40)), got
    picked = await asyncio.gather(*(ds.aget(i) for i in (0, 9, 39)))
    assert [p["i"] for p in picked] == [0, 9, 39]

asyncio.run(main())
both = CombinedStreamingDataset([StreamingDataset("ds"), StreamingDataset("ds")], seed=1)
assert sorted(s["i"] for s in both) == sorted(list(range(40)) * 2)
pairs = list(ParallelStreamingDataset([StreamingDataset("ds"), StreamingDataset("ds")]))
assert [a["i"] for a, b in pairs] == [b["i"] for a, b in pairs] == list(range(40))
assert "torch" not in sys.modules, "torch was imported"
print("OK")
"""
    assert _run(code, tmp_path).strip() == "OK"


def test_a_dataset_made_before_torch_is_imported_is_iterable_style(tmp_path: Path) -> None:
    # Iterable-style (not map-style through __getitem__): a DataLoader refuses shuffle=True and
    # its workers split the dataset the way StreamingDataset plans it.
    code = r"""
import sys
import aiolit
from aiolit import StreamingDataset, CombinedStreamingDataset

def fn(i):
    return {"i": i}

aiolit.optimize(fn=fn, inputs=list(range(30)), output_dir="ds", chunk_size=5, num_workers=1)
ds = StreamingDataset("ds")
both = CombinedStreamingDataset([StreamingDataset("ds"), StreamingDataset("ds")])
assert "torch" not in sys.modules

from torch.utils.data import ChainDataset, DataLoader, IterableDataset
from torch.utils.data.dataloader import _DatasetKind

for d in (ds, both):
    assert isinstance(d, IterableDataset)
    assert DataLoader(d)._dataset_kind == _DatasetKind.Iterable
try:
    DataLoader(ds, shuffle=True)
except ValueError as exc:
    assert "IterableDataset" in str(exc), exc
else:
    raise AssertionError("a map-style loader accepted shuffle=True")
got = sorted(int(i) for b in DataLoader(ds, batch_size=4, num_workers=2) for i in b["i"])
assert got == list(range(30)), got
assert isinstance(ds + ds, ChainDataset) and len([s for s in ds + ds]) == 60

class Mine(StreamingDataset):  # a user's subclass, defined after torch
    pass

assert isinstance(Mine("ds"), IterableDataset)
print("OK")
"""
    assert _run(code, tmp_path).strip() == "OK"


def test_torch_imported_first_works_the_same(tmp_path: Path) -> None:
    code = r"""
import torch
from torch.utils.data import DataLoader, IterableDataset
import aiolit
from aiolit import StreamingDataset, ParallelStreamingDataset

def fn(i):
    return {"i": i}

aiolit.optimize(fn=fn, inputs=list(range(12)), output_dir="ds", chunk_size=5, num_workers=1)
ds = StreamingDataset("ds")
assert isinstance(ds, IterableDataset)
assert issubclass(ParallelStreamingDataset, IterableDataset)
assert [int(i) for b in DataLoader(ds, batch_size=5) for i in b["i"]] == list(range(12))
print("OK")
"""
    assert _run(code, tmp_path).strip() == "OK"
