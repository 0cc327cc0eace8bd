"""Resume state of a StreamingDataset: LitData's keys, validated, turned into plan positions.

The state is a handful of numbers: the loader's sample count, its topology and the dataset's
identity. The per-worker positions are recomputed from the pure plan, so taking a state never
needs the workers.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiolit.errors import StateDictError
from aiolit.streaming._plan import EpochPlan, Interval, Topology, samples_per_worker

__all__ = ["dataset_state", "resume_counts", "validate"]


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

    def _topology(self) -> tuple[Topology, int]: ...

    def _drop_last(self, topology: Topology) -> bool: ...

    def _plan(self, topology: Topology, epoch: int) -> EpochPlan: ...

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
    from torch.utils.data import get_worker_info

    if get_worker_info() is not None:
        raise RuntimeError("state_dict() must be called in the main process, not in a DataLoader worker")
    topology, _ = ds._topology()
    state = {
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
    return state


def _same(a: Any, b: Any) -> bool:
    # JSON/torch.save round trips turn tuples into lists.
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def validate(ds: StreamingDataset, state: dict[str, Any]) -> dict[str, Any]:
    """Check ``state`` belongs to ``ds``; return a copy to resume from.

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
    return dict(state)


def resume_counts(ds: StreamingDataset, state: dict[str, Any], topology: Topology) -> tuple[int, list[int]]:
    """``(epoch, samples already produced by each worker of this rank)`` for ``state``."""
    nw = int(state["num_workers"])
    bs = int(state["batch_size"])
    checks = {
        "num_workers": (max(nw, 1), topology.num_workers),
        "batch_size": (bs, ds.batch_size),
        "world_size": (int(state.get("world_size", topology.world_size)), topology.world_size),
    }
    bad = [k for k, (a, b) in checks.items() if a != b]
    if bad and not ds.force_override_state_dict:
        detail = ", ".join(f"{k}: state has {checks[k][0]}, loader has {checks[k][1]}" for k in bad)
        raise StateDictError(f"state_dict was taken with a different topology ({detail})")
    epoch = int(state["current_epoch"])
    plan = ds._plan(topology, epoch)
    lengths = plan.worker_lengths
    batches = sum(-(-n // ds.batch_size) for n in lengths)
    yielded = min(int(state["num_samples_yielded"]), batches * ds.batch_size)
    counts = samples_per_worker(
        yielded, topology.num_workers, ds.batch_size, lengths, count_short_batches_as_full=True
    )
    return epoch, counts
