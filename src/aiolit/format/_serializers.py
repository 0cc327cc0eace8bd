"""Leaf serializers, named as LitData writes them into ``config["data_format"]``.

A serializer follows LitData's duck-typed interface, so a user's LitData serializer works here:
``serialize(item) -> (bytes, name | None)``, ``deserialize(data) -> value``,
``can_serialize(item) -> bool`` and an optional ``setup(data_format)``. Writing picks the first
serializer (user ones first) whose ``can_serialize`` accepts the leaf; reading looks a format
string ``name:sub`` up as ``sub`` if registered, else ``name``.

PIL and torch are imported only when a leaf needs them.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import struct
import sys
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from aiolit.errors import CorruptChunkError, FormatError
from aiolit.format._dtypes import (
    TORCH_DTYPE_NAMES,
    _numpy_dtype,
    _numpy_index,
    _suffix_index,
    _torch,
    _torch_dtype,
    _torch_index,
)
from aiolit.format._json_leaf import decode_json_leaf
from aiolit.format._pytree import is_jpeg_list

__all__ = [
    "Serializer",
    "default_serializers",
    "resolve_serializers",
    "serializer_for_format",
]


def _tensor_bytes(tensor: Any) -> bytes:
    # through uint8 so bfloat16 works too (numpy has no bfloat16)
    torch = _torch()
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy().tobytes())


def _tensor_from(data: bytes | memoryview, dtype: Any, shape: tuple[int, ...], fmt: str) -> Any:
    torch = _torch()
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(data) != count * itemsize:
        raise CorruptChunkError(
            f"{fmt} leaf of shape {list(shape)} needs {count * itemsize} bytes, got {len(data)}"
        )
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    # a private writable copy: the chunk's buffer may be an mmap that is closed later
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape)


def _is_instance_of(item: Any, module: str, cls: str) -> bool:
    mod = sys.modules.get(module)  # an object of a module that was never imported cannot exist
    return mod is not None and isinstance(item, getattr(mod, cls))


def _is_tensor(item: Any) -> bool:
    return _is_instance_of(item, "torch", "Tensor")


def _is_jpeg(item: Any) -> bool:
    return _is_instance_of(item, "PIL.JpegImagePlugin", "JpegImageFile")


class Serializer:
    """Base class of a leaf serializer (LitData's interface)."""

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        """Return the leaf's bytes and its format name (``None``: use the registry key)."""
        raise NotImplementedError

    def deserialize(self, data: bytes) -> Any:
        """Rebuild the leaf from its bytes."""
        raise NotImplementedError

    def can_serialize(self, item: Any) -> bool:
        """Whether this serializer is chosen for ``item`` when writing."""
        return False

    def setup(self, data_format: str) -> None:
        """Learn the full format string (e.g. ``no_header_numpy:9``) before reading."""


class _Fixed(Serializer):
    def __init__(self, fmt: str, kind: type) -> None:
        self._struct = struct.Struct(fmt)
        self._kind = kind

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        try:
            return self._struct.pack(item), None
        except struct.error as exc:
            raise FormatError(f"cannot store {item!r} as {self._kind.__name__}: {exc}") from None

    def deserialize(self, data: bytes) -> Any:
        if len(data) != self._struct.size:
            raise CorruptChunkError(
                f"{self._kind.__name__} leaf must be {self._struct.size} bytes, got {len(data)}"
            )
        return self._kind(self._struct.unpack(data)[0])


class IntSerializer(_Fixed):
    def __init__(self) -> None:
        super().__init__("<q", int)

    def can_serialize(self, item: Any) -> bool:
        return isinstance(item, int) and not isinstance(item, bool)


class FloatSerializer(_Fixed):
    def __init__(self) -> None:
        super().__init__("<d", float)

    def can_serialize(self, item: Any) -> bool:
        return isinstance(item, float)


class BoolSerializer(_Fixed):
    def __init__(self) -> None:
        super().__init__("<?", bool)

    def can_serialize(self, item: Any) -> bool:
        return isinstance(item, bool)


class StrSerializer(Serializer):
    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        return str(item).encode("utf-8"), None

    def deserialize(self, data: bytes) -> Any:
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptChunkError(f"str leaf is not valid UTF-8: {exc}") from None

    def can_serialize(self, item: Any) -> bool:
        return isinstance(item, str)


class BytesSerializer(Serializer):
    """Raw bytes (also ``file:*``, ``video:*``, ``tifffile``, ... read back as bytes)."""

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        return bytes(item), None

    def deserialize(self, data: bytes) -> Any:
        return bytes(data)

    def can_serialize(self, item: Any) -> bool:
        return isinstance(item, bytes)


class _RawFile(BytesSerializer):
    def can_serialize(self, item: Any) -> bool:
        return False


class PILSerializer(Serializer):
    """Lossless images: u32 width, u32 height, u32 len(mode), mode, raw pixels."""

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        mode = item.mode.encode("ascii")
        header = struct.pack("<III", item.width, item.height, len(mode))
        return header + mode + item.tobytes(), None

    def deserialize(self, data: bytes) -> Any:
        from PIL import Image

        if len(data) < 12:
            raise CorruptChunkError(f"pil leaf of {len(data)} bytes is shorter than its 12-byte header")
        width, height, mode_len = struct.unpack_from("<III", data)
        mode = bytes(data[12 : 12 + mode_len]).decode("ascii", "replace")
        try:
            return Image.frombytes(mode, (width, height), bytes(data[12 + mode_len :]))
        except ValueError as exc:
            raise CorruptChunkError(f"pil leaf ({mode} {width}x{height}) does not decode: {exc}") from None

    def can_serialize(self, item: Any) -> bool:
        return _is_instance_of(item, "PIL.Image", "Image") and not _is_jpeg(item)


def _jpeg_bytes(item: Any) -> bytes:
    filename = getattr(item, "filename", None)
    if filename:
        try:
            with open(filename, "rb") as f:  # the original file, byte for byte, as LitData does
                return f.read()
        except OSError:
            pass
    buf = io.BytesIO()
    if _is_jpeg(item):
        item.save(buf, format="JPEG")
    else:
        item.convert("RGB").save(buf, format="JPEG", quality=100)
    return buf.getvalue()


def _decode_image(data: bytes, output: str) -> Any:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(bytes(data)))
        img.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise CorruptChunkError(f"image leaf does not decode: {exc}") from None
    if output == "pil":
        return img
    # LitData's tensor: uint8 C x H x W, RGB, EXIF orientation applied
    rgb = np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(img).convert("RGB")).transpose(2, 0, 1))
    return _torch().from_numpy(rgb)


class JPEGSerializer(Serializer):
    """JPEG file bytes; read back as a PIL image (``output="pil"``) or LitData's uint8 CHW tensor."""

    def __init__(self, output: Literal["pil", "tensor"] = "pil") -> None:
        self.output = output

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        return _jpeg_bytes(item), None

    def deserialize(self, data: bytes) -> Any:
        return _decode_image(data, self.output)

    def can_serialize(self, item: Any) -> bool:
        return _is_jpeg(item)


class ImageFileSerializer(JPEGSerializer):
    """0.2.7x ``image:{ext}`` leaves (encoded image files); read only."""

    def can_serialize(self, item: Any) -> bool:
        return False


class JPEGArraySerializer(Serializer):
    """A list of JPEGs: u32 n, u32 sizes[n], then the JPEG files."""

    def __init__(self, output: Literal["pil", "tensor"] = "pil") -> None:
        self.output = output

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        parts = [_jpeg_bytes(img) for img in item]
        header = np.array([len(parts), *map(len, parts)], dtype="<u4").tobytes()
        return header + b"".join(parts), None

    def deserialize(self, data: bytes) -> Any:
        if len(data) < 4:
            raise CorruptChunkError("jpeg_array leaf is shorter than its count")
        (n,) = struct.unpack_from("<I", data)
        if 4 + 4 * n > len(data):
            raise CorruptChunkError(f"jpeg_array leaf of {len(data)} bytes cannot hold {n} sizes")
        sizes = np.frombuffer(data, dtype="<u4", count=n, offset=4)
        pos = 4 + 4 * n
        if pos + int(sizes.sum()) != len(data):
            raise CorruptChunkError("jpeg_array sizes do not add up to the leaf size")
        out = []
        for size in sizes.tolist():
            out.append(_decode_image(data[pos : pos + size], self.output))
            pos += size
        return out

    def can_serialize(self, item: Any) -> bool:
        return is_jpeg_list(item)


class NumpySerializer(Serializer):
    """u32 dtype index, u32 ndim, u32 shape[ndim], then C-order data."""

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        header = [_numpy_index(item.dtype), item.ndim, *item.shape]
        return np.array(header, dtype="<u4").tobytes() + np.ascontiguousarray(item).tobytes(), None

    def deserialize(self, data: bytes) -> Any:
        if len(data) < 8:
            raise CorruptChunkError(f"numpy leaf of {len(data)} bytes is shorter than its header")
        index, ndim = struct.unpack_from("<II", data)
        if 8 + 4 * ndim > len(data):
            raise CorruptChunkError(f"numpy leaf of {len(data)} bytes cannot hold {ndim} dims")
        dtype = _numpy_dtype(index, "numpy")
        shape = tuple(struct.unpack_from(f"<{ndim}I", data, 8))
        body = memoryview(data)[8 + 4 * ndim :]
        if len(body) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CorruptChunkError(f"numpy leaf {dtype}{list(shape)} has {len(body)} data bytes")
        return np.frombuffer(body, dtype=dtype).reshape(shape).copy()

    def can_serialize(self, item: Any) -> bool:
        return type(item) is np.ndarray and item.ndim > 1


class NoHeaderNumpySerializer(Serializer):
    """1-D arrays: raw data, dtype in the format name (``no_header_numpy:{index}``)."""

    def __init__(self) -> None:
        self._dtype: np.dtype[Any] | None = None

    def setup(self, data_format: str) -> None:
        self._dtype = _numpy_dtype(_suffix_index(data_format), data_format)

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        return np.ascontiguousarray(item).tobytes(), f"no_header_numpy:{_numpy_index(item.dtype)}"

    def deserialize(self, data: bytes) -> Any:
        if self._dtype is None:
            raise FormatError("no_header_numpy needs its dtype index (e.g. no_header_numpy:9)")
        if len(data) % self._dtype.itemsize:
            raise CorruptChunkError(
                f"no_header_numpy leaf of {len(data)} bytes is not a whole {self._dtype} array"
            )
        return np.frombuffer(data, dtype=self._dtype).copy()

    def can_serialize(self, item: Any) -> bool:
        return type(item) is np.ndarray and item.ndim == 1


class TensorSerializer(Serializer):
    """dtype index, rank, shape as u32 (big-endian since 0.2.57, little before), then raw data."""

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        shape = tuple(item.shape)
        header = struct.pack(f">II{len(shape)}I", _torch_index(item), len(shape), *shape)
        return header + _tensor_bytes(item), None

    def deserialize(self, data: bytes) -> Any:
        if len(data) < 8:
            raise CorruptChunkError(f"tensor leaf of {len(data)} bytes is shorter than its header")
        # LitData never writes dtype index 0, so a LE first word <= 20 means a legacy LE header
        order = "<" if struct.unpack_from("<I", data)[0] <= len(TORCH_DTYPE_NAMES) - 1 else ">"
        index, rank = struct.unpack_from(f"{order}II", data)
        if 8 + 4 * rank > len(data):
            raise CorruptChunkError(f"tensor leaf of {len(data)} bytes cannot hold {rank} dims")
        shape = tuple(struct.unpack_from(f"{order}{rank}I", data, 8))
        dtype = _torch_dtype(index, "tensor")
        return _tensor_from(memoryview(data)[8 + 4 * rank :], dtype, shape, "tensor")

    def can_serialize(self, item: Any) -> bool:
        return _is_tensor(item) and item.ndim != 1


class NoHeaderTensorSerializer(Serializer):
    """1-D tensors: raw data, dtype in the format name (``no_header_tensor:{index}``)."""

    def __init__(self) -> None:
        self._index: int | None = None

    def setup(self, data_format: str) -> None:
        self._index = _suffix_index(data_format)
        if not 0 <= self._index < len(TORCH_DTYPE_NAMES):
            raise FormatError(f"unsupported torch dtype index {self._index} in {data_format!r}")

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        return _tensor_bytes(item), f"no_header_tensor:{_torch_index(item)}"

    def deserialize(self, data: bytes) -> Any:
        if self._index is None:
            raise FormatError("no_header_tensor needs its dtype index (e.g. no_header_tensor:16)")
        dtype = _torch_dtype(self._index, "no_header_tensor")
        itemsize = _torch().empty((), dtype=dtype).element_size()
        if len(data) % itemsize:
            raise CorruptChunkError(
                f"no_header_tensor leaf of {len(data)} bytes is not a whole {dtype} array"
            )
        return _tensor_from(data, dtype, (len(data) // itemsize,), "no_header_tensor")

    def can_serialize(self, item: Any) -> bool:
        return _is_tensor(item) and item.ndim == 1


class JSONSerializer(Serializer):
    """0.2.7x ``json`` leaves (tagged binary or legacy JSON text); read only."""

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        return json.dumps(item).encode("utf-8"), None

    def deserialize(self, data: bytes) -> Any:
        return decode_json_leaf(bytes(data))


class TextSerializer(StrSerializer):
    """0.2.7x ``text`` leaves (UTF-8); read only."""

    def can_serialize(self, item: Any) -> bool:
        return False


class PickleSerializer(Serializer):
    """Any other Python object. Decoding runs code: readers must opt in with ``allow_pickle=True``."""

    def serialize(self, item: Any) -> tuple[bytes, str | None]:
        try:
            return pickle.dumps(item), None
        except Exception as exc:
            raise FormatError(f"cannot pickle a leaf of type {type(item).__name__}: {exc}") from None

    def deserialize(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise CorruptChunkError(f"pickle leaf does not unpickle: {exc!r}") from None

    def can_serialize(self, item: Any) -> bool:
        return True


def default_serializers() -> dict[str, Serializer]:
    """A fresh registry of the built-in serializers, in LitData's write-selection order."""
    return {
        "str": StrSerializer(),
        "text": TextSerializer(),
        "bool": BoolSerializer(),
        "int": IntSerializer(),
        "float": FloatSerializer(),
        "video": _RawFile(),
        "audio": _RawFile(),
        "image": ImageFileSerializer(),
        "tifffile": _RawFile(),
        "file": _RawFile(),
        "pil": PILSerializer(),
        "jpeg": JPEGSerializer(),
        "jpeg_array": JPEGArraySerializer(),
        "bytes": BytesSerializer(),
        "no_header_numpy": NoHeaderNumpySerializer(),
        "numpy": NumpySerializer(),
        "no_header_tensor": NoHeaderTensorSerializer(),
        "tensor": TensorSerializer(),
        "json": JSONSerializer(),
        "pickle": PickleSerializer(),
    }


def resolve_serializers(serializers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """User serializers first (a same key replaces the built-in), then the built-ins."""
    builtins = default_serializers()
    user = dict(serializers or {})
    return {**user, **{k: v for k, v in builtins.items() if k not in user}}


def serializer_for_format(data_format: str, registry: Mapping[str, Any], *, field: int = 0) -> Any:
    """The serializer that reads ``data_format`` (a private copy, already ``setup``)."""
    if not isinstance(data_format, str):
        raise FormatError(f"data_format[{field}] must be a string, got {data_format!r}")
    name, _, sub = data_format.partition(":")
    key = sub if sub and sub in registry else name
    if key not in registry:
        raise FormatError(
            f"unknown serializer {data_format!r} for field {field}: pass serializers={{{name!r}: ...}} "
            "to read it"
        )
    serializer = copy.copy(registry[key])
    setup = getattr(serializer, "setup", None)
    if setup is not None:
        setup(data_format)
    return serializer
