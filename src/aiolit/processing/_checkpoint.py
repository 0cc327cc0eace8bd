"""``optimize(use_checkpoint=True)``: per-worker checkpoints so a crashed run resumes.

Layout (LitData's names and fields, under the output's ``.checkpoints/``):

* ``config-{node_rank}.json``: what the checkpoints were made for (worker count and a digest of
  each worker's inputs); a rerun with other inputs or another worker count refuses to resume;
* ``checkpoint-{rank}.json``: written by worker ``rank`` each time one of its chunks is safely
  stored (uploaded, for remote outputs): its finished chunk entries, its writer config,
  ``inputs_done`` (inputs whose samples are all in those chunks), ``next_chunk_index`` and, for
  generator functions, ``skip_samples`` (samples of the next input already in the chunks).

The coordinator reads the checkpoints before starting the workers, gives each worker the inputs
after its ``inputs_done`` and its finished chunks, and deletes ``.checkpoints/`` once
``index.json`` is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiolit.errors import OptimizeError
from aiolit.processing._output import Output

__all__ = [
    "CHECKPOINT_DIR",
    "Resume",
    "clear",
    "clear_node",
    "load_resume",
    "save_config",
    "write_checkpoint",
]

CHECKPOINT_DIR = ".checkpoints"


@dataclass(frozen=True)
class Resume:
    """Where worker ``rank`` restarts: its finished chunks and how far into its inputs they go."""

    entries: list[Any] = field(default_factory=list)
    config: dict[str, Any] | None = None
    inputs_done: int = 0
    skip_samples: int = 0
    next_chunk_index: int | None = None
    keys: list[Any] | None = None  # key_fn's keys of the samples in ``entries``


def _digest(parts: Sequence[Sequence[Any]]) -> list[str]:
    digests = []
    for part in parts:
        try:
            data = pickle.dumps(list(part), protocol=4)
        except Exception:
            data = repr(list(part)).encode()
        digests.append(hashlib.sha256(data).hexdigest())
    return digests


def _config(num_workers: int, parts: Sequence[Sequence[Any]]) -> dict[str, Any]:
    return {"num_workers": num_workers, "workers_inputs_sha256": _digest(parts)}


async def load_resume(
    output: Output, node_rank: int, first_rank: int, parts: Sequence[Sequence[Any]]
) -> dict[int, Resume]:
    """Read this node's checkpoints; return the resume point of each rank that has one.

    ``parts`` are the inputs of each worker of this node, in rank order.

    Raises
    ------
    OptimizeError
        Checkpoints exist but were made for other inputs or another number of workers.
    """
    from aiolit.format import ChunkEntry

    raw = await output.read(f"{CHECKPOINT_DIR}/config-{node_rank}.json")
    if raw is None:
        return {}
    expected = _config(len(parts), parts)
    if json.loads(raw) != expected:
        raise OptimizeError(
            f"{output.url}/{CHECKPOINT_DIR} holds checkpoints of a run with other inputs or another "
            "num_workers, so this run cannot resume from them. Rerun with the same inputs and "
            "num_workers, or pass mode='overwrite' (or delete the folder) to start over."
        )
    resumes: dict[int, Resume] = {}
    for offset in range(len(parts)):
        rank = first_rank + offset
        data = await output.read(f"{CHECKPOINT_DIR}/checkpoint-{rank}.json")
        if data is None:
            continue
        state = json.loads(data)
        source = f"{output.url}/{CHECKPOINT_DIR}/checkpoint-{rank}.json"
        entries = [
            ChunkEntry.from_dict(chunk, source=source, position=i) for i, chunk in enumerate(state["chunks"])
        ]
        inputs_done = int(state.get("inputs_done", state.get("done_till_index", 0)))
        next_chunk = state.get("next_chunk_index")
        resumes[rank] = Resume(
            entries=entries,
            config=state.get("config"),
            inputs_done=inputs_done,
            skip_samples=int(state.get("skip_samples", 0)),
            next_chunk_index=None if next_chunk is None else int(next_chunk),
            keys=state.get("keys"),
        )
    return resumes


async def save_config(output: Output, node_rank: int, parts: Sequence[Sequence[Any]]) -> None:
    """Record what this node's checkpoints are for (before any worker writes one)."""
    data = json.dumps(_config(len(parts), parts)).encode()
    if output.local_path is not None:
        _write_local(output.local_path, f"config-{node_rank}.json", data)
    else:
        await output.write(f"{CHECKPOINT_DIR}/config-{node_rank}.json", data)


def _write_local(root: str, name: str, payload: bytes) -> None:
    directory = os.path.join(root, CHECKPOINT_DIR)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


async def clear_node(output: Output, node_rank: int, ranks: Sequence[int]) -> None:
    """Delete this node's checkpoint files once its part is indexed (other nodes may still run)."""
    import asyncio

    names = [f"{CHECKPOINT_DIR}/config-{node_rank}.json"]
    names += [f"{CHECKPOINT_DIR}/checkpoint-{rank}.json" for rank in ranks]
    await asyncio.gather(*(output.delete(name) for name in names))
    if output.local_path is not None:
        directory = os.path.join(output.local_path, CHECKPOINT_DIR)
        # A killed run can leave the temp file of a checkpoint it was writing: this node's are done.
        mine = tuple(f".{os.path.basename(name)}." for name in names)
        with contextlib.suppress(OSError):
            for entry in os.listdir(directory):
                if entry.startswith(mine) and entry.endswith(".tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(directory, entry))
        try:
            os.rmdir(directory)  # only when now empty
        except OSError:
            pass


async def clear(output: Output) -> None:
    """Delete ``.checkpoints/`` (when a run starts without checkpoints: stale ones must not be resumed)."""
    if output.is_local:
        import shutil

        assert output.local_path is not None
        shutil.rmtree(os.path.join(output.local_path, CHECKPOINT_DIR), ignore_errors=True)
        return
    import asyncio

    names = [meta.key async for meta in output._remote().list(f"{CHECKPOINT_DIR}/")]
    await asyncio.gather(*(output.delete(name) for name in names))


def write_checkpoint(
    rank: int,
    entries: Sequence[Any],
    config: dict[str, Any],
    inputs_done: int,
    skip_samples: int,
    next_chunk_index: int,
    *,
    local_dir: str | None,
    uploader: Any,
    keys: list[Any] | None = None,
) -> None:
    """Persist worker ``rank``'s checkpoint (atomically locally; after its chunks' uploads remotely)."""
    samples = sum(entry.chunk_size for entry in entries)
    payload = json.dumps(
        {
            "chunks": [entry.to_dict() for entry in entries],
            "config": config,
            "inputs_done": inputs_done,
            "samples_written": samples,
            "next_chunk_index": next_chunk_index,
            "done_till_index": inputs_done,
            "skip_samples": skip_samples,
            **({} if keys is None else {"keys": keys}),
        }
    ).encode()
    name = f"checkpoint-{rank}.json"
    if local_dir is not None:
        _write_local(local_dir, name, payload)
        return
    uploader.put_after_uploads(f"{CHECKPOINT_DIR}/{name}", payload)
