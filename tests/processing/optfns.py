"""Functions run by optimize/map workers in the option tests (importable by spawned processes)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any


def _log_and_maybe_stop(i: int) -> None:
    log = os.environ.get("AIOLIT_TEST_LOG")
    if log:
        with open(log, "a") as f:  # one short append per call: lines never interleave
            f.write(f"{i}\n")
    if str(i) == os.environ.get("AIOLIT_TEST_KILL_AT"):
        os.killpg(os.getpgrp(), signal.SIGKILL)  # the whole run: coordinator and every worker
    if str(i) == os.environ.get("AIOLIT_TEST_FAIL_AT"):
        raise RuntimeError(f"planned failure on {i}")


def logged_square(i: int) -> dict[str, int]:
    _log_and_maybe_stop(i)
    return {"i": i, "sq": i * i}


def logged_triple(i: int) -> Iterator[dict[str, int]]:
    _log_and_maybe_stop(i)
    for k in range(3):
        yield {"i": i, "k": k}


def read_file_text(path: str) -> dict[str, Any]:
    with open(path) as f:
        return {"name": os.path.basename(path), "text": f.read()}


def read_pair(item: dict[str, Any]) -> dict[str, Any]:
    with open(item["a"]) as fa, open(item["b"]) as fb:
        return {"id": item["id"], "a": fa.read(), "b": fb.read()}


def copy_upper(path: str, output_dir: str) -> None:
    with open(path) as f:
        text = f.read()
    with open(os.path.join(output_dir, os.path.basename(path) + ".up"), "w") as f:
        f.write(text.upper())


def key_of(sample: dict[str, Any]) -> str:
    return f"item-{sample['i']}"


def plus_one(sample: Any) -> Any:
    return {"i": int(sample["i"]), "sq": int(sample["sq"]), "j": int(sample["i"]) + 1}


def same_key(sample: Any) -> str:
    return "same"


def float_key(sample: Any) -> float:
    return 1.5


def unbatch(batch: dict[str, Any]) -> Iterator[dict[str, int]]:
    for i, sq in zip(batch["i"].tolist(), batch["sq"].tolist(), strict=True):
        yield {"i": int(i), "sq": int(sq), "j": int(i) + 1}


async def async_plus_one(sample: Any) -> Any:
    return plus_one(sample)


def plus_one_map(sample: Any, output_dir: str) -> None:
    with open(os.path.join(output_dir, f"{int(sample['i'])}.txt"), "w") as f:
        f.write(str(int(sample["sq"]) + 1))


def parquet_rows(data: Any) -> Iterator[dict[str, Any]]:
    table = data.read() if hasattr(data, "read_row_groups") else data  # ParquetFile or Table
    for row in table.to_pylist():
        yield {"id": int(row["id"]), "label": str(row.get("label", ""))}


def parquet_summary(data: Any, output_dir: str) -> None:
    ids = data.column("id").to_pylist()
    with open(os.path.join(output_dir, f"{ids[0]}-{ids[-1]}.txt"), "w") as f:
        f.write(",".join(str(i) for i in ids))


def sum_batch(batch: list[int]) -> dict[str, int]:
    return {"first": batch[0], "total": sum(batch)}


def array_sample(i: int) -> dict[str, Any]:
    import numpy as np

    return {"i": i, "v": np.arange(i % 7, dtype=np.float32)}


def parquet_is_last(data: Any, output_dir: str, is_last: bool = False) -> None:
    ids = data.column("id").to_pylist()
    with open(os.path.join(output_dir, f"{ids[0]}.txt"), "w") as f:
        f.write(f"{len(ids)} {is_last}")
