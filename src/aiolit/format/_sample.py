"""One item payload: ``u32 size[L]`` then the L serialized leaves (LitData's PyTree items)."""

from __future__ import annotations

import collections
import mmap
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from aiolit._fast import _decode
from aiolit.errors import CorruptChunkError, FormatError, PickleNotAllowedError
from aiolit.format._dtypes import NUMPY_DTYPES
from aiolit.format._pytree import TreeSpec, flatten, treespec_dumps, treespec_loads, unflatten
from aiolit.format._serializers import (
    BoolSerializer,
    BytesSerializer,
    FloatSerializer,
    IntSerializer,
    NoHeaderNumpySerializer,
    NumpySerializer,
    PickleSerializer,
    StrSerializer,
    TextSerializer,
    _RawFile,
    resolve_serializers,
    serializer_for_format,
)

__all__ = ["SampleCodec"]

# Built-in serializers whose leaves the compiled decoder reads itself (exact types only: a user
# subclass may deserialize differently). Everything else is called through its ``deserialize``.
_FAST_KINDS: dict[type, str] = {
    IntSerializer: "int",
    FloatSerializer: "float",
    BoolSerializer: "bool",
    StrSerializer: "str",
    TextSerializer: "str",
    BytesSerializer: "bytes",
    _RawFile: "bytes",
    NumpySerializer: "numpy",
    NoHeaderNumpySerializer: "no_header_numpy",
}


def _leaf_kind(serializer: Any) -> tuple[int, Any]:
    """(kind code, no_header_numpy dtype or None) of one leaf for :class:`_decode.ItemDecoder`."""
    kind = _FAST_KINDS.get(type(serializer), "other")
    dtype = None
    if kind == "no_header_numpy":
        dtype = serializer._dtype
        if dtype is None:  # not set up: the serializer raises its own error
            kind = "other"
    return _decode.K_CODES[kind], dtype


def _template(spec: TreeSpec) -> tuple[Any, ...]:
    """The structure as :class:`_decode.ItemDecoder` walks it (built once per data_spec)."""
    ops = _decode.OPS
    if spec.type is None:
        return (ops["leaf"],)
    children = tuple(_template(c) for c in spec.children)
    if spec.type == "builtins.dict":
        return (ops["dict"], tuple(spec.context), children)
    if spec.type == "builtins.list":
        return (ops["list"], None, children)
    if spec.type == "builtins.tuple":
        return (ops["tuple"], None, children)
    return (ops["call"], _rebuild(spec), children)


def _rebuild(spec: TreeSpec) -> Callable[[list[Any]], Any]:
    """``values -> node`` for the less common containers (as :func:`unflatten` builds them)."""
    kind, context = spec.type, spec.context
    if kind == "collections.OrderedDict":
        return lambda values: collections.OrderedDict(zip(context, values, strict=True))
    if kind == "collections.defaultdict":
        factory, keys = context
        return lambda values: collections.defaultdict(factory, zip(keys, values, strict=True))
    if kind == "collections.deque":
        return lambda values: collections.deque(values, maxlen=context)
    if kind == "collections.namedtuple":
        return lambda values: context(*values)
    raise FormatError(f"unknown pytree node type {kind!r} in data_spec")


def _choose(leaf: Any, registry: Mapping[str, Any]) -> tuple[str, Any]:
    for key, serializer in registry.items():
        if serializer.can_serialize(leaf):
            return key, serializer
    raise FormatError(f"no serializer accepts a leaf of type {type(leaf).__name__}")


def _leaf_error(spec: Any, i: int, leaf: Any, exc: Exception) -> FormatError:
    from aiolit.format._pytree import leaf_paths

    path = leaf_paths(spec)[i]
    where = f"field `{path}`" if path else "value"
    return FormatError(
        f"the sample's {where} of type `{type(leaf).__name__}` cannot be serialized ({exc}); return "
        "numbers, str, bytes, numpy arrays, tensors, PIL images or picklable objects (no locks, "
        "open files, sockets or generators)"
    )


class SampleCodec:
    """Encode and decode the items of one dataset (fixed ``data_format`` and ``data_spec``).

    Parameters
    ----------
    data_format
        One serializer name per leaf, as in ``config["data_format"]``.
    data_spec
        ``config["data_spec"]`` (torch ``treespec_dumps`` JSON), ``None`` for a single leaf.
    serializers
        Extra or replacement serializers by name (LitData's ``serializers=`` argument).
    allow_pickle
        Decode ``pickle`` leaves. Off by default: unpickling runs arbitrary code.
    """

    def __init__(
        self,
        data_format: Sequence[str],
        data_spec: str | None,
        serializers: Mapping[str, Any] | None = None,
        allow_pickle: bool = False,
    ) -> None:
        if isinstance(data_format, str) or not isinstance(data_format, Sequence):
            raise FormatError(f"data_format must be a list of serializer names, got {data_format!r}")
        self.data_format = list(data_format)
        self.data_spec = data_spec
        self.spec: TreeSpec = treespec_loads(data_spec)
        if self.spec.num_leaves != len(self.data_format):
            raise FormatError(
                f"data_spec has {self.spec.num_leaves} leaves but data_format names {len(self.data_format)}"
            )
        self.allow_pickle = allow_pickle
        registry = resolve_serializers(serializers)
        self._serializers = [
            serializer_for_format(f, registry, field=i) for i, f in enumerate(self.data_format)
        ]
        # only the built-in pickle is gated: a user-supplied "pickle" serializer is an explicit opt-in
        self._pickle_fields = [
            i for i, s in enumerate(self._serializers) if type(s) is PickleSerializer and not allow_pickle
        ]
        self._decoder: Any = None
        try:
            template = _template(self.spec)
        except FormatError:
            pass  # an unknown node type: decode_general raises it, per item as before
        else:
            kinds = [_leaf_kind(s) for s in self._serializers]
            self._decoder = _decode.ItemDecoder(
                bytes(k for k, _ in kinds),
                list(self._serializers),
                template,
                [d for _, d in kinds],
                NUMPY_DTYPES,
            )

    @classmethod
    def for_sample(cls, sample: Any, serializers: Mapping[str, Any] | None = None) -> SampleCodec:
        """The codec LitData would pick for ``sample`` (the first sample a writer sees)."""
        registry = resolve_serializers(serializers)
        leaves, spec = flatten(sample)
        names = []
        for i, leaf in enumerate(leaves):
            try:
                key, serializer = _choose(leaf, registry)
                _, name = serializer.serialize(leaf)
            except FormatError as exc:
                raise _leaf_error(spec, i, leaf, exc) from None
            names.append(name or key)
        return cls(names, treespec_dumps(spec), serializers, allow_pickle=True)

    @property
    def num_leaves(self) -> int:
        return len(self.data_format)

    def encode(self, sample: Any) -> bytes:
        """Serialize one sample into an item payload."""
        leaves, spec = flatten(sample)
        if spec != self.spec:
            raise FormatError(
                f"sample structure {treespec_dumps(spec)[:200]} differs from the dataset's data_spec "
                f"{(self.data_spec or '')[:200]}: every sample must have the first sample's structure"
            )
        parts = []
        for i, (leaf, serializer) in enumerate(zip(leaves, self._serializers, strict=True)):
            if not serializer.can_serialize(leaf) and not self._accepts(i, leaf):
                raise FormatError(
                    f"field {i} is {self.data_format[i]!r} (set by the first sample) but this sample has "
                    f"a {type(leaf).__name__} there"
                )
            try:
                data, _ = serializer.serialize(leaf)
            except FormatError as exc:
                raise _leaf_error(spec, i, leaf, exc) from None
            parts.append(data)
        sizes = np.array([len(p) for p in parts], dtype="<u4").tobytes()
        return sizes + b"".join(parts)

    def _accepts(self, field: int, leaf: Any) -> bool:
        # LitData treats pil and jpeg as interchangeable once a field's format is fixed
        fmt = self.data_format[field]
        if fmt in ("pil", "jpeg"):
            return type(leaf).__module__.startswith("PIL.")
        return False

    def _refuse_pickle(self) -> None:
        if self._pickle_fields:
            i = self._pickle_fields[0]
            raise PickleNotAllowedError(
                f"field {i} (data_format[{i}] = {self.data_format[i]!r}) is pickled; unpickling can run "
                "arbitrary code, pass allow_pickle=True only for data you trust"
            )

    def decode(self, payload: bytes | memoryview) -> Any:
        """Deserialize one item payload into the sample."""
        if self._pickle_fields or self._decoder is None:
            return self.decode_general(payload)
        return self._decoder.decode(payload)

    def decode_many(
        self, data: bytes | memoryview | mmap.mmap, offsets: npt.NDArray[np.uint32], indices: Iterable[int]
    ) -> list[Any]:
        """Items ``indices`` of a plain chunk (item ``k`` is ``data[offsets[k]:offsets[k + 1]]``).

        One call for a run of items: the per-item Python call and buffer export are paid once.
        """
        if self._pickle_fields or self._decoder is None:
            view = memoryview(data)
            return [self.decode_general(view[int(offsets[k]) : int(offsets[k + 1])]) for k in indices]
        result: list[Any] = self._decoder.decode_many(data, offsets, indices)
        return result

    def decode_general(self, payload: bytes | memoryview) -> Any:
        """:meth:`decode` through the serializers and :func:`unflatten` (the reference path)."""
        self._refuse_pickle()
        view = memoryview(payload).cast("B")
        n = len(self.data_format)
        header = 4 * n
        if len(view) < header:
            raise CorruptChunkError(f"item of {len(view)} bytes is shorter than its {n}-leaf size header")
        sizes = np.frombuffer(view, dtype="<u4", count=n)
        if header + int(sizes.sum(dtype=np.int64)) != len(view):
            raise CorruptChunkError(
                f"item leaf sizes {sizes.tolist()} plus the {header}-byte header do not match the item "
                f"size {len(view)}"
            )
        leaves = []
        pos = header
        for serializer, size in zip(self._serializers, sizes.tolist(), strict=True):
            leaves.append(serializer.deserialize(view[pos : pos + size]))
            pos += size
        return unflatten(leaves, self.spec)
