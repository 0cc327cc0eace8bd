"""Issue 12, "errors a newcomer understands": the write path's messages."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from aiolit import optimize
from aiolit.errors import OptimizeError, RetriesExhaustedError, StorePermissionError
from tests import servers
from tests.reliability._helpers import env, write_script


def returns_lock(i: int) -> dict[str, Any]:
    return {"i": i, "x": threading.Lock()}


async def returns_lock_async(i: int) -> dict[str, Any]:
    return {"i": i, "x": threading.Lock()}


@pytest.mark.parametrize("fn", [returns_lock, returns_lock_async], ids=["process", "async"])
def test_unserializable_sample_names_field_and_type(tmp_path: Path, fn: Any) -> None:
    with pytest.raises(OptimizeError) as info:
        optimize(fn, [0, 1], str(tmp_path), chunk_size=2, num_workers=1, start_method="fork", verbose=False)
    message = str(info.value)
    assert "field `x` of type `lock` cannot be serialized" in message
    assert "fn raised" not in message  # fn did not raise: its sample cannot be written


def _dead_endpoint() -> str:
    return f"http://127.0.0.1:{servers.pick_port()}"  # a free port: nothing listens there


def test_endpoint_down_fails_on_first_connection_naming_endpoint(tmp_path: Path) -> None:
    endpoint = _dead_endpoint()
    options = {"endpoint_url": endpoint, "aws_access_key_id": "k", "aws_secret_access_key": "s"}
    with pytest.raises(RetriesExhaustedError) as info:
        optimize(returns_lock, [1], "s3://bucket/ds", chunk_size=2, num_workers=1, storage_options=options,
                 verbose=False)  # fmt: skip
    message = str(info.value)
    assert "cannot connect to the storage endpoint" in message
    assert endpoint in message
    assert "failed after 3 attempts" in message  # RetryPolicy.connect_attempts, not max_attempts (10)
    assert "retry_connect_attempts" in message


def test_endpoint_retry_budget_is_a_storage_option() -> None:
    from aiolit.stores import RetryPolicy, open_store

    endpoint = _dead_endpoint()
    options: dict[str, Any] = {
        "endpoint_url": endpoint,
        "aws_access_key_id": "k",
        "aws_secret_access_key": "s",
    }
    store = open_store("s3://bucket/ds", {**options, "retry_connect_attempts": 2, "retry_initial_backoff": 0})
    assert store.policy == RetryPolicy(connect_attempts=2, initial_backoff=0)  # type: ignore[attr-defined]
    with pytest.raises(RetriesExhaustedError, match="failed after 2 attempts"):
        optimize(returns_lock, [1], "s3://bucket/ds", chunk_size=2, num_workers=1, verbose=False,
                 storage_options={**options, "retry": RetryPolicy(connect_attempts=2, initial_backoff=0)})  # fmt: skip
    with pytest.raises(ValueError, match="retry_connect_atempts"):
        open_store("s3://bucket/ds", {**options, "retry_connect_atempts": 2})


@pytest.mark.s3
def test_optimize_into_s3_with_bad_credentials_says_why(seaweed_server: Any) -> None:
    url = seaweed_server.new_url("ds")
    options = {**seaweed_server.storage_options, "aws_secret_access_key": "not-the-secret"}
    with pytest.raises(StorePermissionError) as info:
        optimize(returns_lock, [1], url, chunk_size=2, num_workers=1, storage_options=options, verbose=False)
    message = str(info.value)
    assert "SignatureDoesNotMatch" in message  # the server's own reason, as the read path reports it
    assert "check the credentials" in message
    assert "not-the-secret" not in message


_UNGUARDED = """
from aiolit import optimize

def fn(i):
    return {"i": i}

optimize(fn, list(range(20)), "out", chunk_size=5, num_workers=2, verbose=False)
print("optimize returned")
"""


def test_script_without_main_guard_is_a_clear_error(tmp_path: Path) -> None:
    script = write_script(tmp_path, _UNGUARDED)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "optimize returned" not in done.stdout
    assert 'without an `if __name__ == "__main__":` guard' in done.stderr
    assert "line 7" in done.stderr
    assert not (tmp_path / "out" / "index.json").exists()


def test_guard_error_in_a_worker_importing_the_script(tmp_path: Path) -> None:
    # What a spawned worker sees when it imports an unguarded script (the parent's check was skipped).
    script = write_script(
        tmp_path,
        """
import multiprocessing
from aiolit import optimize
from aiolit.errors import OptimizeError

def fn(i):
    return {"i": i}

multiprocessing.current_process()._inheriting = True  # as during spawn's import of __main__
try:
    optimize(fn, [1], "out", chunk_size=5, num_workers=1, start_method="fork", verbose=False)
except OptimizeError as exc:
    print(exc)
""",
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert "while a worker process was importing your script" in done.stdout, done.stderr
    assert 'no `if __name__ == "__main__":` guard' in done.stdout


def test_script_from_stdin_is_a_clear_error(tmp_path: Path) -> None:
    text = _UNGUARDED.replace("optimize(fn", 'if __name__ == "__main__":\n    optimize(fn')
    done = subprocess.run([sys.executable, "-"], input=text, cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "read from stdin (`python -`)" in done.stderr
    assert "cannot be imported. Save the script to a file" in done.stderr
    assert "died unexpectedly" not in done.stderr
