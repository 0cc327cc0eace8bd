"""StreamingDataset: LitData's streaming dataset over aiolit's async engine.

This module does not import torch: the class becomes a ``torch.utils.data.IterableDataset`` when
torch is imported (:mod:`aiolit._torch`), so ``async for`` and ``aget`` run without paying for it.

Iteration (sync or ``async for``) asks :mod:`aiolit.streaming._plan` for this worker's exact read
order, keeps the next chunks downloading (:mod:`._prefetch`) into the cache (:mod:`._cache`) and
decodes samples from mmaps in the consumer's thread (:mod:`._run`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from aiolit._torch import worker_info as get_worker_info
from aiolit.format import check_encryption
from aiolit.streaming import _state
from aiolit.streaming._bundle import MAX_BATCHES, MAX_BYTES, Packer
from aiolit.streaming._cache import parse_size
from aiolit.streaming._plan import EpochPlan, Interval, ResumePlan, Topology, chunk_intervals
from aiolit.streaming._resolve import Dir, resolve_dir
from aiolit.streaming._run import _BATCH, Need, Run
from aiolit.streaming._source import DataSource, OpenChunk
from aiolit.streaming.item_loader import BaseItemLoader, ParquetLoader, PyTreeLoader, TokensLoader

if TYPE_CHECKING:
    from torch.utils.data import IterableDataset as _IterableBase
else:
    from aiolit._torch import IterableBase as _IterableBase

__all__ = ["StreamingDataset"]

# Largest token batch a loader worker sends pickled through its pipe rather than in shared memory
# (measured: pickling wins below ~0.5 MB, the fd handshake of shared memory above).
_PIPE_BYTES = 512 * 1024

# Items at least this large are decoded by ``aget`` in a worker thread rather than on the loop.
_DECODE_INLINE_BYTES = 1 << 20

# Longest stretch (seconds) an ``async for`` runs on the caller's loop without handing it back,
# and the most samples it decodes between two looks at the clock (fast samples).
_SLICE = 0.001
_MAX_BATCH = 256
# Chunk pieces (intervals) above which ``async for`` builds a pass's plan off the loop.
_PLAN_INLINE = 2000


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _hand_back() -> asyncio.Future[None]:
    """Let the loop run what is due now before the caller's next stretch: await the result.

    ``await asyncio.sleep(0)`` is not enough: a task sleeping until a deadline that has passed
    wakes two loop iterations later (its timer fires, then the task's step is scheduled), and the
    caller, queued first, would run a whole stretch in each. A timer due now fires after every
    timer already due, and wakes the caller after the tasks those timers wake (and after the
    tasks woken by the I/O ready now): the loop lag this costs others is one stretch.
    """
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    loop.call_at(loop.time(), _wake, waiter)
    return waiter


def _distributed() -> tuple[int, int]:
    """``(world_size, rank)`` from torch.distributed when initialised, else WORLD_SIZE/RANK env."""
    import sys

    dist = sys.modules.get("torch.distributed")  # never initialised if nobody imported it
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("GLOBAL_RANK", os.environ.get("RANK", "0")))
    return world, rank


def _warn_uneven_ranks(world_size: int) -> None:
    """LitData warns too: with drop_last=False ranks may get different batch counts."""
    import sys
    import warnings

    # Point the warning at the first caller outside aiolit (the user's len() or loop).
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(
        f"drop_last=False with {world_size} ranks: the ranks may get different numbers of batches, "
        "and a training loop that runs collectives (DDP's all-reduce) then hangs on the rank with "
        "more batches. Leave drop_last unset (True when the world size is above 1) unless every "
        "rank can stop on its own.",
        UserWarning,
        stacklevel=level,
    )


class StreamingDataset(_IterableBase[Any]):
    """Stream an optimized (LitData-format) dataset from a local directory or an object store.

    Parameters
    ----------
    input_dir : str or Dir
        Local path (read in place), ``local:/path`` (copied into the cache), ``s3://``,
        ``gs://``, ``azure://`` URL, or ``Dir(path=cache, url=source)``.
    cache_dir : str, optional
        Root of the chunk cache; default ``$AIOLIT_CACHE_DIR`` or ``~/.cache/aiolit/chunks``.
    item_loader : BaseItemLoader, optional
        ``PyTreeLoader()`` (default) or ``TokensLoader(block_size)``.
    shuffle : bool
        Shuffle chunks and the items inside them, per ``(seed, epoch)``.
    drop_last : bool, optional
        Drop the samples that do not fill a batch on every rank. ``None``: True when the world
        size is above 1. ``False`` with several ranks warns (as LitData does): the ranks may then
        get different numbers of batches.
    seed : int
        Shuffle seed.
    serializers : dict, optional
        Extra or replacement serializers by name.
    max_cache_size : int or str
        Cache budget of this node (``"100GB"``), shared by the loader workers.
    subsample : float
        Fraction of the dataset per epoch (> 1 upsamples).
    encryption : Encryption, optional
        Key of an encrypted dataset.
    storage_options, session_options : dict, optional
        Client options of the object store.
    max_pre_download : int
        Chunks each worker keeps downloaded ahead of the one it reads.
    index_path : str, optional
        ``index.json`` (or its directory) to use when the dataset has none.
    force_override_state_dict : bool
        Accept a resume state that does not match this dataset.
    transform : callable or list of callables, optional
        Applied to every sample (iteration and ``ds[i]``; not to slices).
    allow_pickle : bool
        Allow decoding ``pickle`` fields (never enable it for untrusted data).
    verify : bool
        For a plain local ``input_dir`` read in place: check each chunk's sha256 (when its index
        entry has one) the first time this process opens it, raising ``CorruptChunkError`` on a
        mismatch. Off by default (it reads every chunk once more). Chunks that go through the
        cache are always verified when downloaded or adopted (docs/architecture/cache.md).

    Attributes
    ----------
    read_early : bool
        Cold start of a remote token dataset (``TokensLoader``, plain chunks) read in batches by
        a ``StreamingDataLoader``: serve the first batch of each worker from byte-range reads of
        exactly its blocks while the whole chunk downloads behind them (default True; set it to
        False on the class or an instance to always wait for whole chunks).
    """

    read_early: bool = True

    def __init__(
        self,
        input_dir: str | Dir,
        cache_dir: str | Dir | None = None,
        item_loader: BaseItemLoader | None = None,
        shuffle: bool = False,
        drop_last: bool | None = None,
        seed: int = 42,
        serializers: dict[str, Any] | None = None,
        max_cache_size: int | str = "100GB",
        subsample: float = 1.0,
        encryption: Any = None,
        storage_options: dict[str, Any] | None = None,
        session_options: dict[str, Any] | None = None,
        max_pre_download: int = 2,
        index_path: str | None = None,
        force_override_state_dict: bool = False,
        transform: Callable[[Any], Any] | Sequence[Callable[[Any], Any]] | None = None,
        allow_pickle: bool = False,
        verify: bool = False,
    ) -> None:
        super().__init__()
        _check_bool("shuffle", shuffle)
        if drop_last is not None:
            _check_bool("drop_last", drop_last)
        _check_bool("force_override_state_dict", force_override_state_dict)
        _check_bool("allow_pickle", allow_pickle)
        _check_bool("verify", verify)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if isinstance(subsample, bool) or not isinstance(subsample, int | float) or not subsample > 0:
            raise ValueError(f"subsample must be a float greater than 0, got {subsample!r}")
        if not math.isfinite(subsample):
            raise ValueError(f"subsample must be finite, got {subsample!r}")
        if (
            isinstance(max_pre_download, bool)
            or not isinstance(max_pre_download, int)
            or max_pre_download < 0
        ):
            raise ValueError(f"max_pre_download must be an int >= 0, got {max_pre_download!r}")
        if item_loader is not None and not isinstance(item_loader, BaseItemLoader):
            raise ValueError(
                f"item_loader must be a PyTreeLoader, TokensLoader or ParquetLoader, got {item_loader!r}"
            )
        for name, opts in (("storage_options", storage_options), ("session_options", session_options)):
            if opts is not None and not isinstance(opts, dict):
                raise ValueError(f"{name} must be a dict, got {type(opts).__name__}")
        if serializers is not None and not isinstance(serializers, dict):
            raise ValueError(
                f"serializers must be a dict of name -> Serializer, got {type(serializers).__name__}"
            )
        if transform is not None:
            funcs = list(transform) if isinstance(transform, list | tuple) else [transform]
            for f in funcs:
                if not callable(f):
                    raise ValueError(f"transform must be a callable or a list of callables, got {f!r}")
            # Only set when given: a subclass may define a `transform` method instead.
            self.transform = transform
        if index_path is not None and not isinstance(index_path, str | os.PathLike):
            raise ValueError(f"index_path must be a path, got {index_path!r}")
        self.max_cache_size = parse_size(max_cache_size)

        self.input_dir = resolve_dir(input_dir)
        if isinstance(cache_dir, Dir):
            if self.input_dir.url is not None and self.input_dir.path is None and cache_dir.path:
                self.input_dir = Dir(path=os.path.abspath(cache_dir.path), url=self.input_dir.url)
            cache_dir = None
        if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
            raise ValueError(f"cache_dir must be a path or a Dir, got {cache_dir!r}")
        self.cache_dir = cache_dir
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.subsample = float(subsample)
        self.max_pre_download = max_pre_download
        self.force_override_state_dict = force_override_state_dict
        self.allow_pickle = allow_pickle
        self.serializers = serializers
        self.encryption = encryption
        self._user_loader = item_loader is not None

        url = self.input_dir.url or ""
        if url.startswith("hf://") and index_path is None:
            # LitData indexes Hugging Face parquet folders on first use and caches the index.
            if not isinstance(item_loader, ParquetLoader):
                raise ValueError(
                    f"item_loader: {url} is read as Parquet; use StreamingDataset(..., item_loader=ParquetLoader())"
                )
            from aiolit.index.hf import index_hf_dataset

            index_path = index_hf_dataset(
                url, None if cache_dir is None else os.fspath(cache_dir), storage_options
            )

        self.source = DataSource(
            self.input_dir,
            cache_dir=cache_dir,
            index_path=os.fspath(index_path) if index_path is not None else None,
            storage_options=storage_options,
            session_options=session_options,
            encryption=encryption,
            verify=verify,
        )
        config = self.source.index.config
        expected = self.source.index.item_loader
        # No chunks (optimize kept no input): an empty dataset, whatever loader or key is given.
        empty = not self.source.entries
        if not empty and expected == "ParquetLoader" and not isinstance(item_loader, ParquetLoader):
            raise ValueError(
                f"item_loader: {self.source.url} is a Parquet dataset (indexed by index_parquet_dataset); "
                "read it with StreamingDataset(..., item_loader=ParquetLoader())"
            )
        self.item_loader: BaseItemLoader = item_loader or (
            TokensLoader() if expected == "TokensLoader" else PyTreeLoader()
        )
        if not empty and self.item_loader.name != expected:
            raise ValueError(
                f"item_loader: the dataset at {self.source.url} was written for {expected}, "
                f"got {type(self.item_loader).__name__}"
            )
        if not empty:
            check_encryption(config, encryption, f"encryption: the dataset at {self.source.url}")
            self.item_loader.setup(self.source.index, serializers=serializers, allow_pickle=allow_pickle)
        self._units = [self.item_loader.units(e) for e in self.source.entries]
        self.intervals: list[Interval] = chunk_intervals(
            self._units, subsample=self.subsample, shuffle=shuffle, seed=seed
        )
        self._starts = _cumulative([iv.end - iv.start for iv in self.intervals])
        self.current_epoch = 1
        self.batch_size = 1
        self.num_workers = 0
        # (batch_size, batches may travel as numpy arrays[, in bundles]): set by
        # StreamingDataLoader while it starts an iterator with torch's batching off.
        self._loader_batch: tuple[int, bool] | tuple[int, bool, bool] | None = None
        self._resume: dict[str, Any] | None = None
        # (epoch, segments): that epoch was interrupted under other topologies and resumes
        # elastically (see _state.elastic_plan); other epochs plan as usual.
        self._elastic: tuple[int, list[dict[str, Any]]] | None = None
        self._world: tuple[int, int] | None = None

    # -- LitData setters ------------------------------------------------------------------------

    def set_epoch(self, current_epoch: int) -> None:
        """Set the epoch (reshuffles); ignored while a resume state is pending, as LitData."""
        if self._resume is None:
            self.current_epoch = int(current_epoch)

    def set_shuffle(self, shuffle: bool) -> None:
        """Turn shuffling on or off (recomputes the subsample walk)."""
        _check_bool("shuffle", shuffle)
        if shuffle != self.shuffle:
            self.shuffle = shuffle
            if self.__dict__.get("_fixed_intervals"):
                return  # a split or subset keeps its regions (train_test_split, subset)
            self.intervals = chunk_intervals(
                self._units, subsample=self.subsample, shuffle=shuffle, seed=self.seed
            )
            self._starts = _cumulative([iv.end - iv.start for iv in self.intervals])

    def set_drop_last(self, drop_last: bool) -> None:
        """Set ``drop_last`` (the loader forwards its argument here)."""
        _check_bool("drop_last", drop_last)
        self.drop_last = drop_last

    def set_batch_size(self, batch_size: int) -> None:
        """The loader's batch size: worker budgets are whole batches."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size

    def set_num_workers(self, num_workers: int) -> None:
        """The loader's worker count: the epoch is split over ``world_size * num_workers``."""
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        self.num_workers = num_workers

    # -- planning -------------------------------------------------------------------------------

    def capture_world(self) -> None:
        """Record the world size/rank now (the loader calls it before starting its workers)."""
        self._world = _distributed()

    def _topology(self, iterating: bool = False) -> tuple[Topology, int]:
        """``(topology, worker id)``; ``iterating``: of a pass running in this process.

        In the main process the topology is the loader's (``num_workers`` as set by it) for
        lengths and states, but a pass iterated here is a single stream: a loader built on
        this dataset does not change what ``for x in ds`` yields.
        """
        info = get_worker_info()
        if info is not None:
            # Loader workers do not inherit the process group: use what the parent recorded.
            world, rank = self._world or _distributed()
            return Topology(world, rank, info.num_workers), info.id
        world, rank = _distributed()
        return Topology(world, rank, 1 if iterating else self.num_workers), 0

    def _drop_last(self, topology: Topology) -> bool:
        if self.drop_last is False and topology.world_size > 1 and get_worker_info() is None:
            _warn_uneven_ranks(topology.world_size)
        return self.drop_last if self.drop_last is not None else topology.world_size > 1

    def _plan(
        self, topology: Topology, epoch: int, *, batch_size: int | None = None, drop_last: bool | None = None
    ) -> EpochPlan | ResumePlan:
        """The plan of ``epoch`` for ``topology`` (the rest of it, when resumed elastically)."""
        bs = self.batch_size if batch_size is None else batch_size
        drop = self._drop_last(topology) if drop_last is None else drop_last
        elastic = self._elastic
        if elastic is not None and elastic[0] == epoch and elastic[1]:
            return _state.elastic_plan(self, elastic[1], topology, epoch, bs, drop)
        return EpochPlan(
            self.intervals,
            topology,
            batch_size=bs,
            drop_last=drop,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=epoch,
        )

    def __len__(self) -> int:
        topology, _ = self._topology()
        return self._plan(topology, self.current_epoch).rank_length

    def get_len(self, num_workers: int, batch_size: int) -> int:
        """This rank's epoch length for a loader with ``num_workers`` and ``batch_size``."""
        topology = Topology(*_distributed(), num_workers)
        plan = EpochPlan(self.intervals, topology, batch_size=batch_size, drop_last=self._drop_last(topology))
        return plan.rank_length

    def _cache_share(self, topology: Topology) -> int:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        return max(1, self.max_cache_size // (topology.num_workers * max(1, local)))

    def _new_run(self, at: tuple[int, int] | None = None) -> Run:
        topology, worker_id = self._topology(iterating=True)
        epoch = self.current_epoch
        start = (0, 0)
        if at is not None:
            # A wrapper's position (Combined/Parallel): (epoch, samples this worker already produced).
            epoch = at[0]
            plan = self._plan(topology, epoch)
            start = plan.worker(worker_id).locate(at[1])
        elif self._resume is not None:
            _state.settle(self, topology)
            assert self._resume is not None
            epoch, counts = _state.resume_counts(self, self._resume, topology)
            plan = self._plan(topology, epoch)
            start = plan.worker(worker_id).locate(counts[worker_id])
        else:
            plan = self._plan(topology, epoch)
        produce_many, finish = self._batch_producer()
        run = Run(
            plan.worker(worker_id),
            start,
            self.source,
            self._producer(),
            max_cache_bytes=self._cache_share(topology),
            depth=self.max_pre_download,
            produce_many=produce_many,
            finish=finish,
        )
        if start == (0, 0) and topology.num_workers > 1 and not self.source.in_place:
            # The loader takes batch 0 from worker 0, batch 1 from worker 1...: their first
            # chunks go first, in that order (Run.yield_first).
            firsts = [
                plan.worker(w).steps[0].chunk if plan.worker(w).steps else -1
                for w in range(topology.num_workers)
            ]
            run.yield_first(
                [c for c in firsts[:worker_id] if c >= 0], [c for c in firsts[worker_id + 1 :] if c >= 0]
            )
        return run

    def _batch_producer(
        self,
    ) -> tuple[Callable[[OpenChunk, int, list[int]], list[Any] | None] | None, Callable[[Any], Any] | None]:
        """``(produce_many, finish)`` for :class:`Run`: batched decoding of plain PyTree chunks.

        ``(None, None)`` when a subclass overrides ``__getitem__`` (it sees every sample) or the
        loader is not a :class:`PyTreeLoader`. ``produce_many`` returns None for chunks that are
        not plain (encrypted, compressed per sample or framed): the run then loads them per item.
        """
        loader = self.item_loader
        if type(self).__getitem__ is not StreamingDataset.__getitem__ or not isinstance(loader, PyTreeLoader):
            return None, None
        load_many = loader.load_many

        def produce_many(chunk: OpenChunk, chunk_id: int, ks: list[int]) -> list[Any] | None:
            if chunk.view.plain() is None:
                return None
            return load_many(chunk, ks)

        transform = self._transforms()
        if not transform:
            return produce_many, None
        if len(transform) == 1:
            return produce_many, transform[0]

        def finish(item: Any) -> Any:
            for f in transform:
                item = f(item)
            return item

        return produce_many, finish

    def _producer(self) -> Callable[[OpenChunk, int, int], Any]:
        if type(self).__getitem__ is not StreamingDataset.__getitem__:
            # A subclass' __getitem__ sees every sample (LitData calls it during iteration too).
            getitem = self.__getitem__
            return lambda chunk, chunk_id, k: getitem(_Located(chunk, chunk_id, k))
        load = self.item_loader.load
        transform = self._transforms()
        if not transform:
            return lambda chunk, chunk_id, k: load(chunk, k)

        def produce(chunk: OpenChunk, chunk_id: int, k: int) -> Any:
            item = load(chunk, k)
            for f in transform:
                item = f(item)
            return item

        return produce

    def _transforms(self) -> list[Callable[[Any], Any]]:
        transform = getattr(self, "transform", None)
        if transform is None:
            return []
        return list(transform) if isinstance(transform, list | tuple) else [transform]

    def _finish_epoch(self) -> None:
        self._resume = None
        self.current_epoch += 1

    # -- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        if self._loader_batch is None:
            return self._iter_at(None)
        # A StreamingDataLoader that switched torch's batching off: yield its batches.
        size, by_value, *bundle = self._loader_batch
        if not self._can_batch_tokens():
            return self._collated(size)
        loader = self.item_loader
        assert isinstance(loader, TokensLoader) and loader.block_size is not None
        # Small batches travel from a worker faster pickled through the pipe than as shared
        # memory (one fd handshake each): those are numpy arrays the loader turns into tensors.
        row_bytes = loader.block_size * loader.dtype.itemsize
        as_numpy = by_value and get_worker_info() is not None and size * row_bytes <= _PIPE_BYTES
        cap = min(MAX_BATCHES, MAX_BYTES // (size * row_bytes))
        if by_value and bundle and bundle[0] and cap > 1 and get_worker_info() is not None:
            # Several batches per message: torch's per-item cost would bound the epoch (_bundle).
            packer = Packer(loader.batch_allocator(), size, cap)
            return packer.bundles(self._iter_at(None, batch=size, new=packer.new))
        return self._iter_at(None, batch=size, as_numpy=as_numpy)

    def _can_batch_tokens(self) -> bool:
        """Whether iteration can yield whole token batches (``TokensLoader.gather``).

        True for a :class:`TokensLoader` (whose reading methods are not overridden) without
        transforms, in a class that does not override ``__getitem__`` or iteration: a batch is
        then exactly ``default_collate`` of its blocks.
        """
        loader, cls = self.item_loader, type(self)
        methods = ("load", "block", "wrap", "batch_buffer", "batch_allocator", "gather")
        return (
            isinstance(loader, TokensLoader)
            and all(getattr(type(loader), m) is getattr(TokensLoader, m) for m in methods)
            and not self._transforms()
            and all(
                getattr(cls, m) is getattr(StreamingDataset, m)
                for m in ("__getitem__", "__iter__", "_iter_at", "_producer", "_new_run")
            )
        )

    def _collated(self, size: int) -> Iterator[Any]:
        """Batches of ``size`` samples through ``default_collate`` (what torch's batching does)."""
        from torch.utils.data import default_collate

        samples = self._iter_at(None)
        try:
            while batch := list(itertools.islice(samples, size)):
                yield default_collate(batch)
        finally:
            samples.close()  # type: ignore[attr-defined]

    def _iter_at(
        self,
        at: tuple[int, int] | None,
        *,
        batch: int | None = None,
        as_numpy: bool = False,
        new: Callable[[int], tuple[Any, Any]] | None = None,
    ) -> Iterator[Any]:
        """This worker's samples; ``at=(epoch, skip)``: of ``epoch`` after the first ``skip``.

        ``batch``: yield this worker's batches of that many token blocks, each one tensor
        (a numpy array with ``as_numpy``; see :meth:`_can_batch_tokens`), instead of the blocks;
        ``new(rows)`` -> ``(batch, numpy view)`` allocates them instead (``Packer.new``).
        """
        run = self._new_run(at)
        if batch is None:
            walk = run.walk()
        else:
            loader = self.item_loader
            assert isinstance(loader, TokensLoader)

            walk = run.walk_batches(batch, new or loader.batch_allocator(as_numpy=as_numpy), loader.gather)
            if self.source.range_readable and self.read_early:
                assert loader.block_size is not None
                run.read_early(batch, loader.dtype.itemsize, loader.block_size)
        reply: OpenChunk | None = None
        try:
            while True:
                try:
                    out = walk.send(reply)
                except StopIteration:
                    break
                reply = None
                if type(out) is Need:
                    reply = run.open_sync(out.step, out.items)
                    continue
                yield out
            if at is None:
                self._finish_epoch()
        finally:
            walk.close()
            run.close_sync()

    def __aiter__(self) -> AsyncIterator[Any]:
        """Iterate on the caller's running event loop (downloads overlap with the consumer)."""
        return self._aiter_at(None)

    async def _aiter_at(self, at: tuple[int, int] | None) -> AsyncIterator[Any]:
        """:meth:`_iter_at` for ``async for``."""
        # A pass starts with a hand-back, so the end of the previous pass (up to a slice) and
        # this one's setup (the plan: O(chunks)) are two stretches, not one.
        await _hand_back()
        clock = time.perf_counter
        if len(self.intervals) > _PLAN_INLINE:
            # The plan costs ~1 us of CPU per chunk: for many chunks it is built in a thread
            # (the loop then waits at most a GIL switch interval for its turn).
            run = await asyncio.to_thread(self._new_run, at)
            last = clock()
        else:
            last = clock()
            run = self._new_run(at)
        due = last + _SLICE
        walk = run.walk(pause=True)
        reply: OpenChunk | None = None
        try:
            while True:
                try:
                    out = walk.send(reply)
                except StopIteration:
                    break
                reply = None
                if type(out) is Need:
                    if out.step >= 0:
                        # Opening an in-place (or already downloaded) chunk does not suspend:
                        # the slice goes on (`due` stays); only the pace is measured anew.
                        reply = await run.open_async(out.step)
                        last = clock()
                        continue
                    # A batch of samples (decode and the consumer's work) is done. Keep a batch
                    # well under _SLICE, and hand the loop back once _SLICE has passed.
                    now = clock()
                    per_item = (now - last) / max(1, out.count)
                    run.batch = (
                        max(1, min(_MAX_BATCH, int(_SLICE / 4 / per_item))) if per_item > 0 else _BATCH
                    )
                    if now >= due:
                        await _hand_back()
                        now = clock()
                        due = now + _SLICE
                    last = now
                    continue
                yield out
            if at is None:
                self._finish_epoch()
        finally:
            walk.close()
            await run.aclose()

    # -- closing --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release what this dataset holds open: ``await ds.aclose()`` when a service is done.

        Stops the prefetchers of this loop's unfinished ``async for`` iterators (broken out of,
        cancelled or abandoned) and closes the connections of this loop and of aiolit's loop
        thread. The dataset stays usable: a later read reopens what it needs.
        """
        await self.source.aclose()

    def close(self) -> None:
        """:meth:`aclose` for sync code (``with StreamingDataset(...) as ds:``)."""
        self.source.close()

    async def __aenter__(self) -> StreamingDataset:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> StreamingDataset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def subset(self, indices: Sequence[int] | slice) -> StreamingDataset:
        """A copy restricted to the given sample indices (or a slice), in that order."""
        from aiolit.streaming.split import subset

        return subset(self, indices)

    # -- random access --------------------------------------------------------------------------

    def _locate(self, index: int) -> tuple[int, int]:
        total = self._starts[-1]
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"dataset indices must be int or slice, got {type(index).__name__}")
        if index < 0:
            index += total
        if not 0 <= index < total:
            raise IndexError(f"index {index} is out of range for a dataset of length {total}")
        import bisect

        j = bisect.bisect_right(self._starts, index) - 1
        iv = self.intervals[j]
        return iv.chunk, iv.start + index - self._starts[j]

    def __getitem__(self, index: Any) -> Any:
        """``ds[i]``: sample ``i`` of the (subsampled) dataset, transformed; ``ds[a:b]``: a list.

        ``ds["key"]``: the sample ``key_fn`` gave that key (see :meth:`get_by_key`).
        """
        if isinstance(index, str):
            return self.get_by_key(index)
        if isinstance(index, _Located):
            item = self.item_loader.load(index.chunk, index.k)
        elif isinstance(index, slice):
            return [self._read(*self._locate(i)) for i in range(*index.indices(self._starts[-1]))]
        else:
            item = self._read(*self._locate(index))
        for f in self._transforms():
            item = f(item)
        return item

    def _read(self, chunk_id: int, k: int) -> Any:
        from aiolit import _loop

        source = self.source
        if source.in_place:
            return self.item_loader.load(self._open_cached(chunk_id), k)
        if (
            source.range_readable
            and isinstance(self.item_loader, PyTreeLoader)
            and not self._cached(chunk_id)
        ):
            payload = _loop.run(source.fetch_item(chunk_id, k))
            if payload:  # empty: an Arrow-footer chunk (rows after the items), read whole below
                return self.item_loader.decode(payload)
        return self.item_loader.load(_loop.run(self._aopen(chunk_id)), k)

    def get_by_key(self, key: Any) -> Any:
        """The sample whose ``optimize(key_fn=...)`` key is ``key`` (a str or an int), transformed.

        Raises
        ------
        KeyError
            No sample has this key, or the dataset was written without ``key_fn``.
        """
        from aiolit import _loop

        return _loop.run(self.aget_by_key(key))

    async def aget_by_key(self, key: Any) -> Any:
        """:meth:`get_by_key` on the caller's loop."""
        from aiolit import _loop
        from aiolit.streaming._keys import load_key_rows, locate_key

        rows = self.__dict__.get("_key_rows")
        if rows is None:  # read on aiolit's loop thread, as aget's chunk reads
            rows = self.__dict__["_key_rows"] = await _loop.hop(load_key_rows(self.source))
        chunk_id, k = locate_key(rows, [e.chunk_size for e in self.source.entries], key)
        return await self._aget_located(chunk_id, k)

    async def aget(self, index: int | str) -> Any:
        """``await ds.aget(i)``: :meth:`__getitem__` for an int (or a key), awaited on the caller's loop.

        Remote reads run on aiolit's loop thread (the caller's loop only waits); large items are
        decoded in a worker thread.
        """
        if isinstance(index, str):
            return await self.aget_by_key(index)
        return await self._aget_located(*self._locate(index))

    async def _aget_located(self, chunk_id: int, k: int) -> Any:
        from aiolit import _loop

        source = self.source
        if source.in_place:
            item = self.item_loader.load(self._open_cached(chunk_id), k)
        else:
            payload = b""
            if (
                source.range_readable
                and isinstance(self.item_loader, PyTreeLoader)
                and not self._cached(chunk_id)
            ):
                payload = await _loop.hop(source.fetch_item(chunk_id, k))
            # empty: not range-read, or an Arrow-footer chunk (rows after the items)
            if payload and isinstance(self.item_loader, PyTreeLoader):
                if len(payload) < _DECODE_INLINE_BYTES:
                    item = self.item_loader.decode(payload)
                else:
                    item = await asyncio.to_thread(self.item_loader.decode, payload)
            else:
                item = self.item_loader.load(await _loop.hop(self._aopen(chunk_id)), k)
        for f in self._transforms():
            item = f(item)
        return item

    def _cached(self, chunk_id: int) -> bool:
        assert self.source.cache_dir is not None
        return (self.source.cache_dir / self.source.names[chunk_id]).exists()

    def _open_cached(self, chunk_id: int) -> OpenChunk:
        # Keep the last chunk open: sequential ds[i] calls then cost one mmap per chunk.
        last = self.__dict__.get("_last_open")
        if last is not None and last[0] == chunk_id:
            chunk: OpenChunk = last[1]
            return chunk
        chunk = self.source.open_local(chunk_id)
        self.__dict__["_last_open"] = (chunk_id, chunk)
        return chunk

    async def _aopen(self, chunk_id: int) -> OpenChunk:
        # Through the cache, within this process's share of max_cache_size (LRU for random access).
        return await self.source.open_random(chunk_id, self._cache_share(self._topology()[0]))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_last_open", None)
        state.pop("_elastic_cache", None)
        return state

    # -- state ----------------------------------------------------------------------------------

    def state_dict(self, num_samples_yielded: int, num_workers: int, batch_size: int) -> dict[str, Any]:
        """LitData's resume state after the loader yielded ``num_samples_yielded`` samples."""
        return _state.dataset_state(self, num_samples_yielded, num_workers, batch_size)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from ``state_dict`` at the next iteration (validated; see StateDictError)."""
        self._resume = _state.validate(self, state_dict)

    def reset_state_dict(self) -> None:
        """Forget a loaded resume state."""
        self._resume = None

    def _settle_resume(self) -> int | None:
        """Fit a pending resume state to the loader's topology (elastic when it changed).

        Returns the loader's sample count to continue from, or None without a pending state.
        """
        if self._resume is None:
            return None
        _state.settle(self, self._topology()[0])
        assert self._resume is not None
        return int(self._resume["num_samples_yielded"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(input_dir={self.source.url!r}, chunks={len(self.source.entries)}, "
            f"samples={self._starts[-1]}, shuffle={self.shuffle}, item_loader={type(self.item_loader).__name__})"
        )


class _Located:
    """An index handed to a subclass' ``__getitem__`` during iteration (LitData's ChunkedIndex)."""

    __slots__ = ("chunk", "chunk_index", "k")

    def __init__(self, chunk: OpenChunk, chunk_index: int, k: int) -> None:
        self.chunk = chunk
        self.chunk_index = chunk_index
        self.k = k

    @property
    def index(self) -> int:
        return self.k


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def _cumulative(sizes: list[int]) -> list[int]:
    out = [0]
    for s in sizes:
        out.append(out[-1] + s)
    return out
