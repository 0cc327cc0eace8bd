"""``from aiolit import Machine`` and ``machine=``: a clear way out instead of Lightning machines."""

from __future__ import annotations

from pathlib import Path

import pytest

import aiolit
from aiolit import Machine
from tests.processing import optfns


def test_machine_names_import_and_compare() -> None:
    assert Machine.DATA_PREP == Machine.DATA_PREP != Machine.CPU
    assert repr(Machine.A10G) == "Machine.A10G" and Machine.DATA_PREP.name == "DATA_PREP"
    assert "Machine" in aiolit.__all__
    with pytest.raises(AttributeError):
        Machine.lower_case  # noqa: B018


@pytest.mark.parametrize("call", ["optimize", "map"])
def test_machine_argument_explains_the_alternatives(tmp_path: Path, call: str) -> None:
    with pytest.raises(ValueError, match=r"Lightning AI machines are not available") as info:
        if call == "optimize":
            aiolit.optimize(optfns.logged_square, list(range(100)), str(tmp_path), num_workers=2,
                            chunk_bytes="64MB", num_nodes=2, machine=Machine.DATA_PREP)  # fmt: skip
        else:
            aiolit.map(optfns.copy_upper, ["a"], str(tmp_path), num_nodes=2, machine=Machine.DATA_PREP)
    message = str(info.value)
    assert f"{call}(machine=Machine.DATA_PREP)" in message
    assert "DATA_OPTIMIZER_NODE_RANK" in message and "executor=dask_client.get_executor()" in message
    assert not list(tmp_path.iterdir())  # refused before anything was written
