"""Write chunks and a ``{rank}.index.json`` shard exactly as LitData's ``BinaryWriter`` does.

Filling rule (LITDATA.md §1.9): a chunk is closed before the item that would take it over
``chunk_size`` items (tokens for TokensLoader) or ``chunk_bytes`` payload bytes (sample-encrypted
size, header excluded); an item larger than the limit gets a chunk of its own.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from aiolit._units import parse_size
from aiolit.errors import FormatError
from aiolit.format._chunk import _FRAME, _FRAMED_HEADER, FRAMED_MAGIC
from aiolit.format._codec import Encryption, compress_file, compression_level_of, zstd_compress
from aiolit.format._index import ChunkEntry, Index, shard_name, write_index_atomic
from aiolit.format._pytree import LEAF, treespec_dumps
from aiolit.format._sample import SampleCodec
from aiolit.format._serializers import NoHeaderNumpySerializer, NoHeaderTensorSerializer, _is_tensor

__all__ = ["ChunkWriter", "check_compression_level", "parse_chunk_bytes"]


def parse_chunk_bytes(value: int | str) -> int:
    """``64_000_000`` or ``"64MB"`` (decimal units, as LitData) -> bytes."""
    return parse_size(value, name="chunk_bytes", positive=True, allow_float=False)


def _loader_name(item_loader: Any) -> str:
    name = item_loader if isinstance(item_loader, str) else getattr(item_loader, "name", None)
    name = name or type(item_loader).__name__
    if name not in ("PyTreeLoader", "TokensLoader"):
        raise ValueError(f"ChunkWriter writes PyTreeLoader or TokensLoader data, not {name!r}")
    return str(name)


def check_compression_level(
    compression: str | None,
    compression_level: Any,
    compression_batch_size: Any,
    encrypted: bool,
    item_loader: str,
) -> str:
    """Validate LitData 0.2.76's ``compression_level``/``compression_batch_size``; return the level.

    Raises
    ------
    ValueError
        An unknown level, batch/sample without zstd, with encryption or for tokens, or a bad batch size.
    """
    level = "chunk" if compression_level is None else str(compression_level).strip().lower()
    if isinstance(compression_level, bool | int) or level not in ("chunk", "batch", "sample"):
        raise ValueError(
            f"compression_level must be 'chunk', 'batch' or 'sample' (how the zstd frames wrap the "
            f"items; the zstd level goes in compression='zstd:N'), got {compression_level!r}"
        )
    if level != "chunk":
        if compression is None:
            raise ValueError(f"compression_level={level!r} needs compression='zstd' or 'zstd:N'")
        if encrypted:
            raise ValueError(f"compression_level={level!r} cannot be combined with encryption")
        if item_loader != "PyTreeLoader":
            raise ValueError(f"compression_level={level!r} is for PyTreeLoader chunks only")
    if compression_batch_size is not None and (
        isinstance(compression_batch_size, bool)
        or not isinstance(compression_batch_size, int)
        or compression_batch_size < 1
    ):
        raise ValueError(f"compression_batch_size must be a positive int, got {compression_batch_size!r}")
    return level


def _move_exclusive(source: str, target: str) -> bool:
    """Rename ``source`` to ``target`` unless ``target`` exists (then False, ``source`` kept)."""
    try:
        os.link(source, target)  # atomic: fails if the name is taken
    except FileExistsError:
        return False
    except OSError:
        # No hard links on this filesystem: reserve the name, then move the bytes over it.
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        os.replace(source, target)
        return True
    os.unlink(source)
    return True


class ChunkWriter:
    """Serialize samples into LitData chunk files in ``output_dir``.

    Parameters
    ----------
    output_dir
        Local directory for the chunks and the ``{rank}.index.json`` shard.
    rank
        Global writer rank (file names ``chunk-{rank}-{i}.bin``).
    chunk_size, chunk_bytes
        Exactly one: items (tokens for TokensLoader) or payload bytes per chunk (``"64MB"`` ok).
    compression
        ``None``, ``"zstd"`` or ``"zstd:N"``: whole-file zstd (``chunk-R-I.zstd.bin``) by default.
    compression_level
        Where the zstd frames go (LitData 0.2.76's ``compression_level``, a granularity, not the
        zstd level): ``"chunk"`` (default) whole file; ``"batch"`` frames of
        ``compression_batch_size`` items inside the ``.bin`` (``LDFZ01`` layout); ``"sample"``
        one frame per item inside the ``.bin``. Batch/sample keep the plain file name.
    compression_batch_size
        Items per frame for ``"batch"`` (default 256, as LitData).
    encryption
        An :class:`~aiolit.format.Encryption` (``sample`` or ``chunk`` level).
    item_loader
        ``"PyTreeLoader"`` / ``"TokensLoader"`` or a loader object (its ``name``).
    serializers
        Extra or replacement serializers by name.
    chunk_index_start
        First chunk counter ``i`` (append mode continues an existing dataset).
    exclusive
        Never replace an existing file: a taken chunk name is skipped for the next counter.
    name_tag
        Inserted before the extension of every chunk name (``chunk-R-I{tag}.bin``), e.g. a run id.
    tmp_tag
        Inserted into the temp file names (a run id, so leftovers can be told apart).
    """

    def __init__(
        self,
        output_dir: str,
        *,
        rank: int = 0,
        chunk_size: int | None = None,
        chunk_bytes: int | str | None = None,
        compression: str | None = None,
        encryption: Encryption | None = None,
        item_loader: Any = "PyTreeLoader",
        serializers: Mapping[str, Any] | None = None,
        chunk_index_start: int = 0,
        checksum: str | None = "sha256",
        compression_level: str | None = None,
        compression_batch_size: int | None = None,
        exclusive: bool = False,
        name_tag: str = "",
        tmp_tag: str = "",
    ) -> None:
        if (chunk_size is None) == (chunk_bytes is None):
            raise ValueError("ChunkWriter needs exactly one of chunk_size and chunk_bytes")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size <= 0):
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if compression is not None:
            compression_level_of(compression)  # validates
        if encryption is not None and encryption.level not in ("sample", "chunk"):
            raise ValueError(f"encryption level must be 'sample' or 'chunk', got {encryption.level!r}")
        level = check_compression_level(
            compression,
            compression_level,
            compression_batch_size,
            encryption is not None,
            _loader_name(item_loader),
        )
        if checksum is not None and checksum not in hashlib.algorithms_guaranteed:
            raise ValueError(f"checksum must be a hashlib algorithm name or None, got {checksum!r}")
        os.makedirs(output_dir, exist_ok=True)
        self.output_dir = output_dir
        # Each entry gets "checksum": "<algo>:<hex>" of the plain .bin bytes (after chunk
        # encryption, before whole-file compression): readers verify it after every download.
        # LitData ignores the key (tested by the oracle suite).
        self.checksum = checksum
        self.rank = rank
        self.chunk_size = chunk_size
        self.chunk_bytes = None if chunk_bytes is None else parse_chunk_bytes(chunk_bytes)
        self.compression = compression
        self.encryption = encryption
        self.item_loader = _loader_name(item_loader)
        self.compression_level = level
        self.compression_batch_size = compression_batch_size or 256
        self.serializers = serializers
        self._next_chunk = chunk_index_start
        self.exclusive = exclusive
        self.name_tag = name_tag
        self.tmp_tag = tmp_tag
        self._codec: SampleCodec | None = None
        self._token_serializer: Any = None
        self._data_format: list[str] | None = None
        self._data_spec: str | None = None
        self._payloads: list[bytes] = []
        self._bytes = 0
        self._items = 0  # items, or tokens for TokensLoader
        self._dim = 0
        self.entries: list[ChunkEntry] = []
        self._done = False

    @property
    def next_chunk_index(self) -> int:
        """The counter of the next chunk file (names already taken by others are skipped)."""
        return self._next_chunk

    @property
    def config(self) -> dict[str, Any]:
        """The index config this writer produces (LitData's classic keys)."""
        in_file: dict[str, Any] = {}
        if self.compression_level != "chunk":
            in_file["compression_level"] = self.compression_level
            if self.compression_level == "batch":
                in_file["compression_batch_size"] = self.compression_batch_size
        return {
            **in_file,
            "chunk_bytes": self.chunk_bytes,
            "chunk_size": self.chunk_size,
            "compression": self.compression,
            "data_format": self._data_format,
            "data_spec": self._data_spec,
            "encryption": None if self.encryption is None else self.encryption.config(),
            "item_loader": self.item_loader,
        }

    def _encode(self, sample: Any) -> tuple[bytes, int | None]:
        if self.item_loader == "TokensLoader":
            return self._encode_tokens(sample)
        if self._codec is None:
            self._codec = SampleCodec.for_sample(sample, self.serializers)
            self._data_format, self._data_spec = self._codec.data_format, self._codec.data_spec
        return self._codec.encode(sample), None

    def _encode_tokens(self, sample: Any) -> tuple[bytes, int]:
        is_array = type(sample) is np.ndarray
        if not (is_array or _is_tensor(sample)) or sample.ndim != 1:
            raise FormatError(
                f"TokensLoader samples must be 1-D numpy arrays or torch tensors, got {type(sample).__name__}"
                + (f" with shape {tuple(sample.shape)}" if hasattr(sample, "shape") else "")
            )
        serializer = NoHeaderNumpySerializer() if is_array else NoHeaderTensorSerializer()
        data, name = serializer.serialize(sample)
        if self._data_format is None:
            self._data_format, self._data_spec = [str(name)], treespec_dumps(LEAF)
        elif [name] != self._data_format:
            raise FormatError(
                f"token sample stored as {name!r} but the first sample fixed {self._data_format[0]!r}: "
                "every sequence must have the same type and dtype"
            )
        return data, len(sample)

    def add(self, sample: Any) -> list[ChunkEntry]:
        """Add one sample; returns the entries of chunks this call completed (already on disk)."""
        if self._done:
            raise RuntimeError("ChunkWriter.add() after done()")
        payload, dim = self._encode(sample)
        if self.encryption is not None and self.encryption.level == "sample":
            payload = self.encryption.encrypt(payload)
        count = 1 if dim is None else dim
        completed = []
        if self._payloads and (
            (self.chunk_bytes is not None and self._bytes + len(payload) > self.chunk_bytes)
            or (self.chunk_size is not None and self._items + count > self.chunk_size)
        ):
            completed.append(self._flush())
        self._payloads.append(payload)
        self._bytes += len(payload)
        self._items += count
        self._dim += dim or 0
        return completed

    def _flush(self) -> ChunkEntry:
        n = len(self._payloads)
        sizes = np.fromiter((len(p) for p in self._payloads), dtype=np.int64, count=n)
        offsets = 4 * (n + 2) + np.concatenate(([0], np.cumsum(sizes)))
        if offsets[-1] >= 2**32:
            raise FormatError(f"chunk of {offsets[-1]} bytes exceeds the 4 GiB a u32 offset can address")
        if self.compression_level == "sample":
            data = self._sample_frames(n)
        elif self.compression_level == "batch":
            data = self._batch_frames(sizes, n)
        else:
            header = np.concatenate(([n], offsets)).astype("<u4").tobytes()
            data = header + b"".join(self._payloads)
            if self.encryption is not None and self.encryption.level == "chunk":
                data = self.encryption.encrypt(data)
        whole_file = bool(self.compression) and self.compression_level == "chunk"
        stored = compress_file(data, self.compression) if whole_file and self.compression else data
        filename = self._write_file(stored)
        dim = self._dim if self.item_loader == "TokensLoader" else None
        extra = (
            {"checksum": f"{self.checksum}:{hashlib.new(self.checksum, data).hexdigest()}"}
            if self.checksum
            else {}
        )
        entry = ChunkEntry(filename=filename, chunk_size=n, chunk_bytes=len(data), dim=dim, extra=extra)
        self.entries.append(entry)
        self._next_chunk += 1
        self._payloads, self._bytes, self._items, self._dim = [], 0, 0, 0
        return entry

    def _sample_frames(self, n: int) -> bytes:
        # classic layout, each payload one zstd frame (LitData's compression_level="sample")
        assert self.compression is not None
        level = compression_level_of(self.compression)
        frames = [zstd_compress(p, level) for p in self._payloads]
        sizes = np.fromiter((len(f) for f in frames), dtype=np.int64, count=n)
        offsets = 4 * (n + 2) + np.concatenate(([0], np.cumsum(sizes)))
        return np.concatenate(([n], offsets)).astype("<u4").tobytes() + b"".join(frames)

    def _batch_frames(self, sizes: npt.NDArray[np.int64], n: int) -> bytes:
        # LDFZ01: magic, version, flags, N, K, frames; item offsets relative to the plain items;
        # a frame table (first item, items, file offset, compressed and plain length); the frames
        assert self.compression is not None
        level = compression_level_of(self.compression)
        k = self.compression_batch_size
        plain_offsets = np.concatenate(([0], np.cumsum(sizes))).astype("<u4")
        n_frames = (n + k - 1) // k
        cursor = _FRAMED_HEADER.size + 4 * (n + 1) + _FRAME.size * n_frames
        table, parts = [], []
        for f in range(n_frames):
            first, last = f * k, min(n, (f + 1) * k)
            plain = b"".join(self._payloads[first:last])
            packed = zstd_compress(plain, level)
            table.append(_FRAME.pack(first, last - first, cursor, len(packed), len(plain)))
            parts.append(packed)
            cursor += len(packed)
        head = _FRAMED_HEADER.pack(FRAMED_MAGIC, 1, 0, n, k, n_frames)
        return head + plain_offsets.tobytes() + b"".join(table) + b"".join(parts)

    def _filename(self) -> str:
        whole_file = bool(self.compression) and self.compression_level == "chunk"
        suffix = f".{self.compression}.bin" if whole_file else ".bin"
        return f"chunk-{self.rank}-{self._next_chunk}{self.name_tag}{suffix}"

    def _write_file(self, data: bytes) -> str:
        """Write the next chunk file; return its name.

        Temp name + rename: an uploader watching the directory never sees a partial chunk. With
        ``exclusive`` the final name is created with ``link`` (never replacing a file): a name
        already taken (a killed or concurrent run's chunk) is skipped for the next counter, so
        this writer never adopts or clobbers bytes it did not write.
        """
        prefix = f".{self._filename()}.{self.tmp_tag}"
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=self.output_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            while True:
                filename = self._filename()
                target = os.path.join(self.output_dir, filename)
                if not self.exclusive:
                    os.replace(tmp, target)
                    return filename
                if _move_exclusive(tmp, target):
                    return filename
                self._next_chunk += 1
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def close_chunk(self) -> list[ChunkEntry]:
        """End the current chunk now (if it holds anything); returns its entry, as :meth:`add` does."""
        if self._done:
            raise RuntimeError("ChunkWriter.close_chunk() after done()")
        return [self._flush()] if self._payloads else []

    def done(self) -> list[ChunkEntry]:
        """Flush the last chunk, write ``{rank}.index.json`` (if any chunk) and return all entries."""
        if not self._done:
            if self._payloads:
                self._flush()
            if self.entries:
                shard = Index(list(self.entries), self.config, updated_at=None)
                write_index_atomic(shard, os.path.join(self.output_dir, shard_name(self.rank)))
            self._done = True
        return list(self.entries)

    def index(self) -> Index:
        """The shard index of what was written so far."""
        return Index(list(self.entries), self.config, updated_at=None)
