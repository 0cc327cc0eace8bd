"""optimize/map(weights=...): inputs balanced across workers by weight, as LitData packs them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import aiolit.processing as ld
from aiolit.processing._args import pack_greedily
from tests.processing import fns, optfns
from tests.processing.readback import read_aiolit, read_litdata


@pytest.mark.parametrize("num_bins", [1, 2, 3, 5])
def test_packing_matches_litdata(num_bins: int) -> None:
    packing = pytest.importorskip("litdata.utilities.packing")
    rng = random.Random(num_bins)
    for _ in range(20):
        weights = [rng.randint(1, 9) for _ in range(rng.randint(1, 40))]
        theirs, _ = packing._pack_greedily(list(range(len(weights))), weights, num_bins)
        assert pack_greedily(weights, num_bins) == [theirs.get(b, []) for b in range(num_bins)]


def test_weighted_workers_get_the_packed_inputs(tmp_path: Path) -> None:
    weights = [1] * 12 + [20, 20, 1, 1]  # sequential split would give worker 1 both heavy inputs
    out = str(tmp_path)
    ld.optimize(fns.with_rank, list(range(16)), out, weights=weights, chunk_size=3, num_workers=2,
                start_method="fork", verbose=False)  # fmt: skip
    bins = [sorted(b) for b in pack_greedily(weights, 2)]
    samples = read_aiolit(out)
    by_rank = {r: [s["i"] for s in samples if s["rank"] == r] for r in (0, 1)}
    assert by_rank == {0: bins[0], 1: bins[1]}  # each worker: its bin, in input order
    assert sum(weights[i] for i in by_rank[0]) == sum(weights[i] for i in by_rank[1]) == 27
    assert sorted(s["i"] for s in samples) == list(range(16))
    assert read_litdata(out) == samples


def test_weights_with_a_shared_queue_and_map(tmp_path: Path) -> None:
    weights = [i % 5 + 1 for i in range(20)]
    out = str(tmp_path / "out")
    ld.optimize(optfns.logged_square, list(range(20)), out, weights=weights, chunk_size=4, num_workers=2,
                keep_data_ordered=False, start_method="fork", verbose=False)  # fmt: skip
    assert sorted(s["i"] for s in read_aiolit(out)) == list(range(20))
    mapped = tmp_path / "mapped"
    ld.map(fns.write_text, list(range(9)), str(mapped), weights=[3, 1, 4, 1, 5, 9, 2, 6, 5], num_workers=2,
           keep_data_ordered=True, start_method="fork", verbose=False)  # fmt: skip
    assert {p.name: p.read_text() for p in mapped.iterdir()} == {
        f"out-{i}.txt": f"value {i}" for i in range(9)
    }


def test_bad_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 weights for 3 inputs"):
        ld.optimize(
            optfns.logged_square, [1, 2, 3], str(tmp_path), weights=[1, 2], chunk_size=2, verbose=False
        )
    with pytest.raises(ValueError, match="positive numbers"):
        ld.optimize(optfns.logged_square, [1, 2], str(tmp_path), weights=[1, 0], chunk_size=2, verbose=False)
    with pytest.raises(ValueError, match="either reader= or weights="):
        from tests.processing.test_optimize_reader import Batches

        ld.optimize(optfns.sum_batch, [1], str(tmp_path), reader=Batches(), weights=[1], chunk_size=2,
                    verbose=False)  # fmt: skip
