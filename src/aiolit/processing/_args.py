"""Argument handling shared by optimize and map: workers, nodes, start method, LitData extras."""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass
from typing import Any

from aiolit._loop import ensure_no_running_loop
from aiolit.processing._sources import sequential_split

__all__ = [
    "Topology",
    "aligned_parts",
    "check_extra_kwargs",
    "ensure_no_running_loop",
    "fast_dev_limit",
    "pack_greedily",
    "resolve_topology",
    "weighted_parts",
]

_DEFAULT_FAST_DEV_RUN = 10  # inputs per worker for fast_dev_run=True (LitData's number)

# LitData arguments aiolit accepts and ignores: they tune LitData's own machinery (downloader and
# uploader threads, DNS tweaks) that aiolit does not have. ``machine`` (a Lightning AI machine) is
# accepted only as None: anything else gets an error saying how to run on your own machines.
_IGNORED = {"num_downloaders", "num_uploaders", "optimize_dns", "broadcast_paths"}


def check_extra_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Accept LitData's tuning arguments aiolit has no use for; reject unknown ones clearly.

    Raises
    ------
    ValueError
        ``machine=`` (a Lightning AI machine): the message says how to run the job instead.
    TypeError
        An unknown keyword argument.
    """
    for key, value in kwargs.items():
        if key == "machine":
            if value is not None:
                from aiolit.processing.machine import machine_error

                raise machine_error(name, value)
            continue
        if key in _IGNORED:
            continue
        raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")


@dataclass(frozen=True)
class Topology:
    """Who this process is: ``num_workers`` writers on node ``node_rank`` of ``num_nodes``."""

    num_workers: int
    num_nodes: int
    node_rank: int
    start_method: str

    def rank(self, worker: int) -> int:
        """The global writer rank (LitData: ``node_rank * num_workers + worker``)."""
        return self.node_rank * self.num_workers + worker

    def node_ranges(self, num_items: int) -> list[range]:
        """This node's per-worker ranges: the inputs are split over every worker of every node."""
        parts = sequential_split(num_items, self.num_nodes * self.num_workers)
        return parts[self.node_rank * self.num_workers : (self.node_rank + 1) * self.num_workers]


def fast_dev_limit(fast_dev_run: bool | int) -> int | None:
    """Inputs per worker for ``fast_dev_run`` (``True``: 10, an int: that many), or None for all."""
    if fast_dev_run is False or fast_dev_run is None:
        return None
    if fast_dev_run is True:
        return _DEFAULT_FAST_DEV_RUN
    if isinstance(fast_dev_run, int) and fast_dev_run > 0:
        return fast_dev_run
    raise ValueError(f"fast_dev_run must be a bool or a positive int, got {fast_dev_run!r}")


def _default_start_method() -> str:
    # LitData: spawn, but fork in notebooks/REPLs where `fn` lives in a __main__ spawn can't import.
    import __main__

    interactive = not hasattr(__main__, "__file__") or hasattr(sys, "ps1")
    return "fork" if interactive and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def resolve_topology(num_workers: int | None, num_nodes: int | None, start_method: str | None) -> Topology:
    """Apply the defaults: ``os.cpu_count()`` workers, node count/rank from args and env.

    The node count comes from ``num_nodes`` or ``DATA_OPTIMIZER_NUM_NODES``; the node rank from
    ``DATA_OPTIMIZER_NODE_RANK`` (as LitData) or ``NODE_RANK``.

    Raises
    ------
    ValueError
        Negative workers, a bad node count/rank or an unknown start method.
    """
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
    num_workers = max(1, num_workers)  # LitData: 0 means one worker
    if num_nodes is None:
        num_nodes = int(os.environ.get("DATA_OPTIMIZER_NUM_NODES", "1") or 1)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ValueError(f"num_nodes must be a positive int, got {num_nodes!r}")
    node_rank = int(os.environ.get("DATA_OPTIMIZER_NODE_RANK", os.environ.get("NODE_RANK", "0")) or 0)
    if not 0 <= node_rank < num_nodes:
        raise ValueError(
            f"node rank {node_rank} (env DATA_OPTIMIZER_NODE_RANK/NODE_RANK) is outside num_nodes={num_nodes}"
        )
    if start_method is None:
        start_method = _default_start_method()
    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"start_method must be one of {multiprocessing.get_all_start_methods()}, got {start_method!r}"
        )
    return Topology(num_workers, num_nodes, node_rank, start_method)


def pack_greedily(weights: list[int] | list[float], num_bins: int) -> list[list[int]]:
    """LitData's greedy packing: heaviest input first, each into the lightest bin (lowest id on ties).

    Returns the input indices of each bin, in packing order (heaviest first).
    """
    order = sorted(range(len(weights)), key=lambda i: weights[i], reverse=True)  # stable, as LitData
    bins: list[list[int]] = [[] for _ in range(num_bins)]
    loads = [0.0] * num_bins
    for i in order:
        lightest = min(range(num_bins), key=lambda b: loads[b])
        bins[lightest].append(i)
        loads[lightest] += weights[i]
    return bins


def weighted_parts(weights: Any, num_items: int, topo: Topology, static: bool, name: str) -> list[list[int]]:
    """This node's per-worker input indices balanced by ``weights`` (LitData's ``weights=``).

    ``static`` (fixed inputs per worker): one bin per worker of every node, each worker's inputs in
    input order. Otherwise (workers share a queue): one bin per node, heaviest input first, so
    the long inputs start early and the short ones fill the gaps.

    Raises
    ------
    ValueError
        ``weights`` is not one positive number per input.
    """
    if isinstance(weights, str | bytes) or not hasattr(weights, "__len__"):
        raise ValueError(f"{name}(weights=...) must be a list of numbers, one per input, got {weights!r}")
    weights = list(weights)
    if len(weights) != num_items:
        raise ValueError(
            f"{name}(weights=...) has {len(weights)} weights for {num_items} inputs (after batch_size); "
            "give one weight per input"
        )
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, int | float) or not w > 0:
            raise ValueError(f"{name}(weights=...) must be positive numbers, got {w!r}")
    if static:
        bins = pack_greedily(weights, topo.num_nodes * topo.num_workers)
        mine = bins[topo.node_rank * topo.num_workers : (topo.node_rank + 1) * topo.num_workers]
        return [sorted(part) for part in mine]
    return [pack_greedily(weights, topo.num_nodes)[topo.node_rank]]


def aligned_parts(num_items: int, topo: Topology, chunk_size: int) -> list[range]:
    """LitData's ``align_chunking``: whole chunks to every worker but the last, the rest to the last.

    With one sample per input, the chunk boundaries are then those of a single-worker run.
    """
    import warnings

    world = topo.num_nodes * topo.num_workers
    per_worker = (num_items // chunk_size) // world * chunk_size
    if per_worker == 0 and topo.node_rank == 0 and world > 1:
        warnings.warn(
            f"align_chunking: chunk_size ({chunk_size}) is too large for {num_items} inputs over {world} "
            "workers; all inputs go to the last worker",
            stacklevel=3,
        )
    sizes = [per_worker] * (world - 1) + [num_items - per_worker * (world - 1)]
    starts = [sum(sizes[:i]) for i in range(world)]
    parts = [range(starts[i], starts[i] + sizes[i]) for i in range(world)]
    return parts[topo.node_rank * topo.num_workers : (topo.node_rank + 1) * topo.num_workers]
