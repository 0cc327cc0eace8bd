"""Issue 8.9: two optimize runs into one dataset at once (real processes, real servers)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiolit import StreamingDataset, optimize
from aiolit.errors import PreconditionFailedError
from tests.reliability._helpers import check_dataset, env, write_script

# Each writer blocks in fn until both runs have started (so both read the old index.json), then
# both finish together and race for the index.
# (An async fn keeps the test fast: no worker processes, the coordinators are what race.)
_WRITER = """
import asyncio, json, os, sys
from aiolit import optimize

async def gated(i):
    open(os.environ["GATE_ME"], "w").close()
    while not os.path.exists(os.environ["GATE_OTHER"]):
        await asyncio.sleep(0.01)
    return {"i": i}

if __name__ == "__main__":
    out, start, n, mode, options = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    try:
        optimize(gated, list(range(start, start + n)), out, chunk_size=4, num_workers=1, verbose=False,
                 mode=None if mode == "none" else mode, storage_options=json.loads(options) or None)
        print("OK")
    except Exception as exc:
        print("ERROR", type(exc).__name__, exc)
"""


def _race(tmp_path: Path, out: str, mode: str, options: dict[str, Any] | None = None) -> list[str]:
    """Run writer A (inputs 100..109) and B (200..214) at once; return their last stdout lines."""
    script = write_script(tmp_path, _WRITER, "writer.py")
    gates = [str(tmp_path / "gate-a"), str(tmp_path / "gate-b")]
    procs = []
    for me, (start, n) in enumerate([(100, 10), (200, 15)]):
        environment = {**env(), "GATE_ME": gates[me], "GATE_OTHER": gates[1 - me]}
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), out, str(start), str(n), mode, json.dumps(options or {})],
                env=environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        results.append(stdout.strip().splitlines()[-1])
    return results


async def _base(i: int) -> dict[str, int]:
    return {"i": i}


A, B = list(range(100, 110)), list(range(200, 215))


def test_concurrent_appends_keep_both_runs_local(tmp_path: Path) -> None:
    out = str(tmp_path / "ds")
    optimize(_base, list(range(6)), out, chunk_size=4, num_workers=1, verbose=False)
    assert _race(tmp_path, out, "append") == ["OK", "OK"]
    with open(Path(out, "index.json")) as f:
        names = [c["filename"] for c in json.load(f)["chunks"]]
    assert len(names) == len(set(names)) == 2 + 3 + 4  # every run's chunks, none shared
    got = _ids_local(out)
    assert got[:6] == list(range(6))  # the old samples first, then both runs (either order)
    assert got[6:] in (A + B, B + A)
    check_dataset(out, got)  # and every chunk holds the bytes its index entry names


def test_concurrent_new_datasets_one_wins_local(tmp_path: Path) -> None:
    out = str(tmp_path / "ds")
    results = _race(tmp_path, out, "none")
    assert sorted(r.split(" ")[0] for r in results) == ["ERROR", "OK"]
    loser = next(r for r in results if r.startswith("ERROR"))
    assert "OptimizeError another optimize created" in loser and "mode='append'" in loser
    got = _ids_local(out)
    assert got in (A, B)  # exactly the winner's samples
    check_dataset(out, got)


@pytest.mark.s3
def test_concurrent_appends_keep_both_runs_s3(seaweed_server: Any, tmp_path: Path) -> None:
    server = seaweed_server
    url, options = server.new_url("ds"), server.storage_options
    optimize(_base, list(range(6)), url, chunk_size=4, num_workers=1, storage_options=options, verbose=False)
    assert _race(tmp_path, url, "append", options) == ["OK", "OK"]
    got = [s["i"] for s in StreamingDataset(url, storage_options=options, cache_dir=str(tmp_path / "cache"))]
    assert got[:6] == list(range(6))
    assert got[6:] in (A + B, B + A)


def _ids_local(out: str) -> list[int]:
    from tests.processing.readback import read_aiolit

    return [sample["i"] for sample in read_aiolit(out)]


# Not gcs_server: fake-gcs-server ignores ifGenerationMatch on uploads (two uploads with
# ifGenerationMatch=0 both succeed there), so GCSStore's conditional write cannot be tested on it.
@pytest.mark.parametrize("backend", ["s3_server", "seaweed_server", "azure_server"])
def test_store_conditional_put(backend: str, request: pytest.FixtureRequest) -> None:
    from aiolit.stores import open_store

    server = request.getfixturevalue(backend)

    async def scenario() -> None:
        store = open_store(server.new_url("cond"), server.storage_options)
        try:
            await store.put_if_version("index.json", b"v1", None)
            with pytest.raises(PreconditionFailedError):
                await store.put_if_version("index.json", b"again", None)  # exists
            data, version = await store.get_versioned("index.json")
            assert data == b"v1"
            await store.put_if_version("index.json", b"v2", version)
            with pytest.raises(PreconditionFailedError):
                await store.put_if_version("index.json", b"stale", version)  # changed since read
            assert (await store.get_versioned("index.json"))[0] == b"v2"
        finally:
            await store.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_run_tagged_chunk_names_read_by_aiolit_and_litdata(tmp_path: Path, compression: str | None) -> None:
    from aiolit.format import ChunkWriter, merge_shards
    from tests.processing.readback import read_aiolit, read_litdata

    writer = ChunkWriter(str(tmp_path), chunk_size=3, compression=compression, name_tag=".1a2b3c4d")
    for i in range(7):
        writer.add({"i": i})
    names = [entry.filename for entry in writer.done()]
    suffix = ".zstd.bin" if compression else ".bin"
    assert names == [f"chunk-0-{k}.1a2b3c4d{suffix}" for k in range(3)]
    merge_shards(str(tmp_path))
    expected = [{"i": i} for i in range(7)]
    assert read_aiolit(str(tmp_path)) == expected
    if compression:
        pytest.importorskip("zstd", reason="litdata reads zstd chunks only with the `zstd` package")
    assert read_litdata(str(tmp_path)) == expected


def test_gcs_versioned_read_and_conditional_write_happy_path(gcs_server: Any) -> None:
    # fake-gcs-server does not enforce ifGenerationMatch (see above): check the requests work.
    from aiolit.stores import open_store

    async def scenario() -> None:
        store = open_store(gcs_server.new_url("cond"), gcs_server.storage_options)
        try:
            await store.put_if_version("index.json", b"v1", None)
            data, generation = await store.get_versioned("index.json")
            assert data == b"v1" and generation.isdigit()
            await store.put_if_version("index.json", b"v2", generation)
            assert (await store.get_versioned("index.json"))[0] == b"v2"
        finally:
            await store.aclose()

    asyncio.run(scenario())
