"""Functions run by optimize/map workers in the tests (importable by spawned processes)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np


def identity(x: Any) -> Any:
    return x


def square_pair(index: int) -> tuple[int, int]:
    return index, index**2


def keep_even(data: int) -> Iterator[int]:
    if data % 2 == 0:
        yield data


def safe_inverse(data: int) -> Iterator[float]:
    try:
        yield 1 / data
    except ZeroDivisionError:
        pass


def odd_or_none(i: int) -> int | None:
    return i if i % 2 else None


def repeat_i(i: int) -> Iterator[dict[str, int]]:
    for k in range(i):
        yield {"i": i, "k": k}


def image_sample(index: int) -> dict[str, Any]:
    from PIL import Image

    rng = np.random.default_rng(index)
    image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return {"index": index, "image": image, "class": int(rng.integers(10))}


def tokens(i: int) -> Iterator[np.ndarray]:
    yield np.arange(i * 10, i * 10 + 5 + i % 3, dtype=np.int64)


def fail_on_7(i: int) -> int:
    if i == 7:
        raise ValueError(f"bad input {i}")
    return i


def sigkill_on_5(i: int) -> int:
    if i == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


def with_rank(i: int) -> dict[str, int]:
    return {
        "i": i,
        "rank": int(os.environ["DATA_OPTIMIZER_GLOBAL_RANK"]),
        "workers": int(os.environ["DATA_OPTIMIZER_NUM_WORKERS"]),
        "nodes": int(os.environ["DATA_OPTIMIZER_NUM_NODES"]),
    }


def batch_sum(batch: list[int]) -> dict[str, Any]:
    return {"first": batch[0], "sum": sum(batch), "n": len(batch)}


async def async_double(i: int) -> int:
    await asyncio.sleep(0.001 * (i % 3))  # finish out of order
    return i * 2


async def async_gen(i: int) -> AsyncIterator[str]:
    for k in range(i % 3):
        await asyncio.sleep(0)
        yield f"{i}-{k}"


async def async_fail(i: int) -> int:
    if i == 3:
        raise KeyError("no such page")
    return i


def write_text(item: int, output_dir: str) -> None:
    with open(os.path.join(output_dir, f"out-{item}.txt"), "w") as f:
        f.write(f"value {item}")


def write_nested(item: int, output_dir: str) -> None:
    sub = os.path.join(output_dir, f"d{item % 2}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{item}.bin"), "wb") as f:
        f.write(bytes([item]) * (item + 1))


def map_fail(item: int, output_dir: str) -> None:
    if item == 2:
        raise RuntimeError("map failed")
