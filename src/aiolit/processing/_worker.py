"""What runs inside an executor: self-contained tasks for ``optimize`` and ``map``.

A task gets its inputs (a list, or — in the default process pool — a shared queue installed by the
pool initializer), runs ``fn``, writes its chunks with its own ``ChunkWriter`` rank, uploads them
itself when the output is remote, and returns only its index entries. The coordinator never needs
the worker's disk, so the same task runs in a local pool or on a Dask cluster.
"""

from __future__ import annotations

import inspect
import os
import pickle
import queue as queue_module
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiolit._proc import pid_alive
from aiolit.errors import FormatError, OptimizeError
from aiolit.processing._upload import Uploader

if TYPE_CHECKING:
    from aiolit.format import ChunkWriter
    from aiolit.processing._checkpoint import Resume
    from aiolit.processing._input_dir import InputDir

__all__ = [
    "MapTask",
    "OptimizeTask",
    "TaskResult",
    "WorkerTask",
    "describe_input",
    "exit_if_orphaned",
    "finish_writer",
    "init_worker",
    "run_map_task",
    "run_optimize_task",
    "set_env",
    "unwritable_sample",
]

# Installed by `init_worker` in the default process pool; None in foreign executors.
_ITEM_QUEUE: Any = None
_PROGRESS_QUEUE: Any = None
_PARENT_PID: int | None = None


_ORPHAN_EXIT = 70  # exit status of a worker that outlived its coordinator


def _set_parent_death_signal() -> None:
    """Linux: have the kernel SIGKILL this process the moment its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the watchdog thread and the checks between inputs still apply


def exit_if_orphaned() -> None:
    """End this worker at once (``os._exit``) if the coordinator that started it is gone.

    ``SystemExit`` would not do: the pool catches it inside a task and the process lives on.
    """
    if _PARENT_PID is not None and os.getppid() != _PARENT_PID:
        os._exit(_ORPHAN_EXIT)


def _watch_parent(interval: float) -> None:
    while True:
        time.sleep(interval)
        exit_if_orphaned()


def init_worker(item_queue: Any, progress_queue: Any, coordinator_pid: int | None = None) -> None:
    """Pool initializer: remember the shared queues and tie this process's life to the coordinator.

    The kernel kills the worker when its parent dies (``PR_SET_PDEATHSIG`` on Linux); a watchdog
    thread and a check between inputs cover other platforms and a parent that died before the
    signal was armed. Without them a SIGKILLed coordinator would leave workers writing chunks.
    """
    global _ITEM_QUEUE, _PROGRESS_QUEUE, _PARENT_PID
    _set_parent_death_signal()
    _ITEM_QUEUE = item_queue
    _PROGRESS_QUEUE = progress_queue
    _PARENT_PID = os.getppid()
    if coordinator_pid is not None and coordinator_pid != _PARENT_PID and not pid_alive(coordinator_pid):
        os._exit(_ORPHAN_EXIT)  # the coordinator died while this process was starting
    threading.Thread(target=_watch_parent, args=(0.5,), name="aiolit-parent-watch", daemon=True).start()


def describe_input(position: int, item: Any) -> str:
    """A short description of an input for error messages."""
    text = repr(item)
    if len(text) > 200:
        text = text[:197] + "..."
    return f"input #{position} ({text})"


class _Progress:
    """Reports (inputs, bytes) to the coordinator, at most every 0.1 s."""

    def __init__(self) -> None:
        self.items = 0
        self.bytes = 0
        self._last = time.monotonic()

    def add(self, items: int = 0, nbytes: int = 0) -> None:
        self.items += items
        self.bytes += nbytes
        if _PROGRESS_QUEUE is not None and time.monotonic() - self._last > 0.1:
            self.flush()

    def flush(self) -> None:
        if _PROGRESS_QUEUE is not None and (self.items or self.bytes):
            _PROGRESS_QUEUE.put((self.items, self.bytes))
            self.items = self.bytes = 0
        self._last = time.monotonic()


def _iter_inputs(items: list[tuple[int, Any]] | None) -> Iterator[tuple[int, Any]]:
    if items is not None:
        for entry in items:
            exit_if_orphaned()
            yield entry
        return
    if _ITEM_QUEUE is None:
        raise RuntimeError("a shared-queue task ran outside aiolit's process pool")
    while True:
        try:
            entry = _ITEM_QUEUE.get(timeout=1.0)
        except queue_module.Empty:
            exit_if_orphaned()
            continue
        if not entry:  # b"" ends the queue, one per worker
            return
        yield pickle.loads(entry)


def _task_inputs(
    items: list[tuple[int, Any]] | None, input_dir: InputDir | None, storage_options: dict[str, Any] | None
) -> Iterator[tuple[int, Any]]:
    """The task's inputs; with ``input_dir``, their remote files downloaded ahead of ``fn``."""
    return _localize(_iter_inputs(items), input_dir, storage_options)


def _localize(
    stream: Iterator[tuple[int, Any]], input_dir: InputDir | None, storage_options: dict[str, Any] | None
) -> Iterator[tuple[int, Any]]:
    if input_dir is None:
        return stream
    from aiolit.processing._input_dir import localized

    return localized(stream, input_dir, storage_options)


def set_env(rank: int, num_workers: int, num_nodes: int, node_rank: int) -> None:
    # LitData's fn code reads these to know which writer it is.
    os.environ["DATA_OPTIMIZER_GLOBAL_RANK"] = str(rank)
    os.environ["DATA_OPTIMIZER_NUM_WORKERS"] = str(num_workers)
    os.environ["DATA_OPTIMIZER_NUM_NODES"] = str(num_nodes)
    os.environ["DATA_OPTIMIZER_NODE_RANK"] = str(node_rank)


@dataclass(frozen=True)
class TaskResult:
    """What a task sends back: its rank, chunk entries and writer config (None if nothing written)."""

    rank: int
    entries: list[Any] = field(default_factory=list)
    config: dict[str, Any] | None = None
    num_inputs: int = 0
    num_samples: int = 0
    num_bytes: int = 0
    # Ordered streams: (segment id, number of entries written when the segment ended), in order.
    segments: list[tuple[int, int]] = field(default_factory=list)
    keys: list[Any] | None = None  # key_fn's key of every sample, in order (key_fn only)


@dataclass(frozen=True)
class WorkerTask:
    """What every worker task carries: ``fn``, its rank in the topology and the output."""

    fn: Callable[..., Any]
    rank: int
    num_workers: int
    num_nodes: int
    node_rank: int
    output_url: str
    local_output: bool
    storage_options: dict[str, Any] | None


@dataclass(frozen=True)
class OptimizeTask(WorkerTask):
    """Everything a worker needs to turn inputs into chunks for one writer rank."""

    writer_options: dict[str, Any]
    chunk_index_start: int = 0
    # The queue carries (segment id, [(position, input), ...]) runs of consecutive inputs; every
    # segment ends its last chunk, so the coordinator can order the chunks as the inputs were.
    segmented: bool = False
    use_checkpoint: bool = False
    resume: Resume | None = None  # this worker's checkpoint, when resuming a crashed run
    input_dir: InputDir | None = None
    key_fn: Callable[[Any], Any] | None = None


def _samples(fn: Callable[..., Any], item: Any) -> Iterator[Any]:
    result = fn(item)
    if inspect.isgenerator(result):
        for sample in result:
            if sample is not None:
                yield sample
    elif result is not None:
        yield result


def _fail(position: int, item: Any, what: str) -> OptimizeError:
    return OptimizeError(f"{what} on {describe_input(position, item)}:\n{traceback.format_exc()}")


def unwritable_sample(position: int, item: Any, exc: FormatError) -> OptimizeError:
    """The error for a sample ``fn`` returned that the writer cannot serialize (no fn traceback)."""
    return OptimizeError(
        f"the sample fn returned for {describe_input(position, item)} cannot be written: {exc}"
    )


def finish_writer(writer: ChunkWriter, write_dir: str, rank: int) -> tuple[list[Any], dict[str, Any]]:
    """Flush ``writer``'s last chunk; return all its entries and its index config.

    Its index shard is removed: the coordinator writes the only index, and a leftover shard would
    make a failed run look complete to readers that merge shards on their own.
    """
    entries = list(writer.done())
    config = dict(writer.config)
    shard = os.path.join(write_dir, f"{rank}.index.json")
    if os.path.exists(shard):
        os.remove(shard)
    return entries, config


def run_optimize_task(task: OptimizeTask, items: list[tuple[int, Any]] | None) -> TaskResult:
    """Run ``fn`` over the inputs and write chunks as writer ``task.rank``.

    ``items`` is a list of ``(position, input)``; ``None`` pulls them from the pool's shared queue.
    With ``task.use_checkpoint`` a checkpoint is saved each time a chunk is stored; with
    ``task.resume`` the inputs start after the checkpoint and its chunks are kept.

    Raises
    ------
    OptimizeError
        ``fn`` (or the serialization of its sample) raised; names the input and carries the traceback.
    """
    from aiolit.format import ChunkWriter
    from aiolit.processing._checkpoint import write_checkpoint

    set_env(task.rank, task.num_workers, task.num_nodes, task.node_rank)
    write_dir = task.output_url if task.local_output else tempfile.mkdtemp(prefix="aiolit-optimize-")
    uploader = None if task.local_output else Uploader(task.output_url, task.storage_options, write_dir)
    resume = task.resume
    prior: list[Any] = list(resume.entries) if resume is not None else []
    first_chunk = task.chunk_index_start
    if resume is not None and resume.next_chunk_index is not None:
        first_chunk = resume.next_chunk_index
    writer = ChunkWriter(write_dir, rank=task.rank, chunk_index_start=first_chunk, **task.writer_options)
    progress = _Progress()
    num_inputs = num_samples = 0
    num_bytes = 0
    finished: set[str] = set()  # chunks already counted (and submitted for upload)
    base = resume.inputs_done if resume is not None else 0  # inputs of this worker done before
    skip = resume.skip_samples if resume is not None else 0
    keys: list[Any] | None = None
    if task.key_fn is not None:
        from aiolit.format._keys import normalize_key

        keys = list(resume.keys) if resume is not None and resume.keys is not None else []

    def chunk_done(entry: Any) -> None:
        nonlocal num_bytes
        if entry.filename in finished:
            return
        finished.add(entry.filename)
        num_bytes += entry.chunk_bytes
        progress.add(nbytes=entry.chunk_bytes)
        if uploader is not None:
            uploader.submit(entry.filename)

    def checkpoint(inputs_done: int, skip_samples: int) -> None:
        stored = prior + writer.entries
        write_checkpoint(
            task.rank,
            stored,
            writer.config,
            inputs_done,
            skip_samples,
            writer.next_chunk_index,
            local_dir=write_dir if uploader is None else None,
            uploader=uploader,
            keys=None if keys is None else keys[: sum(entry.chunk_size for entry in stored)],
        )

    def process(position: int, item: Any, done_before: int) -> None:
        # done_before: this worker's inputs before this one (a checkpoint's resume point)
        nonlocal num_inputs, num_samples, skip
        try:
            for index, sample in enumerate(_samples(task.fn, item)):
                if skip:  # already in the checkpointed chunks (a generator's first samples)
                    skip -= 1
                    continue
                if keys is not None:
                    assert task.key_fn is not None
                    keys.append(normalize_key(task.key_fn(sample)))
                try:
                    added = writer.add(sample)
                except FormatError as exc:
                    raise unwritable_sample(position, item, exc) from None
                for entry in added:
                    chunk_done(entry)
                if added and task.use_checkpoint:
                    # the stored chunks hold every sample before this one
                    checkpoint(done_before, index)
                num_samples += 1
        except OptimizeError:
            raise
        except Exception:
            raise _fail(position, item, "fn raised") from None
        num_inputs += 1
        progress.add(items=1)

    segments: list[tuple[int, int]] = []
    try:
        if not task.segmented:
            inputs = _task_inputs(items, task.input_dir, task.storage_options)
            for local, (position, item) in enumerate(inputs):
                process(position, item, base + local)
        else:
            for segment, runs in _iter_inputs(items):
                for position, item in _localize(iter(runs), task.input_dir, task.storage_options):
                    process(position, item, 0)
                for entry in writer.close_chunk():
                    chunk_done(entry)
                segments.append((segment, len(writer.entries)))
        entries: list[Any] = list(prior)
        config: dict[str, Any] | None = resume.config if prior and resume is not None else None
        if num_samples:
            new_entries, config = finish_writer(writer, write_dir, task.rank)
            for entry in new_entries:
                chunk_done(entry)
            entries += new_entries
        if task.use_checkpoint and num_samples:
            checkpoint(base + num_inputs, 0)  # this worker is done: a rerun redoes none of it
        if uploader is not None:
            uploader.wait()
        progress.flush()
        total_samples = num_samples + sum(entry.chunk_size for entry in prior)
        return TaskResult(task.rank, entries, config, num_inputs, total_samples, num_bytes, segments, keys)
    finally:
        if uploader is not None:
            uploader.close()
            shutil.rmtree(write_dir, ignore_errors=True)


@dataclass(frozen=True)
class MapTask(WorkerTask):
    """Everything a worker needs to run a ``map`` function over its inputs."""

    input_dir: InputDir | None = None


def run_map_task(task: MapTask, items: list[tuple[int, Any]] | None) -> TaskResult:
    """Run ``fn(input, output_dir)`` over the inputs; upload new files when the output is remote.

    Raises
    ------
    OptimizeError
        ``fn`` raised; names the input and carries the traceback.
    """
    set_env(task.rank, task.num_workers, task.num_nodes, task.node_rank)
    write_dir = task.output_url if task.local_output else tempfile.mkdtemp(prefix="aiolit-map-")
    uploader = None if task.local_output else Uploader(task.output_url, task.storage_options, write_dir)
    try:
        parameters = inspect.signature(task.fn).parameters
    except (TypeError, ValueError):
        parameters = {}  # type: ignore[assignment]
    pending = list(items) if items is not None else None
    progress = _Progress()
    num_inputs = 0
    try:
        inputs = _task_inputs(pending, task.input_dir, task.storage_options)
        for index, (position, item) in enumerate(inputs):
            kwargs: dict[str, Any] = {}
            if "is_last" in parameters:
                kwargs["is_last"] = pending is not None and index == len(pending) - 1
            try:
                task.fn(item, write_dir, **kwargs)
            except Exception:
                raise _fail(position, item, "fn raised") from None
            if uploader is not None:
                # Upload what fn wrote (relative paths kept), then free the local disk.
                for root, _, files in os.walk(write_dir):
                    for name in files:
                        relative = os.path.relpath(os.path.join(root, name), write_dir)
                        if not uploader.has(relative):
                            uploader.submit(relative)
            num_inputs += 1
            progress.add(items=1)
        if uploader is not None:
            uploader.wait()
        progress.flush()
        return TaskResult(task.rank, num_inputs=num_inputs)
    finally:
        if uploader is not None:
            uploader.close()
            shutil.rmtree(write_dir, ignore_errors=True)
