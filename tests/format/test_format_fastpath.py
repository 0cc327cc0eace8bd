"""The compiled item decoder (``SampleCodec.decode``) gives exactly what the general path gives.

``SampleCodec.decode_general`` is the reference: serializers + ``unflatten``. Every comparison is on
types too (int vs bool vs float, list vs tuple, dict vs OrderedDict), float bits (NaN, -0.0), numpy
dtype/shape/flags, and for malformed items on the exception type and message.
"""

from __future__ import annotations

import collections
import math
import struct
import threading
from typing import Any

import numpy as np
import pytest

from aiolit.errors import AiolitError, PickleNotAllowedError
from aiolit.format import SampleCodec
from aiolit.format._dtypes import NUMPY_DTYPES
from aiolit.format._serializers import IntSerializer


def same(a: Any, b: Any) -> None:
    """Deep equality that also checks types, float bits and numpy layout."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
        assert a.flags.writeable and b.flags.writeable
        assert a.flags.c_contiguous and b.flags.c_contiguous
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        if isinstance(a, collections.defaultdict):
            assert a.default_factory is b.default_factory
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, list | tuple | collections.deque):
        assert len(a) == len(b)
        if isinstance(a, collections.deque):
            assert a.maxlen == b.maxlen
        for x, y in zip(a, b, strict=True):
            same(x, y)
    else:
        assert a == b


SAMPLES: list[Any] = [
    {"index": 7, "text": "sample 7", "label": 7},
    {"index": -1, "text": "", "label": -(2**63)},
    (1, -2, 2**63 - 1, 0),
    [True, False, True],
    {"nan": math.nan, "neg0": -0.0, "inf": -math.inf, "tiny": 5e-324, "one": 1.0},
    {"s": "", "u": "héllo ✓ \x00 end", "b": b"", "bb": b"\x00\xff" * 3},
    {"a": [1, (2.5, "x"), {"b": [b"y", False]}], "c": (), "d": [], "e": {}},
    {"img": np.arange(12, dtype=np.uint8).reshape(3, 4), "label": 3},
    {"v": np.array([1.5, np.nan], dtype=np.float32), "w": np.zeros(0, np.int16)},
    {"empty2d": np.zeros((0, 3), np.int64), "zero_dim_last": np.zeros((4, 0), np.float64)},
    {"bools": np.array([[True, False], [False, True]]), "one": np.array([-3], np.int8)},
    collections.OrderedDict([("b", 1), ("a", [2.0, "z"])]),
    collections.defaultdict(list, {"k": 1, "j": "v"}),
    collections.deque([1, (2, "3")], maxlen=5),
    {1: "int key", "x": (None,)},  # None is a pickled leaf
    {},
    (),
]


def _check(sample: Any) -> SampleCodec:
    codec = SampleCodec.for_sample(sample)
    assert codec._decoder is not None  # the compiled decoder is the one under test
    payload = codec.encode(sample)
    general = codec.decode_general(payload)
    same(codec.decode(payload), general)
    same(codec.decode(memoryview(payload)), general)
    same(codec.decode(memoryview(bytearray(payload))), general)
    # an item in the middle of a larger buffer, as the chunk reader hands it over
    padded = memoryview(b"\x01\x02\x03" + payload + b"\x04")[3:-1]
    same(codec.decode(padded), general)
    return codec


@pytest.mark.parametrize("sample", SAMPLES, ids=[repr(s)[:40] for s in SAMPLES])
def test_fast_decode_matches_general(sample: Any) -> None:
    _check(sample)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES, ids=str)
def test_every_numpy_dtype(dtype: np.dtype[Any]) -> None:
    values = np.arange(-3, 9).astype(dtype)
    _check({"flat": values, "grid": values.reshape(2, 3, 2), "scalar0d": values.reshape(12)[:0]})


def test_single_leaf_data_spec_none() -> None:
    for fmt, value in [("int", -5), ("float", math.nan), ("bool", True), ("str", ""), ("bytes", b"")]:
        codec = SampleCodec([fmt], None)
        payload = codec.encode(value)
        same(codec.decode(payload), codec.decode_general(payload))
        same(codec.decode(payload), value)


def test_bool_byte_values() -> None:
    # struct's "?" reads any nonzero byte as True
    codec = SampleCodec(["bool", "bool", "bool"], _tuple_spec(3))
    payload = struct.pack("<3I", 1, 1, 1) + b"\x00\x02\xff"
    same(codec.decode(payload), codec.decode_general(payload))
    assert codec.decode(payload) == (False, True, True)


def test_other_formats_inside_the_fast_decoder() -> None:
    torch = pytest.importorskip("torch")
    sample = {"t": torch.arange(6).reshape(2, 3), "n": 4, "obj": {1, 2}, "s": "x"}
    codec = SampleCodec.for_sample(sample)
    payload = codec.encode(sample)
    out, ref = codec.decode(payload), codec.decode_general(payload)
    assert torch.equal(out["t"], ref["t"]) and out["t"].dtype == ref["t"].dtype
    assert out["obj"] == ref["obj"] == {1, 2}
    same({k: v for k, v in out.items() if k != "t"}, {k: v for k, v in ref.items() if k != "t"})


def test_user_serializer_subclass_is_called() -> None:
    class Doubling(IntSerializer):
        def deserialize(self, data: bytes) -> Any:
            return 2 * super().deserialize(data)

    codec = SampleCodec(["int", "int"], _tuple_spec(2), serializers={"int": Doubling()})
    payload = SampleCodec(["int", "int"], _tuple_spec(2)).encode((3, -4))
    assert codec.decode(payload) == codec.decode_general(payload) == (6, -8)


def test_pickle_still_refused() -> None:
    writer = SampleCodec.for_sample({"x": None})
    reader = SampleCodec(writer.data_format, writer.data_spec)
    with pytest.raises(PickleNotAllowedError):
        reader.decode(writer.encode({"x": None}))


def _tuple_spec(n: int) -> str:
    leaf = '{"type": null, "context": null, "children_spec": []}'
    return f'[1, {{"type": "builtins.tuple", "context": "null", "children_spec": [{", ".join([leaf] * n)}]}}]'


def _raw(sizes: list[int], body: bytes) -> bytes:
    return struct.pack(f"<{len(sizes)}I", *sizes) + body


MALFORMED: list[tuple[list[str], bytes]] = [
    (["int", "str"], b"\x01\x00"),  # shorter than the header
    (["int", "str"], _raw([8, 5], b"\x00" * 12)),  # sizes do not add up
    (["int", "str"], _raw([8, 5], b"\x00" * 14)),
    (["int"], _raw([4], b"\x00" * 4)),  # wrong fixed sizes
    (["float"], _raw([9], b"\x00" * 9)),
    (["bool"], _raw([0], b"")),
    (["bool"], _raw([2], b"\x01\x01")),
    (["str"], _raw([2], b"\xff\xfe")),  # invalid UTF-8
    (["str", "int"], _raw([3, 8], b"a\xc3(" + b"\x00" * 8)),
    (["numpy"], _raw([4], b"\x00" * 4)),  # shorter than its header
    (["numpy"], _raw([12], struct.pack("<3I", 99, 1, 1))),  # unknown dtype index
    (["numpy"], _raw([12], struct.pack("<3I", 1, 5, 1))),  # more dims than bytes
    (["numpy"], _raw([16], struct.pack("<3I", 1, 1, 3) + b"\x00" * 4)),  # body too short
    (["numpy"], _raw([20], struct.pack("<4I", 1, 2, 2**31, 2**31) + b"\x00" * 4)),  # huge shape
    (["numpy"], _raw([16], struct.pack("<4I", 1, 2, 2**31, 0))),  # huge shape with a zero dim
    (["no_header_numpy:9"], _raw([6], b"\x00" * 6)),  # not a whole int64 array
    (["no_header_numpy:99"], _raw([8], b"\x00" * 8)),  # unknown dtype index (setup fails)
]


@pytest.mark.parametrize(("fmt", "payload"), MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_items_raise_the_same_errors(fmt: list[str], payload: bytes) -> None:
    def outcome(fn: Any) -> tuple[type, str] | Any:
        try:
            return fn(payload)
        except Exception as exc:
            return type(exc), str(exc)

    try:
        codec = SampleCodec(fmt, _tuple_spec(len(fmt)))
    except AiolitError:
        return  # refused when the codec is built: nothing to decode
    fast, general = outcome(codec.decode), outcome(codec.decode_general)
    if isinstance(general, tuple) and len(general) == 2 and isinstance(general[0], type):
        assert fast == general
        assert issubclass(general[0], AiolitError)
    else:
        same(fast, general)


def test_decode_many_matches_decode() -> None:
    samples = [{"i": i, "s": "x" * (i % 3), "f": i / 7, "a": np.full(i % 4, i, np.int32)} for i in range(50)]
    codec = SampleCodec.for_sample(samples[0])
    payloads = [codec.encode(s) for s in samples]
    starts = np.cumsum([0] + [len(p) for p in payloads]).astype(np.uint32) + 5
    data = b"\xaa" * 5 + b"".join(payloads)
    indices = [3, 0, 49, 3, 17]
    out = codec.decode_many(data, starts, indices)
    for k, got in zip(indices, out, strict=True):
        same(got, codec.decode_general(payloads[k]))
    with pytest.raises(IndexError):
        codec.decode_many(data, starts, [50])


def test_decode_many_with_python_path_leaves() -> None:
    samples = [{"i": i, "obj": {i}} for i in range(5)]
    codec = SampleCodec.for_sample(samples[0])
    payloads = [codec.encode(s) for s in samples]
    starts = np.cumsum([0] + [len(p) for p in payloads]).astype(np.uint32)
    out = codec.decode_many(b"".join(payloads), starts, range(5))
    assert out == samples


def test_threads_share_one_codec() -> None:
    sample = {"a": [1, "two", 3.0], "b": {"c": b"d"}}
    codec = SampleCodec.for_sample(sample)
    payload = codec.encode(sample)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(2000):
                same(codec.decode(payload), sample)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


class _Step:
    def __init__(self, chunk: int) -> None:
        self.chunk = chunk


class _Plan:
    """The two things Run.walk reads from a WorkerPlan."""

    def __init__(self, orders: list[list[int]]) -> None:
        self.steps = [_Step(c) for c in range(len(orders))]
        self._orders = orders

    def order(self, k: int) -> Any:
        return np.array(self._orders[k], dtype=np.int64)


def _walk(run: Any) -> list[Any]:
    from aiolit.streaming._run import Need

    out: list[Any] = []
    walk = run.walk()
    reply = None
    while True:
        try:
            item = walk.send(reply)
        except StopIteration:
            return out
        reply = None
        if type(item) is Need:
            reply = f"chunk{item.step}"
        else:
            out.append(item)


@pytest.mark.parametrize("start", [(0, 0), (0, 5), (1, 40)])
def test_run_walk_batches_like_one_by_one(start: tuple[int, int]) -> None:
    from aiolit.streaming._run import Run

    orders = [list(range(70)), list(range(100, 0, -1)), [3]]
    calls: list[int] = []

    def produce(chunk: Any, chunk_id: int, k: int) -> Any:
        return (chunk, chunk_id, k)

    def many(chunk: Any, chunk_id: int, ks: list[int]) -> list[Any]:
        calls.append(len(ks))
        return [(chunk, chunk_id, k) for k in ks]

    def run(**kw: Any) -> Any:
        return Run(_Plan(orders), start, None, produce, max_cache_bytes=0, depth=1, **kw)  # type: ignore[arg-type]

    assert _walk(run(produce_many=many)) == _walk(run())
    assert max(calls) > 1


def test_run_walk_batch_error_surfaces_at_the_bad_sample() -> None:
    from aiolit.streaming._run import Run

    def produce(chunk: Any, chunk_id: int, k: int) -> Any:
        if k == 10:
            raise ValueError("bad sample 10")
        return k

    def many(chunk: Any, chunk_id: int, ks: list[int]) -> list[Any]:
        return [produce(chunk, chunk_id, k) for k in ks]

    run = Run(_Plan([list(range(20))]), (0, 0), None, produce, max_cache_bytes=0, depth=1, produce_many=many)  # type: ignore[arg-type]
    got: list[Any] = []
    fake_chunk: Any = "chunk0"
    walk = run.walk()
    walk.send(None)
    with pytest.raises(ValueError, match="bad sample 10"):
        got.append(walk.send(fake_chunk))
        while True:
            got.append(next(walk))
    assert got == list(range(10))
