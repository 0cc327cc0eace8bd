"""data_spec strings byte-identical to torch's treespec_dumps, and flatten/unflatten round trips."""

from __future__ import annotations

import collections
import subprocess
import sys
from typing import Any

import pytest

from aiolit.errors import FormatError
from aiolit.format import flatten, treespec_dumps, treespec_loads, unflatten

SHAPES: list[Any] = [
    1,
    None,
    "s",
    (1, 2),
    (),
    [],
    {},
    [1, [2, [3, (4, 5)]]],
    {"a": 1, "b": [2, 3], "c": {"d": 4.0}},
    {1: "int key", "x": (None,)},
    {"z": 1, "a": 2},  # insertion order, not sorted
    collections.OrderedDict([("b", 1), ("a", [2])]),
    collections.defaultdict(list, {"k": [1, 2]}),
    collections.defaultdict(int),
    collections.deque([1, 2, 3]),
    collections.deque([1, (2, 3)], maxlen=4),
    [{"a": (1, {"b": [2]})}, collections.OrderedDict(x=collections.deque([5]))],
    type("MyDict", (dict,), {})(a=1),  # dict subclasses are leaves
]


@pytest.mark.parametrize("obj", SHAPES, ids=[repr(s)[:40] for s in SHAPES])
def test_data_spec_matches_torch(obj: Any) -> None:
    tp = pytest.importorskip("torch.utils._pytree")
    leaves, spec = flatten(obj)
    t_leaves, t_spec = tp.tree_flatten(obj)
    assert leaves == t_leaves
    assert treespec_dumps(spec) == tp.treespec_dumps(t_spec)


@pytest.mark.parametrize("obj", SHAPES, ids=[repr(s)[:40] for s in SHAPES])
def test_round_trip_through_data_spec(obj: Any) -> None:
    leaves, spec = flatten(obj)
    rebuilt = unflatten(leaves, treespec_loads(treespec_dumps(spec)))
    assert rebuilt == obj
    assert type(rebuilt) is type(obj) or type(obj).__name__ == "MyDict"
    if isinstance(obj, collections.deque):
        assert rebuilt.maxlen == obj.maxlen
    if isinstance(obj, collections.defaultdict):
        assert rebuilt.default_factory is obj.default_factory


def test_namedtuple_flattens_but_has_no_data_spec() -> None:
    Point = collections.namedtuple("Point", "x y")
    leaves, spec = flatten(Point(1, [2]))
    assert leaves == [1, 2]
    assert unflatten(leaves, spec) == Point(1, [2])
    with pytest.raises(FormatError, match="cannot serialize namedtuples; use a dict or a tuple"):
        treespec_dumps(spec)


def test_unsafe_defaultdict_factory_is_refused() -> None:
    spec = (
        '[1, {"type": "collections.defaultdict", "context": {"default_factory_module": "os", '
        '"default_factory_name": "system", "dict_context": []}, "children_spec": []}]'
    )
    with pytest.raises(FormatError, match=r"defaultdict factory os\.system in data_spec is not a builtin"):
        treespec_loads(spec)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("not json", "data_spec is not valid JSON"),
        ('[2, {"type": null}]', "data_spec must be \\[1, node\\]"),
        ('[1, {"type": "my.Custom", "context": null, "children_spec": []}]', "unsupported pytree node type"),
        (
            '[1, {"type": "builtins.dict", "context": "[1, 2]", "children_spec": []}]',
            "has keys \\[1, 2\\] for 0",
        ),
    ],
)
def test_malformed_data_spec(spec: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        treespec_loads(spec)


def test_leaf_count_mismatch() -> None:
    _, spec = flatten((1, 2))
    with pytest.raises(FormatError, match="the data_spec expects 2 leaves but 3 were decoded"):
        unflatten([1, 2, 3], spec)


def test_jpeg_list_is_one_leaf() -> None:
    pil = pytest.importorskip("PIL.Image")
    import io

    buf = io.BytesIO()
    pil.new("RGB", (4, 3), (10, 20, 30)).save(buf, format="JPEG")
    buf.seek(0)
    img = pil.open(buf)
    leaves, spec = flatten({"imgs": [img, img], "n": 2})
    assert len(leaves) == 2 and leaves[0] == [img, img]
    assert spec.num_leaves == 2


def test_import_does_not_load_torch_or_pil() -> None:
    code = "import sys, aiolit.format; print('torch' in sys.modules, 'PIL' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
