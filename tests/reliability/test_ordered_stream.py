"""Issue 8.13: a generator with keep_data_ordered=True is streamed, not read into memory first."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiolit import optimize
from tests.processing import fns
from tests.processing.readback import read_aiolit


@pytest.mark.timeout(180)  # reading an endless generator into memory first would never end
def test_endless_generator_ordered_produces_chunks(tmp_path: Path) -> None:
    out = str(tmp_path)
    optimize(fns.identity, itertools.count(), out, chunk_size=40, num_workers=2, fast_dev_run=150,
             keep_data_ordered=True, verbose=False)  # fmt: skip
    assert read_aiolit(out) == list(range(300))  # 150 per worker, in input order


def test_large_generator_ordered_is_read_while_chunks_are_written(tmp_path: Path) -> None:
    out = str(tmp_path)
    n = 4000  # more than the queue holds (2 segments of 256 inputs per worker, plus the ones in work)
    seen_chunk_at: list[int] = []

    def inputs() -> Iterator[int]:
        for i in range(n):
            if i % 100 == 0 and not seen_chunk_at and any(name.endswith(".bin") for name in os.listdir(out)):
                seen_chunk_at.append(i)
            yield i

    optimize(fns.identity, inputs(), out, chunk_size=64, num_workers=2, keep_data_ordered=True, verbose=False)
    assert seen_chunk_at and seen_chunk_at[0] < n  # chunks existed before the input was exhausted
    assert read_aiolit(out) == list(range(n))  # the input order, across both workers' chunks
