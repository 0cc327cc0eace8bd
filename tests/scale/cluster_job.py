"""A coordinator process for the cluster tests: ``python -m tests.scale.cluster_job SPEC_JSON``.

SPEC keys: ``op`` (``optimize`` or ``map``), ``url``, ``n`` (inputs ``range(n)``), ``fn`` (a name
in :mod:`tests.processing.fns` or this module), ``chunk_size``, ``num_workers``, ``scheduler``
(a Dask scheduler address; omitted: aiolit's own process pool), ``num_nodes``, ``options``
(storage_options). Prints one JSON line: ``{"ok": true}`` or ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from tests.processing import fns


def slow_square(i: int) -> dict[str, int]:
    time.sleep(0.02)
    return {"i": i, "sq": i * i, "pid": os.getpid()}


def slow_write(item: int, output_dir: str) -> None:
    time.sleep(0.02)
    with open(os.path.join(output_dir, f"out-{item}.txt"), "w") as f:
        f.write(f"value {item}")


def main(spec: dict[str, Any]) -> None:
    import aiolit

    fn = globals().get(spec["fn"]) or getattr(fns, spec["fn"])
    kwargs: dict[str, Any] = {
        "num_workers": spec.get("num_workers", 2),
        "storage_options": spec.get("options"),
        "verbose": False,
    }
    if spec.get("num_nodes"):
        kwargs["num_nodes"] = spec["num_nodes"]
    client = None
    if spec.get("scheduler"):
        from dask.distributed import Client

        client = Client(spec["scheduler"], timeout=30)
        kwargs["executor"] = client.get_executor()
    try:
        if spec["op"] == "optimize":
            aiolit.optimize(
                fn, list(range(spec["n"])), spec["url"], chunk_size=spec.get("chunk_size", 8), **kwargs
            )
        else:
            aiolit.map(fn, list(range(spec["n"])), spec["url"], **kwargs)
        print(json.dumps({"ok": True}), flush=True)
    except Exception as exc:  # reported to the test, which asserts on it
        print(json.dumps({"ok": False, "type": type(exc).__name__, "error": str(exc)}), flush=True)
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
