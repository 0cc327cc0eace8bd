"""Regenerate the keyed datasets written by LitData 0.2.76 (needs litdata==0.2.76 and polars).

    python tests/data/litdata-keys/make.py
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def sample(i: int) -> dict[str, Any]:
    return {"i": i, "v": np.full(3, i, dtype=np.int64)}


def str_key(s: dict[str, Any]) -> str:
    return f"item-{s['i']}"


def int_key(s: dict[str, Any]) -> int:
    return 1000 + 7 * int(s["i"])


if __name__ == "__main__":
    import litdata

    for name, key_fn in (("str_keys", str_key), ("int_keys", int_key)):
        out = os.path.join(HERE, name)
        shutil.rmtree(out, ignore_errors=True)
        litdata.optimize(sample, list(range(11)), out, chunk_size=3, num_workers=2, key_fn=key_fn,
                         start_method="spawn", verbose=False, keep_data_ordered=True)  # fmt: skip
