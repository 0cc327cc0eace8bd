"""A real 2-process torch.distributed (gloo) run: ranks read disjoint, equal-length shares."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch.distributed as dist
    import torch.multiprocessing as mp

    def main(rank, path, port, out):
        os.environ.pop("WORLD_SIZE", None)
        os.environ.pop("RANK", None)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=rank)
        from aiolit.streaming import StreamingDataLoader, StreamingDataset
        ds = StreamingDataset(path, shuffle=True)
        loader = StreamingDataLoader(ds, batch_size=4, num_workers=1)
        got = [i for batch in loader for i in batch["i"].tolist()]
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"ids": got, "len": len(ds)}, f)
        dist.barrier()
        dist.destroy_process_group()

    if __name__ == "__main__":
        path, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        mp.spawn(main, args=(path, port, out), nprocs=2)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_ranks(make_dataset: Any, tmp_path: Path) -> None:
    path, _ = make_dataset(103, chunk_size=10)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run(
        [sys.executable, str(script), path, str(_free_port()), str(out)], check=True, env=env, timeout=180
    )
    r0 = json.loads(Path(f"{out}.0").read_text())
    r1 = json.loads(Path(f"{out}.1").read_text())
    # drop_last defaults to True under DDP: equal lengths, disjoint, at most world*batch-1 lost.
    assert len(r0["ids"]) == len(r1["ids"]) == r0["len"] == r1["len"] == 48
    assert not set(r0["ids"]) & set(r1["ids"])
    assert len(set(r0["ids"]) | set(r1["ids"])) == 96
