"""Sample flatten/unflatten and the ``data_spec`` string, without torch.

LitData flattens every sample with a vendored copy of ``torch.utils._pytree`` and stores
``treespec_dumps(spec)`` as ``config["data_spec"]``. This module reproduces those bytes exactly
(the tests compare with torch's own ``treespec_dumps``) so that ``import aiolit.format`` never
needs torch.

Container nodes: ``tuple``, ``list``, ``dict``, namedtuples, ``OrderedDict``, ``defaultdict`` and
``deque``. Everything else is a leaf, including ``None`` and dict/list *subclasses*. A non-empty
list or tuple made only of ``PIL.JpegImagePlugin.JpegImageFile`` is one leaf (``jpeg_array``).
"""

from __future__ import annotations

import builtins
import collections
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiolit.errors import FormatError

__all__ = ["TreeSpec", "flatten", "is_jpeg_list", "treespec_dumps", "treespec_loads", "unflatten"]

_PROTOCOL = 1

# serialized type names, as torch writes them
_DICT = "builtins.dict"
_LIST = "builtins.list"
_TUPLE = "builtins.tuple"
_ODICT = "collections.OrderedDict"
_DDICT = "collections.defaultdict"
_DEQUE = "collections.deque"
_NTUPLE = "collections.namedtuple"


@dataclass(frozen=True)
class TreeSpec:
    """The structure of a flattened sample.

    Parameters
    ----------
    type
        ``None`` for a leaf, else the serialized type name (``"builtins.dict"``, ...).
    context
        Node data: dict keys, deque ``maxlen``, defaultdict factory, or the namedtuple class.
    children
        One spec per child, in flatten order.
    """

    type: str | None = None
    context: Any = None
    children: tuple[TreeSpec, ...] = field(default_factory=tuple)

    @property
    def is_leaf(self) -> bool:
        return self.type is None

    @property
    def num_leaves(self) -> int:
        if self.type is None:
            return 1
        return sum(child.num_leaves for child in self.children)


LEAF = TreeSpec()


def is_jpeg_list(obj: Any) -> bool:
    """True for a non-empty list/tuple whose items are all ``JpegImageFile`` (one ``jpeg_array`` leaf)."""
    if type(obj) not in (list, tuple) or not obj:
        return False
    # Only objects of an already imported PIL can be JPEG images: no import needed to check.
    jpeg_module = sys.modules.get("PIL.JpegImagePlugin")
    if jpeg_module is None:
        return False
    jpeg_cls = jpeg_module.JpegImageFile
    return all(isinstance(item, jpeg_cls) for item in obj)


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(type(obj), "_fields")


def flatten(obj: Any) -> tuple[list[Any], TreeSpec]:
    """Flatten a sample into its leaves (in LitData's order) and its structure."""
    leaves: list[Any] = []
    spec = _flatten(obj, leaves)
    return leaves, spec


def _flatten(obj: Any, leaves: list[Any]) -> TreeSpec:
    kind = type(obj)
    if kind is dict or kind is collections.OrderedDict:
        keys = list(obj.keys())
        children = tuple(_flatten(obj[k], leaves) for k in keys)
        return TreeSpec(_DICT if kind is dict else _ODICT, keys, children)
    if kind is collections.defaultdict:
        keys = list(obj.keys())
        children = tuple(_flatten(obj[k], leaves) for k in keys)
        return TreeSpec(_DDICT, (obj.default_factory, keys), children)
    if kind is collections.deque:
        return TreeSpec(_DEQUE, obj.maxlen, tuple(_flatten(v, leaves) for v in obj))
    if (kind is list or kind is tuple) and not is_jpeg_list(obj):
        return TreeSpec(_LIST if kind is list else _TUPLE, None, tuple(_flatten(v, leaves) for v in obj))
    if _is_namedtuple(obj):
        return TreeSpec(_NTUPLE, kind, tuple(_flatten(v, leaves) for v in obj))
    leaves.append(obj)
    return LEAF


def leaf_paths(spec: TreeSpec) -> list[str]:
    """A readable path per leaf, in flatten order: ``""`` (the sample itself), ``"x"``, ``"a[1].b"``."""
    paths: list[str] = []
    _leaf_paths(spec, "", paths)
    return paths


def _leaf_paths(spec: TreeSpec, prefix: str, paths: list[str]) -> None:
    if spec.type is None:
        paths.append(prefix)
        return
    if spec.type in (_DICT, _ODICT):
        names = [str(key) for key in spec.context]
    elif spec.type == _DDICT:
        names = [str(key) for key in spec.context[1]]
    elif spec.type == _NTUPLE:
        names = list(getattr(spec.context, "_fields", ())) or [f"[{i}]" for i in range(len(spec.children))]
    else:
        names = [f"[{i}]" for i in range(len(spec.children))]
    for name, child in zip(names, spec.children, strict=False):
        joined = prefix + name if name.startswith("[") else (f"{prefix}.{name}" if prefix else name)
        _leaf_paths(child, joined, paths)


def unflatten(leaves: Sequence[Any], spec: TreeSpec) -> Any:
    """Rebuild a sample from its leaves; the inverse of :func:`flatten`."""
    if len(leaves) != spec.num_leaves:
        raise FormatError(f"the data_spec expects {spec.num_leaves} leaves but {len(leaves)} were decoded")
    it = iter(leaves)
    return _unflatten(it, spec)


def _unflatten(it: Any, spec: TreeSpec) -> Any:
    if spec.type is None:
        return next(it)
    values = [_unflatten(it, child) for child in spec.children]
    if spec.type == _DICT:
        return dict(zip(spec.context, values, strict=True))
    if spec.type == _LIST:
        return values
    if spec.type == _TUPLE:
        return tuple(values)
    if spec.type == _ODICT:
        return collections.OrderedDict(zip(spec.context, values, strict=True))
    if spec.type == _DDICT:
        factory, keys = spec.context
        return collections.defaultdict(factory, zip(keys, values, strict=True))
    if spec.type == _DEQUE:
        return collections.deque(values, maxlen=spec.context)
    if spec.type == _NTUPLE:
        return spec.context(*values)
    raise FormatError(f"unknown pytree node type {spec.type!r} in data_spec")


# -- data_spec (torch treespec_dumps protocol 1) ------------------------------------------------


def treespec_dumps(spec: TreeSpec) -> str:
    """The ``data_spec`` string of ``spec``, byte-identical to torch's ``treespec_dumps``."""
    return json.dumps([_PROTOCOL, _to_json(spec)])


def _to_json(spec: TreeSpec) -> dict[str, Any]:
    if spec.type is None:
        return {"type": None, "context": None, "children_spec": []}
    context: Any
    if spec.type in (_DICT, _ODICT):
        context = _dumps_context(spec.context)
    elif spec.type in (_LIST, _TUPLE):
        context = "null"
    elif spec.type == _DEQUE:
        context = json.dumps(spec.context)
    elif spec.type == _DDICT:
        factory, keys = spec.context
        if factory is None:
            module, name = "builtins", "None"
        else:
            module, name = factory.__module__, factory.__qualname__
        # torch stores this context as a JSON object, not as a JSON string
        context = {"default_factory_module": module, "default_factory_name": name, "dict_context": keys}
    else:
        raise FormatError(
            f"cannot write a data_spec for a {spec.context!r} node: LitData (torch pytree) cannot "
            "serialize namedtuples; use a dict or a tuple"
        )
    return {"type": spec.type, "context": context, "children_spec": [_to_json(c) for c in spec.children]}


def _dumps_context(keys: list[Any]) -> str:
    try:
        return json.dumps(keys)
    except TypeError as exc:
        raise FormatError(f"dict keys {keys!r} cannot be written to data_spec (JSON): {exc}") from None


def treespec_loads(data_spec: str | None) -> TreeSpec:
    """Parse a ``data_spec`` string (``None`` means a single leaf)."""
    if data_spec is None:
        return LEAF
    try:
        raw = json.loads(data_spec)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"data_spec is not valid JSON: {exc}") from None
    if not (isinstance(raw, list) and len(raw) == 2 and raw[0] == _PROTOCOL):
        raise FormatError(f"data_spec must be [1, node] (pytree protocol 1), got {data_spec[:80]!r}")
    return _from_json(raw[1])


def _from_json(node: Any) -> TreeSpec:
    if not isinstance(node, dict) or not isinstance(node.get("children_spec"), list):
        raise FormatError(f"malformed data_spec node: {str(node)[:80]!r}")
    kind = node.get("type")
    children = tuple(_from_json(c) for c in node["children_spec"])
    if kind is None:
        if children:
            raise FormatError("malformed data_spec: a leaf node has children")
        return LEAF
    context: Any
    try:
        if kind in (_DICT, _ODICT):
            context = json.loads(node["context"])
            if not isinstance(context, list) or len(context) != len(children):
                raise FormatError(f"data_spec dict node has keys {context!r} for {len(children)} children")
            _check_keys(context)
        elif kind in (_LIST, _TUPLE):
            context = None
        elif kind == _DEQUE:
            context = json.loads(node["context"])
            if context is not None and (
                isinstance(context, bool) or not isinstance(context, int) or context < 0
            ):
                raise FormatError(f"data_spec deque node has maxlen {context!r}: not a count")
        elif kind == _DDICT:
            ctx = node["context"]
            context = (_default_factory(ctx["default_factory_module"], ctx["default_factory_name"]),)
            context += (list(ctx["dict_context"]),)
            _check_keys(context[1])
        else:
            raise FormatError(
                f"unsupported pytree node type {kind!r} in data_spec (namedtuples and custom nodes "
                "cannot be rebuilt without their class)"
            )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"malformed context of a {kind} node in data_spec: {exc!r}") from None
    return TreeSpec(kind, context, children)


def _check_keys(keys: list[Any]) -> None:
    # JSON arrays and objects cannot be dict keys: say so here rather than fail while decoding.
    bad = [k for k in keys if isinstance(k, list | dict)]
    if bad:
        raise FormatError(f"data_spec dict node has unhashable keys {bad[:3]!r:.80}: keys must be scalars")


_SAFE_FACTORIES = frozenset(
    {"list", "dict", "set", "tuple", "int", "float", "str", "bytes", "bool", "frozenset"}
)


def _default_factory(module: str, name: str) -> Any:
    # Only builtins: importing an arbitrary module named by a file would run its code.
    if name == "None":
        return None
    if module != "builtins" or name not in _SAFE_FACTORIES:
        raise FormatError(
            f"defaultdict factory {module}.{name} in data_spec is not a builtin; aiolit only "
            "rebuilds builtin factories (list, dict, int, ...)"
        )
    return getattr(builtins, name)
