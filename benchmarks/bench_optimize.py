"""optimize() throughput: aiolit vs litdata, side by side, same inputs, same worker count.

Workloads: small samples (a dict of ints and a short string) and small JPEG images opened with PIL
(stored as JPEG bytes by both libraries). Each run happens in a fresh subprocess so the peak RSS
(summed over the whole process tree, sampled every 20 ms) is per run.

    PYTHONPATH=src python benchmarks/bench_optimize.py [--small 20000] [--images 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any


def small_sample(i: int) -> dict[str, Any]:
    return {"index": i, "label": i % 10, "name": f"sample-{i}"}


def open_jpeg(path: str) -> dict[str, Any]:
    from PIL import Image

    return {"image": Image.open(path), "label": len(path) % 10}


def _make_jpegs(folder: str, count: int) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = os.path.join(folder, f"img-{i:06d}.jpg")
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        with open(path, "wb") as f:
            f.write(buffer.getvalue())
        paths.append(path)
    return paths


def _run_one(library: str, workload: str, inputs_file: str, output_dir: str, workers: int) -> None:
    """Child process: one optimize() call; prints the elapsed seconds."""
    with open(inputs_file) as f:
        inputs = json.load(f)
    fn = small_sample if workload == "small" else open_jpeg
    if library == "aiolit":
        from aiolit.processing import optimize
    else:
        from litdata import optimize
    start = time.perf_counter()
    optimize(fn=fn, inputs=inputs, output_dir=output_dir, num_workers=workers, chunk_bytes="64MB",
             keep_data_ordered=True, start_method="spawn", verbose=False)  # fmt: skip
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _measure(library: str, workload: str, inputs_file: str, workers: int) -> dict[str, float]:
    output_dir = tempfile.mkdtemp(prefix=f"bench-{library}-")
    shutil.rmtree(output_dir)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", library, workload, inputs_file, output_dir, str(workers)],
        stdout=subprocess.PIPE,
        env=env,
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{library} {workload} failed with exit code {proc.returncode}")
    seconds = json.loads(out.decode().strip().splitlines()[-1])["seconds"]
    size = sum(os.path.getsize(os.path.join(output_dir, n)) for n in os.listdir(output_dir))
    shutil.rmtree(output_dir, ignore_errors=True)
    return {"seconds": seconds, "bytes": size, "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20000, help="number of small samples")
    parser.add_argument("--images", type=int, default=2000, help="number of 64x64 JPEG images")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="bench-optimize-")
    try:
        jpeg_dir = os.path.join(scratch, "jpegs")
        os.makedirs(jpeg_dir)
        workloads = {"small": list(range(args.small)), "jpeg": _make_jpegs(jpeg_dir, args.images)}
        print(
            f"{'workload':8} {'library':7} {'samples/s':>10} {'seconds':>8} {'out MB':>8} {'peak RSS MB':>12}"
        )
        for workload, inputs in workloads.items():
            inputs_file = os.path.join(scratch, f"{workload}.json")
            with open(inputs_file, "w") as f:
                json.dump(inputs, f)
            results = {}
            for library in ("aiolit", "litdata"):
                r = _measure(library, workload, inputs_file, args.workers)
                results[library] = r
                print(
                    f"{workload:8} {library:7} {len(inputs) / r['seconds']:10.0f} {r['seconds']:8.2f} "
                    f"{r['bytes'] / 1e6:8.2f} {r['peak_rss'] / 1e6:12.0f}"
                )
            a, b = results["aiolit"], results["litdata"]
            print(
                f"{workload:8} ratio   speed x{b['seconds'] / a['seconds']:.2f} (aiolit/litdata), "
                f"bytes x{a['bytes'] / b['bytes']:.3f}, peak RSS x{a['peak_rss'] / b['peak_rss']:.2f}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _run_one(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        main()
