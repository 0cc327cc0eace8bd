"""Resume state of a StreamingDataset: LitData's keys, validated, turned into plan positions.

The state is a handful of numbers: the loader's sample count, its topology and the dataset's
identity. The per-worker positions are recomputed from the pure plan, so taking a state never
needs the workers.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiolit.errors import StateDictError
from aiolit.streaming._plan import (
    EpochPlan,
    Interval,
    ResumePlan,
    Topology,
    remaining,
    samples_per_worker,
    worker_budgets,
)

__all__ = ["dataset_state", "elastic_plan", "resume_counts", "settle", "validate"]


class StreamingDataset(Protocol):
    """What the resume logic reads and sets on a ``StreamingDataset`` (typed structurally, so this
    module does not import ``dataset.py``, which imports it)."""

    input_dir: Any
    item_loader: Any
    source: Any
    _user_loader: bool
    intervals: list[Interval]
    current_epoch: int
    seed: int
    shuffle: bool
    drop_last: bool | None
    force_override_state_dict: bool
    batch_size: int
    _resume: dict[str, Any] | None
    _elastic: tuple[int, list[dict[str, Any]]] | None
    __dict__: dict[str, Any]

    def _topology(self, iterating: bool = False) -> tuple[Topology, int]: ...

    def _drop_last(self, topology: Topology) -> bool: ...

    def _plan(
        self, topology: Topology, epoch: int, *, batch_size: int | None = None, drop_last: bool | None = None
    ) -> EpochPlan | ResumePlan: ...

    def set_shuffle(self, shuffle: bool) -> None: ...


_REQUIRED = ("num_samples_yielded", "num_workers", "batch_size", "current_epoch", "seed", "shuffle")


def _identity(ds: StreamingDataset) -> dict[str, Any]:
    return {
        "input_dir_path": ds.input_dir.path,
        "input_dir_url": ds.input_dir.url,
        "item_loader": ds.item_loader.state_dict() if ds._user_loader else None,
        "subsampled_files": [ds.source.entries[iv.chunk].filename for iv in ds.intervals],
        "region_of_interest": [(iv.start, iv.end) for iv in ds.intervals],
    }


def dataset_state(
    ds: StreamingDataset, num_samples_yielded: int, num_workers: int, batch_size: int
) -> dict[str, Any]:
    """The state LitData's ``StreamingDataset.state_dict`` returns (same keys, same meaning)."""
    from aiolit._torch import worker_info as get_worker_info

    if get_worker_info() is not None:
        raise RuntimeError("state_dict() must be called in the main process, not in a DataLoader worker")
    topology, _ = ds._topology()
    state: dict[str, Any] = {
        "num_samples_yielded": int(num_samples_yielded),
        "num_workers": int(num_workers),
        "batch_size": int(batch_size),
        "current_epoch": int(ds.current_epoch),
        "cache_dir_path": str(ds.source.cache_dir) if ds.source.cache_dir is not None else None,
        "drop_last": ds._drop_last(topology),
        "seed": ds.seed,
        "shuffle": ds.shuffle,
        "world_size": topology.world_size,
    }
    state.update(_identity(ds))
    if ds._elastic is not None and ds._elastic[0] == ds.current_epoch and ds._elastic[1]:
        state["elastic"] = ds._elastic[1]
    return state


def _same(a: Any, b: Any) -> bool:
    # JSON/torch.save round trips turn tuples into lists.
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def epoch_complete(state: dict[str, Any], rank: int = 0) -> bool:
    """Whether ``state`` was taken once its loader had yielded its whole epoch (on this rank).

    Computed from the state alone: its regions of interest, topology and batch size give the
    epoch's batches (the loader counts ``batch_size`` per batch, short ones included).
    """
    roi = state.get("region_of_interest")
    if not isinstance(roi, list | tuple):
        return False
    try:
        num_items = sum(int(end) - int(start) for start, end in roi)
        world = max(1, int(state.get("world_size", 1)))
        nw = max(1, int(state["num_workers"]))
        bs = max(1, int(state["batch_size"]))
        drop = bool(state.get("drop_last", world > 1))
        budgets = worker_budgets(num_items, world, nw, batch_size=bs, drop_last=drop)
        rank = min(rank, world - 1)
        batches = sum(-(-int(b) // bs) for b in budgets[rank])
        return int(state["num_samples_yielded"]) >= batches * bs
    except (TypeError, ValueError):
        return False


def validate(ds: StreamingDataset, state: dict[str, Any]) -> dict[str, Any] | None:
    """Check ``state`` belongs to ``ds``; return a copy to resume from.

    ``None`` when the state was taken at the end of an epoch of a different dataset: then
    only the epoch carries over (``ds.current_epoch`` is the next one).

    Raises
    ------
    StateDictError
        A missing key, or a different dataset/seed/shuffle/drop_last/item loader, unless the
        dataset was built with ``force_override_state_dict=True`` (then the state's seed,
        shuffle and drop_last are adopted so the order continues).
    """
    if not isinstance(state, dict):
        raise StateDictError(f"state_dict must be a dict, got {type(state).__name__}")
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise StateDictError(
            f"state_dict is missing {missing}; was it made by StreamingDataset.state_dict()?"
        )
    mine = _identity(ds)
    mine.update({"seed": ds.seed, "shuffle": ds.shuffle})
    if ds.drop_last is not None:
        mine["drop_last"] = ds.drop_last
    bad = [k for k, v in mine.items() if k in state and not _same(state[k], v)]
    if bad and not ds.force_override_state_dict and epoch_complete(state, ds._topology()[0].rank):
        # Taken at the end of an epoch (of another dataset, or other settings): nothing of it
        # is left to resume, only the epoch carries over (as LitData). ``None``: start afresh.
        ds.current_epoch = int(state["current_epoch"]) + 1
        return None
    if bad and not ds.force_override_state_dict:
        detail = ", ".join(f"{k}: state has {state[k]!r}, dataset has {mine[k]!r}" for k in bad[:3])
        raise StateDictError(
            f"state_dict does not match this dataset ({detail}); "
            "pass force_override_state_dict=True to resume anyway"
        )
    if bad:
        if "seed" in bad:
            ds.seed = int(state["seed"])
        if "shuffle" in bad:
            ds.set_shuffle(bool(state["shuffle"]))
        if "drop_last" in bad:
            ds.drop_last = bool(state["drop_last"])
    ds.current_epoch = int(state["current_epoch"])
    segments = state.get("elastic")
    if segments is not None and not _valid_segments(segments):
        raise StateDictError(
            "state_dict['elastic'] is malformed; was it made by StreamingDataset.state_dict()?"
        )
    ds._elastic = (ds.current_epoch, list(segments)) if segments else None
    return dict(state)


def resume_counts(ds: StreamingDataset, state: dict[str, Any], topology: Topology) -> tuple[int, list[int]]:
    """``(epoch, samples already produced by each worker of this rank)`` for a settled ``state``."""
    epoch = int(state["current_epoch"])
    plan = ds._plan(topology, epoch)
    lengths = plan.worker_lengths
    given = state.get("worker_counts")
    if given is not None:
        # in_order=False: the loader counted each worker's batches itself.
        if len(given) != len(lengths):
            raise StateDictError(f"worker_counts has {len(given)} entries for {len(lengths)} workers")
        return epoch, [min(int(c), n) for c, n in zip(given, lengths, strict=True)]
    batches = sum(-(-n // ds.batch_size) for n in lengths)
    yielded = min(int(state["num_samples_yielded"]), batches * ds.batch_size)
    counts = samples_per_worker(
        yielded, topology.num_workers, ds.batch_size, lengths, count_short_batches_as_full=True
    )
    return epoch, counts


# -- elastic resume ----------------------------------------------------------------------------
#
# A state names its epoch, topology and loader count. From those the pure plan gives how many
# samples every (rank, worker) had produced (ranks step in lockstep: each yielded the same number
# of batches), hence which samples of the epoch were consumed. When the loader that resumes has
# another world size, worker count or batch size, the samples left are dealt to it afresh
# (ResumePlan) and the state becomes a "segment" of the epoch's history: a state taken in the
# resumed epoch carries the list, so a second change of topology composes with the first.

_SEGMENT_KEYS = ("world_size", "num_workers", "batch_size", "drop_last", "counts")


def _valid_segments(segments: Any) -> bool:
    if not isinstance(segments, list | tuple):
        return False
    for seg in segments:
        if not isinstance(seg, dict) or any(k not in seg for k in _SEGMENT_KEYS):
            return False
        counts = seg["counts"]
        if not isinstance(counts, list | tuple) or len(counts) != int(seg["world_size"]):
            return False
        if any(not isinstance(row, list | tuple) or len(row) != int(seg["num_workers"]) for row in counts):
            return False
    return True


def elastic_plan(
    ds: StreamingDataset,
    segments: list[dict[str, Any]],
    topology: Topology,
    epoch: int,
    batch_size: int,
    drop_last: bool,
) -> ResumePlan:
    """The rest of ``epoch`` after ``segments`` (each: a topology and its workers' counts)."""
    key = json.dumps(
        [segments, topology.world_size, topology.rank, topology.num_workers, epoch, batch_size, drop_last]
    )
    cache = ds.__dict__.setdefault("_elastic_cache", {})
    if key in cache:
        plan: ResumePlan = cache[key]
        return plan
    first = segments[0]
    previous: EpochPlan | ResumePlan = EpochPlan(
        ds.intervals,
        Topology(int(first["world_size"]), 0, int(first["num_workers"])),
        batch_size=int(first["batch_size"]),
        drop_last=bool(first["drop_last"]),
        shuffle=ds.shuffle,
        seed=ds.seed,
        epoch=epoch,
    )
    pieces = remaining(previous, first["counts"])
    for seg in segments[1:]:
        previous = ResumePlan(
            pieces,
            Topology(int(seg["world_size"]), 0, int(seg["num_workers"])),
            batch_size=int(seg["batch_size"]),
            drop_last=bool(seg["drop_last"]),
            seed=ds.seed,
            epoch=epoch,
        )
        pieces = remaining(previous, seg["counts"])
    plan = ResumePlan(pieces, topology, batch_size=batch_size, drop_last=drop_last, seed=ds.seed, epoch=epoch)
    cache.clear()  # one resumed epoch at a time
    cache[key] = plan
    return plan


def settle(ds: StreamingDataset, topology: Topology) -> None:
    """Fit the pending resume state to ``topology``; a changed topology resumes elastically.

    Same world size, worker count and batch size: nothing to do (the resume is positional and
    yields exactly what the uninterrupted run would have). Otherwise the consumed samples are
    recomputed from the state, the state's topology is appended to the epoch's segments, and
    the state is rewritten as "nothing consumed yet of the rest, on this topology".
    """
    state = ds._resume
    if state is None:
        return
    world = int(state.get("world_size", topology.world_size))
    nw = max(1, int(state["num_workers"]))
    bs = int(state["batch_size"])
    if (world, nw, bs) == (topology.world_size, topology.num_workers, ds.batch_size):
        return
    epoch = int(state["current_epoch"])
    segments = list(state.get("elastic") or [])
    ds._elastic = (epoch, segments) if segments else None
    old_topology = Topology(world, 0, nw)
    drop = bool(state.get("drop_last", ds._drop_last(old_topology)))
    old = ds._plan(old_topology, epoch, batch_size=bs, drop_last=drop)
    n = int(state["num_samples_yielded"])
    given = state.get("worker_counts")
    if given is not None and world > 1:
        raise StateDictError(
            "state_dict was taken by an in_order=False loader of a multi-rank job: its other ranks' "
            "positions are unknown, so it resumes only on the same world size, num_workers and batch_size"
        )
    counts: list[list[int]] = []
    for r in range(world):
        lengths = [int(b) for b in old.budgets[r]]
        if given is not None:
            if len(given) != nw:
                raise StateDictError(f"worker_counts has {len(given)} entries for {nw} workers")
            row = [int(c) for c in given]
        else:
            cap = sum(-(-x // bs) for x in lengths) * bs
            row = samples_per_worker(min(n, cap), nw, bs, lengths, count_short_batches_as_full=True)
        counts.append([min(c, x) for c, x in zip(row, lengths, strict=True)])
    segments.append(
        {"world_size": world, "num_workers": nw, "batch_size": bs, "drop_last": drop, "counts": counts}
    )
    ds._elastic = (epoch, segments)
    new = dict(state)
    new.pop("worker_counts", None)
    new.update(
        num_samples_yielded=0,
        num_workers=topology.num_workers,
        batch_size=ds.batch_size,
        world_size=topology.world_size,
        drop_last=ds._drop_last(topology),
        elastic=segments,
    )
    ds._resume = new
