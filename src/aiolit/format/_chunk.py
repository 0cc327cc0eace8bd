"""A zero-copy view over one chunk file's bytes, whatever layout LitData used.

Layouts (LITDATA.md §1.3, §1.8, §1.10):

* classic: ``u32 N``, ``u32 offsets[N+1]`` (absolute), item payloads;
* whole-file zstd (``.zstd.bin``): one zstd frame of a classic chunk;
* framed ``LDFZ01`` (0.2.7x ``compression_level="batch"``): item payloads in zstd frames of K items;
* per-sample zstd (``"sample"``): classic, each payload one zstd frame;
* Fernet ``chunk`` level: the whole chunk is one token; ``sample`` level: each payload is;
* Arrow footer (0.2.7x with pyarrow): classic header with empty items, rows in an Arrow IPC file
  stored after them, then ``u32 ipc_len`` and ``LDARW01\\0``.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from aiolit._fast import parse_header, parse_offsets
from aiolit.errors import CorruptChunkError, EncryptionError, FormatError
from aiolit.format._codec import ZSTD_MAGIC, Encryption, zstd_decompress
from aiolit.format._index import ChunkEntry
from aiolit.format._sample import SampleCodec

__all__ = ["ARROW_MAGIC", "FRAMED_MAGIC", "ChunkView", "check_encryption", "open_chunk"]

FRAMED_MAGIC = b"LDFZ01\x00\x00"
ARROW_MAGIC = b"LDARW01\x00"
_FRAMED_HEADER = struct.Struct("<8sHHIII")  # magic, version, flags, N, rows per frame, frames
_FRAME = struct.Struct("<IIQII")  # first item, items, compressed offset, compressed len, plain len


def check_encryption(config: dict[str, Any], encryption: Encryption | None, where: str) -> None:
    """Check that ``encryption`` matches the index's ``config["encryption"]``.

    Raises
    ------
    EncryptionError
        Encrypted data without an encryption, or algorithm/level different from the index.
    """
    expected = config.get("encryption")
    if expected is None:
        if encryption is not None:
            raise EncryptionError(f"{where} is not encrypted but an encryption was given; drop encryption=")
        return
    if encryption is None:
        cls = "RSAEncryption" if expected.get("algorithm") == "rsa" else "FernetEncryption"
        raise EncryptionError(
            f"{where} is encrypted ({expected.get('algorithm')}, level {expected.get('level')!r}): pass "
            f"encryption={cls}.load(key_file, password)"
        )
    if expected.get("algorithm") != encryption.algorithm or expected.get("level") != encryption.level:
        raise EncryptionError(
            f"{where} is encrypted with {expected}, but the given encryption is "
            f"{{'algorithm': {encryption.algorithm!r}, 'level': {encryption.level!r}}}"
        )


class ChunkView:
    """Items of one chunk, sliced out of its bytes without copying where the layout allows.

    Use :func:`open_chunk` to build one. ``item(k)`` returns item ``k``'s payload (decrypted and
    decompressed); for Arrow-footer chunks use :meth:`footer_rows`.
    """

    def __init__(
        self,
        buf: memoryview,
        offsets: npt.NDArray[np.uint32],
        *,
        filename: str,
        encryption: Encryption | None = None,
        sample_zstd: bool = False,
        frames: list[tuple[int, int, int, int, int]] | None = None,
    ) -> None:
        self._buf = buf
        self.offsets = offsets
        # The same offsets as a memoryview: indexing it gives Python ints (numpy scalars cost ~1 µs
        # more per item). Zero-copy: it pins ``offsets``, which pins ``buf``.
        self._offs = offsets.data.cast("B").cast("I")
        self.filename = filename
        self.num_items = len(offsets) - 1
        self._encryption = encryption
        self._sample_zstd = sample_zstd
        self._frames = frames
        self._frame_starts = np.array([f[0] for f in frames], dtype=np.int64) if frames else None
        self._frame_cache: dict[int, bytes] = {}
        self._footer: Any = None

    def __len__(self) -> int:
        return self.num_items

    def item(self, k: int) -> memoryview:
        """The payload of item ``k`` (what :meth:`SampleCodec.decode` takes)."""
        n = self.num_items
        if 0 <= k < n:
            pass
        elif -n <= k < 0:
            k += n
        else:
            raise IndexError(f"item {k} out of range for {self.filename} with {n} items")
        if self._frames is not None:
            return self._framed_item(k)
        offs = self._offs
        raw = self._buf[offs[k] : offs[k + 1]]
        if self._encryption is not None:
            raw = memoryview(self._encryption.decrypt(bytes(raw)))
        if self._sample_zstd:
            raw = memoryview(zstd_decompress(raw, what=f"item {k} of {self.filename}"))
        return raw

    def decode(self, k: int, codec: SampleCodec) -> Any:
        """Item ``k`` decoded by ``codec``."""
        return codec.decode(self.item(k))

    def plain(self) -> tuple[memoryview, npt.NDArray[np.uint32]] | None:
        """``(buf, offsets)`` when item ``k`` is exactly ``buf[offsets[k]:offsets[k + 1]]``, else None.

        Plain means classic layout without per-sample encryption or compression (frames, Fernet
        ``sample`` level and per-sample zstd return None): the arguments of
        :meth:`SampleCodec.decode_many`.
        """
        if self._frames is None and self._encryption is None and not self._sample_zstd:
            return self._buf, self.offsets
        return None

    def payload_bytes(self) -> memoryview:
        """All item payloads concatenated (a token stream for TokensLoader chunks)."""
        if self._frames is None and self._encryption is None and not self._sample_zstd:
            return self._buf[int(self.offsets[0]) : int(self.offsets[-1])]
        return memoryview(b"".join(bytes(self.item(k)) for k in range(self.num_items)))

    def tokens(self, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """The chunk's token stream as a (read-only, zero-copy if possible) 1-D array."""
        data = self.payload_bytes()
        dt = np.dtype(dtype)
        if len(data) % dt.itemsize:
            raise CorruptChunkError(f"{self.filename}: {len(data)} token bytes are not a whole {dt} array")
        return np.frombuffer(data, dtype=dt)

    # -- framed (LDFZ01) ---------------------------------------------------------------------

    def _framed_item(self, k: int) -> memoryview:
        assert self._frames is not None and self._frame_starts is not None
        f = int(np.searchsorted(self._frame_starts, k, side="right")) - 1
        first = self._frames[f][0]
        data = self._frame(f)
        offs = self._offs
        base = offs[first]
        return memoryview(data)[offs[k] - base : offs[k + 1] - base]

    def _frame(self, f: int) -> bytes:
        cached = self._frame_cache.get(f)
        if cached is None:
            assert self._frames is not None
            _, _, off, length, plain = self._frames[f]
            cached = zstd_decompress(
                self._buf[off : off + length], what=f"frame {f} of {self.filename}", expected_size=plain
            )
            self._frame_cache[f] = cached
        return cached

    # -- Arrow footer --------------------------------------------------------------------------

    @property
    def has_footer(self) -> bool:
        """Whether the chunk carries an Arrow IPC footer (0.2.7x with pyarrow)."""
        return bytes(self._buf[-len(ARROW_MAGIC) :]) == ARROW_MAGIC

    @cached_property
    def footer_only(self) -> bool:
        """Rows live only in the footer (every item payload is empty)."""
        return self.has_footer and int(self.offsets[-1]) == int(self.offsets[0])

    def footer_rows(self, ks: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Rows ``ks`` (default: all, in item order) of the Arrow footer, as new dicts (needs pyarrow).

        Negative indices count from the end, as :meth:`item` does.
        """
        table = self._footer_table()
        if ks is None:
            rows: list[dict[str, Any]] = table.to_pylist()
            return rows
        n = self.num_items
        picked = []
        for k in ks:
            if not -n <= k < n:
                raise IndexError(f"item {k} out of range for {self.filename} with {n} items")
            picked.append(k + n if k < 0 else k)
        if len(picked) == 1:
            one: list[dict[str, Any]] = table.slice(picked[0], 1).to_pylist()
            return one
        taken: list[dict[str, Any]] = table.take(picked).to_pylist()
        return taken

    def _footer_table(self) -> Any:
        """The footer's ``pyarrow.Table`` (parsed once per view)."""
        if self._footer is not None:
            return self._footer
        if not self.has_footer:
            raise FormatError(f"{self.filename} has no Arrow footer")
        end = len(self._buf) - len(ARROW_MAGIC)
        (ipc_len,) = struct.unpack_from("<I", self._buf, end - 4)
        start = end - 4 - ipc_len
        if start < int(self.offsets[-1]):
            raise CorruptChunkError(f"{self.filename}: Arrow footer of {ipc_len} bytes overlaps the items")
        try:
            import pyarrow as pa
            import pyarrow.ipc
        except ImportError:
            raise FormatError(
                f"{self.filename} stores its rows in an Arrow footer: install pyarrow"
            ) from None
        try:
            table = pa.ipc.open_file(pa.py_buffer(bytes(self._buf[start : end - 4]))).read_all()
        except pa.ArrowInvalid as exc:
            raise CorruptChunkError(f"{self.filename}: Arrow footer does not parse: {exc}") from None
        if table.num_rows != self.num_items:
            raise CorruptChunkError(
                f"{self.filename}: Arrow footer has {table.num_rows} rows for {self.num_items} items"
            )
        self._footer = table
        return table


def _as_bytes_view(data: bytes | bytearray | memoryview | mmap.mmap) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def open_chunk(
    data: bytes | bytearray | memoryview | mmap.mmap,
    entry: ChunkEntry,
    config: dict[str, Any],
    encryption: Encryption | None = None,
) -> ChunkView:
    """Open a chunk from its bytes as stored (compressed/encrypted/framed/plain).

    Raises
    ------
    CorruptChunkError
        Truncated data, a header out of bounds, or an item count different from the index.
    EncryptionError
        Encrypted data without the matching encryption, or a wrong key.
    FormatError
        A layout the index announces but the bytes lack (e.g. ``batch`` without ``LDFZ01``).
    """
    name = entry.filename
    check_encryption(config, encryption, name)
    buf = _as_bytes_view(data)
    compression = config.get("compression")
    level = config.get("compression_level") or "chunk"
    # whole-file zstd: accept the stored file or the already decompressed one
    if compression and level == "chunk" and bytes(buf[:4]) == ZSTD_MAGIC:
        buf = memoryview(zstd_decompress(buf, what=name, max_size=entry.chunk_bytes or None))
    if entry.chunk_bytes and len(buf) < entry.chunk_bytes:
        raise CorruptChunkError(f"{name} is truncated: {len(buf)} bytes, the index says {entry.chunk_bytes}")
    enc_level = (config.get("encryption") or {}).get("level")
    if encryption is not None and enc_level == "chunk":
        buf = memoryview(encryption.decrypt(bytes(buf)))
    sample_enc = encryption if enc_level == "sample" else None
    if bytes(buf[:8]) == FRAMED_MAGIC:
        return _open_framed(buf, entry, sample_enc)
    if compression and level == "batch":
        raise FormatError(
            f"{name} is indexed as compression_level='batch' but lacks the LDFZ01 magic: the dataset is "
            "inconsistent (LitData 0.2.76 writes such chunks for JSON-like samples without pyarrow); "
            "re-optimize it with compression_level='chunk' or without compression"
        )
    offsets = parse_header(buf, entry.chunk_size)
    return ChunkView(
        buf,
        offsets,
        filename=name,
        encryption=sample_enc,
        sample_zstd=bool(compression) and level == "sample",
    )


def _open_framed(buf: memoryview, entry: ChunkEntry, encryption: Encryption | None) -> ChunkView:
    name = entry.filename
    if encryption is not None:
        raise FormatError(f"{name}: LDFZ01 framed chunks cannot be sample-encrypted")
    if len(buf) < _FRAMED_HEADER.size:
        raise CorruptChunkError(f"{name}: LDFZ01 header truncated ({len(buf)} bytes)")
    _, version, _, n, _rows, n_frames = _FRAMED_HEADER.unpack_from(buf)
    if version != 1:
        raise FormatError(f"{name}: LDFZ01 version {version} is not supported (only 1)")
    if n != entry.chunk_size:
        raise CorruptChunkError(
            f"{name}: LDFZ01 header says {n} items but the index expects {entry.chunk_size}"
        )
    table_end = _FRAMED_HEADER.size + 4 * (n + 1) + _FRAME.size * n_frames
    if table_end > len(buf):
        raise CorruptChunkError(f"{name}: LDFZ01 tables need {table_end} bytes, the chunk has {len(buf)}")
    offsets = parse_offsets(buf, _FRAMED_HEADER.size, n, 0, -1)
    frames = []
    expected_first = 0
    for f in range(n_frames):
        frame = _FRAME.unpack_from(buf, _FRAMED_HEADER.size + 4 * (n + 1) + _FRAME.size * f)
        first, count, off, length, plain = frame
        last = first + count
        if (
            first != expected_first
            or last > n
            or off + length > len(buf)
            or plain != int(offsets[last]) - int(offsets[first])
        ):
            raise CorruptChunkError(f"{name}: LDFZ01 frame {f} {frame} is inconsistent with the chunk")
        frames.append(frame)
        expected_first = last
    if expected_first != n:
        raise CorruptChunkError(f"{name}: LDFZ01 frames cover {expected_first} of {n} items")
    return ChunkView(buf, offsets, filename=name, frames=frames)
