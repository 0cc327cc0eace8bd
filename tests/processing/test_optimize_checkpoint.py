"""optimize(use_checkpoint=True): a killed or failed run resumes from its stored chunks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import aiolit.processing as ld
from aiolit.errors import OptimizeError
from tests.processing import optfns
from tests.processing.readback import read_aiolit, read_litdata

ROOT = Path(__file__).resolve().parents[2]


def _checkpointed_inputs(out: Path, parts: list[list[int]]) -> set[int]:
    """The inputs the checkpoints say are finished (each worker's first `inputs_done`)."""
    done: set[int] = set()
    for rank, part in enumerate(parts):
        path = out / ".checkpoints" / f"checkpoint-{rank}.json"
        if path.exists():
            done.update(part[: json.loads(path.read_text())["inputs_done"]])
    return done


def _logged(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_killed_run_resumes_from_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    script = textwrap.dedent(f"""
        import aiolit.processing as ld
        from tests.processing import optfns
        ld.optimize(optfns.logged_square, list(range(40)), {str(out)!r}, chunk_size=2, num_workers=2,
                    use_checkpoint=True, start_method="fork", verbose=False)
    """)
    env = dict(os.environ, AIOLIT_TEST_LOG=str(first_log), AIOLIT_TEST_KILL_AT="27")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, start_new_session=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "index.json").exists()
    parts = [list(range(20)), list(range(20, 40))]
    done = _checkpointed_inputs(out, parts)
    assert {20, 21, 22, 23, 24, 25} <= done  # worker 1 stored three chunks before input 27
    assert 27 not in done

    monkeypatch.setenv("AIOLIT_TEST_LOG", str(second_log))
    ld.optimize(optfns.logged_square, list(range(40)), str(out), chunk_size=2, num_workers=2,
                use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    # the rerun called fn exactly on the inputs the checkpoints did not cover, each once
    assert sorted(_logged(second_log)) == sorted(set(range(40)) - done)
    expected = [{"i": i, "sq": i * i} for i in range(40)]
    assert read_aiolit(str(out)) == expected
    assert read_litdata(str(out)) == expected
    assert not (out / ".checkpoints").exists()


def test_failed_generator_run_resumes_mid_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 3 samples per input and chunks of 4: chunks end in the middle of an input's samples
    out = str(tmp_path)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIOLIT_TEST_FAIL_AT", "9")
    with pytest.raises(OptimizeError, match="planned failure on 9"):
        ld.optimize(optfns.logged_triple, list(range(12)), out, chunk_size=4, num_workers=1,
                    use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    state = json.loads((tmp_path / ".checkpoints" / "checkpoint-0.json").read_text())
    assert (state["inputs_done"], state["skip_samples"]) == (8, 0)  # 24 samples = 6 chunks of 4
    monkeypatch.delenv("AIOLIT_TEST_FAIL_AT")
    monkeypatch.setenv("AIOLIT_TEST_LOG", str(log))
    ld.optimize(optfns.logged_triple, list(range(12)), out, chunk_size=4, num_workers=1,
                use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    assert _logged(log) == [8, 9, 10, 11]
    expected = [{"i": i, "k": k} for i in range(12) for k in range(3)]
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected


def test_skip_samples_inside_an_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path)
    monkeypatch.setenv("AIOLIT_TEST_FAIL_AT", "7")
    with pytest.raises(OptimizeError):
        ld.optimize(optfns.logged_triple, list(range(10)), out, chunk_size=5, num_workers=1,
                    use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    state = json.loads((tmp_path / ".checkpoints" / "checkpoint-0.json").read_text())
    # chunks of 5 over 3 samples per input: the 4th chunk ends after sample 2 of input 6
    assert (state["inputs_done"], state["skip_samples"], state["samples_written"]) == (6, 2, 20)
    monkeypatch.delenv("AIOLIT_TEST_FAIL_AT")
    ld.optimize(optfns.logged_triple, list(range(10)), out, chunk_size=5, num_workers=1,
                use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    expected = [{"i": i, "k": k} for i in range(10) for k in range(3)]
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected


def test_append_run_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path)
    ld.optimize(optfns.logged_square, list(range(10)), out, chunk_size=3, num_workers=2,
                start_method="fork", verbose=False)  # fmt: skip
    new = list(range(100, 130))
    monkeypatch.setenv("AIOLIT_TEST_FAIL_AT", "126")
    with pytest.raises(OptimizeError):
        ld.optimize(optfns.logged_square, new, out, chunk_size=3, num_workers=2, mode="append",
                    use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    assert [s["i"] for s in read_aiolit(out)] == list(range(10))  # the old index is untouched
    done = _checkpointed_inputs(tmp_path, [new[:15], new[15:]])
    assert {115, 116, 117, 118, 119, 120} <= done
    monkeypatch.delenv("AIOLIT_TEST_FAIL_AT")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIOLIT_TEST_LOG", str(log))
    ld.optimize(optfns.logged_square, new, out, chunk_size=3, num_workers=2, mode="append",
                use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    assert sorted(_logged(log)) == sorted(set(new) - done)
    expected = [{"i": i, "sq": i * i} for i in [*range(10), *new]]
    assert read_aiolit(out) == expected
    assert read_litdata(out) == expected


def test_checkpoints_of_other_inputs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path)
    monkeypatch.setenv("AIOLIT_TEST_FAIL_AT", "15")
    with pytest.raises(OptimizeError):
        ld.optimize(optfns.logged_square, list(range(20)), out, chunk_size=2, num_workers=2,
                    use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    monkeypatch.delenv("AIOLIT_TEST_FAIL_AT")
    with pytest.raises(OptimizeError, match="other inputs or another num_workers"):
        ld.optimize(optfns.logged_square, list(range(21)), out, chunk_size=2, num_workers=2,
                    use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    with pytest.raises(OptimizeError, match="other inputs or another num_workers"):
        ld.optimize(optfns.logged_square, list(range(20)), out, chunk_size=2, num_workers=1,
                    use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    # a run without checkpoints starts over and removes them
    ld.optimize(optfns.logged_square, list(range(20)), out, chunk_size=2, num_workers=2,
                start_method="fork", verbose=False)  # fmt: skip
    assert not (tmp_path / ".checkpoints").exists()
    assert [s["i"] for s in read_aiolit(out)] == list(range(20))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"keep_data_ordered": False}, "keep_data_ordered=True"),
        ({"inputs": None, "queue": "queue"}, "not a queue"),
    ],
)
def test_checkpoint_needs_static_ordered_inputs(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    import multiprocessing

    args: dict[str, Any] = {"inputs": list(range(4)), **kwargs}
    if args.get("queue") == "queue":
        args["queue"] = multiprocessing.Queue()
    with pytest.raises(ValueError, match=message):
        ld.optimize(optfns.logged_square, output_dir=str(tmp_path), chunk_size=2, num_workers=1,
                    use_checkpoint=True, verbose=False, **args)  # fmt: skip


@pytest.mark.s3
def test_checkpoint_resume_on_s3(s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.processing.test_optimize_remote import _download, _list_keys

    options = s3_server.storage_options
    url = s3_server.new_url("ckpt")
    monkeypatch.setenv("AIOLIT_TEST_FAIL_AT", "16")
    with pytest.raises(OptimizeError):
        ld.optimize(optfns.logged_square, list(range(20)), url, chunk_size=2, num_workers=2,
                    use_checkpoint=True, start_method="fork", storage_options=options,
                    verbose=False)  # fmt: skip
    keys = _list_keys(url, options)
    assert ".checkpoints/checkpoint-1.json" in keys and "index.json" not in keys
    monkeypatch.delenv("AIOLIT_TEST_FAIL_AT")
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIOLIT_TEST_LOG", str(log))
    ld.optimize(optfns.logged_square, list(range(20)), url, chunk_size=2, num_workers=2,
                use_checkpoint=True, start_method="fork", storage_options=options, verbose=False)  # fmt: skip
    assert not {10, 11, 12, 13} & set(_logged(log))
    assert not [k for k in _list_keys(url, options) if k.startswith(".checkpoints/")]
    local = tmp_path / "copy"
    local.mkdir()
    _download(url, options, local)
    assert read_aiolit(str(local)) == [{"i": i, "sq": i * i} for i in range(20)]


def test_multi_node_nodes_keep_each_others_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = str(tmp_path)
    args: dict[str, Any] = {"chunk_size": 2, "num_workers": 2, "num_nodes": 2, "use_checkpoint": True,
                            "start_method": "fork", "verbose": False}  # fmt: skip
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "1")
    monkeypatch.setenv("AIOLIT_TEST_FAIL_AT", "36")
    with pytest.raises(OptimizeError):
        ld.optimize(optfns.logged_square, list(range(40)), out, **args)
    monkeypatch.delenv("AIOLIT_TEST_FAIL_AT")
    # node 0 finishes meanwhile: it removes only its own checkpoints
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "0")
    ld.optimize(optfns.logged_square, list(range(40)), out, **args)
    assert (tmp_path / ".checkpoints" / "checkpoint-3.json").exists()
    assert not (tmp_path / ".checkpoints" / "checkpoint-0.json").exists()
    done = _checkpointed_inputs(tmp_path, [[], [], list(range(20, 30)), list(range(30, 40))])
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIOLIT_TEST_LOG", str(log))
    monkeypatch.setenv("DATA_OPTIMIZER_NODE_RANK", "1")
    ld.optimize(optfns.logged_square, list(range(40)), out, **args)
    assert sorted(_logged(log)) == sorted(set(range(20, 40)) - done) and {30, 31, 32, 33} <= done
    assert read_aiolit(out) == [{"i": i, "sq": i * i} for i in range(40)]
    assert not (tmp_path / ".checkpoints").exists()


def test_empty_result_leaves_no_checkpoints(tmp_path: Path) -> None:
    from tests.processing import fns

    with pytest.warns(UserWarning, match="no samples"):
        ld.optimize(fns.odd_or_none, [0, 2, 4, 6], str(tmp_path), chunk_size=2, num_workers=2,
                    use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    assert json.loads((tmp_path / "index.json").read_text())["chunks"] == []
    assert not (tmp_path / ".checkpoints").exists()


def test_generator_input_is_checkpointed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = str(tmp_path)
    monkeypatch.setenv("AIOLIT_TEST_FAIL_AT", "17")
    with pytest.raises(OptimizeError):
        ld.optimize(optfns.logged_square, (i for i in range(20)), out, chunk_size=2, num_workers=2,
                    use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    monkeypatch.delenv("AIOLIT_TEST_FAIL_AT")
    done = _checkpointed_inputs(tmp_path, [list(range(10)), list(range(10, 20))])
    assert {10, 11, 12, 13} <= done
    log = tmp_path / "calls.log"
    monkeypatch.setenv("AIOLIT_TEST_LOG", str(log))
    ld.optimize(optfns.logged_square, (i for i in range(20)), out, chunk_size=2, num_workers=2,
                use_checkpoint=True, start_method="fork", verbose=False)  # fmt: skip
    assert sorted(_logged(log)) == sorted(set(range(20)) - done)
    assert read_aiolit(out) == [{"i": i, "sq": i * i} for i in range(20)]
