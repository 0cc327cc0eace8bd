"""Argument handling shared by optimize and map: workers, nodes, start method, LitData extras."""

from __future__ import annotations

import multiprocessing
import os
import sys
from dataclasses import dataclass
from typing import Any

from aiolit._loop import ensure_no_running_loop
from aiolit.processing._sources import sequential_split

__all__ = ["Topology", "check_extra_kwargs", "ensure_no_running_loop", "fast_dev_limit", "resolve_topology"]

_DEFAULT_FAST_DEV_RUN = 10  # inputs per worker for fast_dev_run=True (LitData's number)

# LitData arguments aiolit accepts and ignores: they tune LitData's own machinery (downloader and
# uploader threads, DNS tweaks, Lightning machines) that aiolit does not have.
_IGNORED = {"num_downloaders", "num_uploaders", "optimize_dns", "machine", "broadcast_paths"}
# LitData arguments aiolit does not implement: accepted only at their "off" value.
_UNSUPPORTED_OFF: dict[str, Any] = {
    "input_dir": None,
    "weights": None,
    "align_chunking": False,
    "compression_level": None,
    "compression_batch_size": None,
    "reader": None,
    "use_checkpoint": False,
    "key_fn": None,
}


def check_extra_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Accept LitData's other keyword arguments at their defaults; reject the rest clearly.

    Raises
    ------
    ValueError
        An unsupported option set to a non-default value, or an unknown keyword argument.
    """
    for key, value in kwargs.items():
        if key in _IGNORED:
            continue
        if key in _UNSUPPORTED_OFF:
            if value != _UNSUPPORTED_OFF[key] and value is not None:
                raise ValueError(f"{name}({key}=...) is not supported by aiolit yet (got {value!r})")
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
