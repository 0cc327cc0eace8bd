"""Decoder of LitData 0.2.7x ``json`` leaves (a tag byte, then a little-endian payload).

Tags: 0 JSON text, 1 list[str], 2 list[int], 3 list[float], 4 list[bool], 5 dict, 6 records
(list of dicts with the same keys), 7 str, 8 i64, 9 f64, 10 bool, 11 None. A first byte above
0x20 means the whole leaf is legacy JSON text.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from aiolit.errors import CorruptChunkError

__all__ = ["decode_json_leaf"]

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise CorruptChunkError(f"json leaf truncated: needs {end} bytes, has {len(self.data)}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self.take(8))[0])

    def f64(self) -> float:
        return float(_F64.unpack(self.take(8))[0])

    def utf8(self) -> str:
        try:
            return self.take(self.u32()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptChunkError(f"json leaf holds invalid UTF-8: {exc}") from None


def decode_json_leaf(data: bytes) -> Any:
    """Decode one ``json`` leaf; raises :class:`CorruptChunkError` on malformed bytes."""
    if not data:
        raise CorruptChunkError("json leaf is empty")
    if data[0] > 0x20:
        return _json_text(data)
    reader = _Reader(data)
    value = _value(reader, reader.u8())
    if reader.pos != len(data):
        raise CorruptChunkError(f"json leaf has {len(data) - reader.pos} trailing bytes")
    return value


def _json_text(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptChunkError(f"json leaf is not valid JSON: {exc}") from None


def _value(r: _Reader, tag: int) -> Any:
    if tag == 0:
        return _json_text(r.take(r.u32()))
    if tag == 1:
        return [r.utf8() for _ in range(r.u32())]
    if tag == 2:
        return [r.i64() for _ in range(r.u32())]
    if tag == 3:
        return [r.f64() for _ in range(r.u32())]
    if tag == 4:
        return [bool(r.u8()) for _ in range(r.u32())]
    if tag == 5:
        out: dict[str, Any] = {}
        for _ in range(r.u32()):
            key = r.utf8()
            out[key] = _value(r, r.u8())
        return out
    if tag == 6:
        n_rows, n_keys = r.u32(), r.u32()
        keys = [r.utf8() for _ in range(n_keys)]
        return [{key: _record_value(r) for key in keys} for _ in range(n_rows)]
    if tag == 7:
        return r.utf8()
    if tag == 8:
        return r.i64()
    if tag == 9:
        return r.f64()
    if tag == 10:
        return bool(r.u8())
    if tag == 11:
        return None
    raise CorruptChunkError(f"json leaf has unknown tag {tag}")


def _record_value(r: _Reader) -> Any:
    tag = r.u8()
    if tag == 0x10:
        return None
    if tag == 0x11:
        return r.utf8()
    if tag == 0x12:
        return r.i64()
    if tag == 0x13:
        return r.f64()
    if tag == 0x14:
        return bool(r.u8())
    raise CorruptChunkError(f"json leaf record has unknown value tag {tag:#x}")
