"""``Machine``: the name LitData's multi-node examples import (``from litdata import Machine``).

In LitData it comes from ``lightning_sdk`` and picks a Lightning AI cloud machine. aiolit runs no
cloud jobs: ``Machine.DATA_PREP`` (or any other upper-case name) imports and compares, and
``optimize``/``map`` given ``machine=`` explain how to run the same job on your own machines.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Machine", "machine_error"]


class _MachineMeta(type):
    def __getattr__(cls, name: str) -> Machine:
        if name.isupper():
            return Machine(name)
        raise AttributeError(name)


class Machine(metaclass=_MachineMeta):
    """A Lightning AI machine name (``Machine.DATA_PREP``, ``Machine.CPU``, ``Machine.A10G`` ...)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Machine.{self.name}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Machine) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Machine", self.name))


def machine_error(name: str, machine: Any) -> ValueError:
    """The error for ``machine=``: what to do instead."""
    return ValueError(
        f"{name}(machine={machine!r}): Lightning AI machines are not available in aiolit (LitData "
        "starts them through a Lightning Studio). Run the same job on machines you have instead:\n"
        f"  * several machines: start this script on each of N machines with {name}(..., num_nodes=N) "
        "and the env variable DATA_OPTIMIZER_NODE_RANK=0..N-1 (one per machine) and a shared "
        "output_dir (s3://, gs://, azure:// or a shared folder); the last node writes the index;\n"
        f"  * a Dask cluster: {name}(..., executor=dask_client.get_executor()) spreads the work over "
        "its workers.\n"
        "Drop machine= to do either."
    )
