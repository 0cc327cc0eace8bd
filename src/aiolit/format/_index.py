"""``index.json``: read, validate, write, merge (LitData's layout, see FORMAT.md).

Written exactly as LitData does: ``json.dumps(..., sort_keys=True)`` with default separators.
Chunk-entry keys this module does not know are kept in :attr:`ChunkEntry.extra` and written back,
so additions such as a per-chunk checksum survive a round trip (LitData ignores them).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiolit.errors import FormatError, NotOptimizedError, UnsafeFilenameError

__all__ = [
    "ChunkEntry",
    "Index",
    "list_shards",
    "load_index",
    "merge_indexes",
    "merge_shards",
    "natural_sort_key",
    "shard_name",
    "validate_chunk_filename",
]

INDEX_FILENAME = "index.json"
_SHARD_RE = re.compile(r"^(\d+)\.index\.json$")
_KNOWN_ENTRY_KEYS = ("filename", "chunk_size", "chunk_bytes", "dim")


def validate_chunk_filename(name: str, *, allow_subdirs: bool = False) -> str:
    """Return ``name`` if it is safe to join to a dataset or cache directory.

    Rejects empty names, NUL bytes, absolute paths, ``.``/``..`` components and, unless
    ``allow_subdirs`` (parquet indexes may name ``dir/file.parquet``), any path separator.

    Raises
    ------
    UnsafeFilenameError
        The name would escape its directory (the message names it).
    """
    if not isinstance(name, str) or not name:
        raise UnsafeFilenameError(f"chunk filename {name!r} must be a non-empty string")
    problem = None
    if "\x00" in name:
        problem = "contains a NUL byte"
    elif name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        problem = "is an absolute path"
    elif not allow_subdirs and ("/" in name or "\\" in name):
        problem = "contains a path separator"
    elif any(part in ("", ".", "..") for part in re.split(r"[/\\]", name)):
        problem = "contains an empty, '.' or '..' path component"
    if problem:
        raise UnsafeFilenameError(
            f"chunk filename {name!r} {problem}; an index may only name files inside its own directory"
        )
    return name


def natural_sort_key(name: str) -> tuple[Any, ...]:
    """Sort key where digit runs compare as numbers (``2.index.json`` < ``10.index.json``)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def shard_name(rank: int) -> str:
    """The per-writer index shard name LitData uses: ``{rank}.index.json``."""
    return f"{rank}.index.json"


def _int_field(raw: dict[str, Any], key: str, where: str, *, optional: bool = False) -> int | None:
    value = raw.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"{where}: {key!r} must be a non-negative integer, got {value!r}")
    return value


def _check_header_room(entry: ChunkEntry, where: str) -> None:
    # A chunk starts with u32 N and N + 1 u32 offsets: an item count the header cannot hold, or
    # one whose header alone outgrows the chunk's bytes, is rejected before anything is sized by it.
    if entry.chunk_size >= 2**32:
        raise FormatError(f"{where}: 'chunk_size' {entry.chunk_size} does not fit the u32 item count")
    if entry.chunk_bytes and 4 * (entry.chunk_size + 2) > entry.chunk_bytes:
        raise FormatError(
            f"{where}: 'chunk_size' {entry.chunk_size} items need a {4 * (entry.chunk_size + 2)}-byte "
            f"header but 'chunk_bytes' is {entry.chunk_bytes}"
        )


def _updated_at(value: Any, source: str) -> str | None:
    # LitData writes str(time.time()); the value also names a cache directory.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FormatError(f"{source}: 'updated_at' must be a string, got {type(value).__name__}")
    text = str(value)
    if not text or len(text) > 256 or not text.isprintable():
        raise FormatError(f"{source}: 'updated_at' must be 1-256 printable characters, got {text[:40]!r}")
    return text


@dataclass
class ChunkEntry:
    """One chunk of a dataset, as listed in ``index.json``."""

    filename: str
    chunk_size: int
    chunk_bytes: int
    dim: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(
        cls, raw: Any, *, source: str = "index.json", position: int = 0, allow_subdirs: bool = False
    ) -> ChunkEntry:
        """Validate one chunk entry (types, safe filename)."""
        where = f"{source} chunk #{position}"
        if not isinstance(raw, dict):
            raise FormatError(f"{where} must be an object, got {type(raw).__name__}")
        if "filename" not in raw or "chunk_size" not in raw:
            raise FormatError(f"{where} lacks the required key 'filename' or 'chunk_size'")
        filename = raw["filename"]
        try:
            validate_chunk_filename(filename, allow_subdirs=allow_subdirs)
        except UnsafeFilenameError as exc:
            raise UnsafeFilenameError(f"{where}: {exc}") from None
        chunk_size = _int_field(raw, "chunk_size", where)
        # chunk_bytes may be missing in hand-made indexes: 0 means unknown
        chunk_bytes = _int_field({"chunk_bytes": raw.get("chunk_bytes", 0)}, "chunk_bytes", where)
        dim = _int_field(raw, "dim", where, optional=True)
        extra = {k: v for k, v in raw.items() if k not in _KNOWN_ENTRY_KEYS}
        assert chunk_size is not None and chunk_bytes is not None
        return cls(filename, chunk_size, chunk_bytes, dim, extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this entry (extra keys included)."""
        out = dict(self.extra)
        out.update(
            chunk_bytes=self.chunk_bytes, chunk_size=self.chunk_size, dim=self.dim, filename=self.filename
        )
        return out


@dataclass
class Index:
    """A parsed ``index.json`` (or ``{rank}.index.json`` shard)."""

    chunks: list[ChunkEntry]
    config: dict[str, Any]
    updated_at: str | None = None

    @classmethod
    def from_json(cls, data: bytes | str, *, source: str = "index.json") -> Index:
        """Parse and validate an index; errors name ``source``.

        Raises
        ------
        FormatError
            Not JSON, a required key missing or of the wrong type.
        UnsafeFilenameError
            A chunk filename that would escape the dataset directory.
        """
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise FormatError(f"{source} must hold a JSON object, got {type(raw).__name__}")
        if "shards" in raw and "chunks" not in raw:
            raise FormatError(f"{source} is a MosaicML MDS index ('shards'); aiolit reads LitData indexes")
        for key in ("chunks", "config"):
            if key not in raw:
                raise FormatError(f"{source} lacks the required key {key!r}")
        config = raw["config"]
        if config is None and raw["chunks"] == []:
            config = {}  # the empty dataset LitData writes when fn kept no input
        if not isinstance(config, dict):
            raise FormatError(f"{source}: 'config' must be an object")
        if config and not isinstance(config.get("data_format"), list):
            raise FormatError(
                f"{source}: config 'data_format' must be a list, got {config.get('data_format')!r}"
            )
        if not isinstance(config.get("data_spec"), str | None):
            raise FormatError(f"{source}: config 'data_spec' must be a string or null")
        if not isinstance(raw["chunks"], list):
            raise FormatError(f"{source}: 'chunks' must be a list")
        subdirs = config.get("item_loader") == "ParquetLoader"
        chunks = [
            ChunkEntry.from_dict(c, source=source, position=i, allow_subdirs=subdirs)
            for i, c in enumerate(raw["chunks"])
        ]
        if not subdirs:
            for i, c in enumerate(chunks):
                _check_header_room(c, f"{source} chunk #{i}")
        return cls(chunks, config, _updated_at(raw.get("updated_at"), source))

    def to_json(self) -> bytes:
        """The bytes LitData writes (``sort_keys=True``; ``updated_at`` only if set)."""
        # An empty dataset has no config: LitData writes ``"config": null``.
        config = self.config if self.chunks or self.config else None
        raw: dict[str, Any] = {"chunks": [c.to_dict() for c in self.chunks], "config": config}
        if self.updated_at is not None:
            raw["updated_at"] = self.updated_at
        return json.dumps(raw, sort_keys=True).encode("utf-8")

    @property
    def num_samples(self) -> int:
        """Items in the dataset (sequences for TokensLoader, rows for parquet)."""
        return sum(c.chunk_size for c in self.chunks)

    @property
    def item_loader(self) -> str:
        """The loader class name the data needs (inferred for indexes that lack the key)."""
        name = self.config.get("item_loader")
        if isinstance(name, str):
            return name
        fmt = self.config.get("data_format") or []
        if len(fmt) == 1 and str(fmt[0]).startswith("no_header_tensor:"):
            return "TokensLoader"
        return "PyTreeLoader"


def _config_without_types(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "types"}


def merge_indexes(indexes: Sequence[Index], *, updated_at: str | None) -> Index:
    """Concatenate the chunks of ``indexes`` in order; every config must match (``types`` aside).

    Raises
    ------
    FormatError
        No index given, or two configs differ (the message names the differing keys).
    """
    if not indexes:
        raise FormatError("merge_indexes needs at least one index")
    first = indexes[0].config
    for pos, index in enumerate(indexes[1:], start=1):
        if _config_without_types(index.config) != _config_without_types(first):
            keys = sorted(
                k
                for k in set(first) | set(index.config)
                if k != "types" and first.get(k) != index.config.get(k)
            )
            raise FormatError(f"the config isn't consistent between index #0 and #{pos}: keys {keys} differ")
    config = dict(first)
    type_values = [i.config["types"] for i in indexes if i.config.get("types") is not None]
    if type_values:
        config["types"] = _fuse_types(type_values)
    chunks = [c for index in indexes for c in index.chunks]
    return Index(chunks, config, updated_at)


def _fuse_types(values: list[Any]) -> Any:
    # `types` only informs readers; keep the first, adding fields that later writers saw
    fused = values[0]
    if isinstance(fused, dict):
        fused = dict(fused)
        for value in values[1:]:
            if isinstance(value, dict):
                for key, kind in value.items():
                    fused.setdefault(key, kind)
    return fused


def list_shards(local_dir: str) -> list[str]:
    """The ``{rank}.index.json`` shards in ``local_dir``, in natural order."""
    try:
        names = os.listdir(local_dir)
    except FileNotFoundError:
        return []
    return sorted((n for n in names if _SHARD_RE.match(n)), key=natural_sort_key)


def _read(path: str) -> Index:
    with open(path, "rb") as f:
        return Index.from_json(f.read(), source=path)


def write_index_atomic(index: Index, path: str) -> None:
    """Write ``index`` to ``path`` through a temp file and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(index.to_json())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def merge_shards(local_dir: str, *, remove_shards: bool = True) -> Index:
    """Merge the writer shards of ``local_dir`` into ``index.json`` (atomically) and return it.

    Raises
    ------
    FormatError
        No shard in the directory, or shards with different configs.
    """
    names = list_shards(local_dir)
    if not names:
        raise FormatError(f"{local_dir} holds no per-writer N.index.json file to merge")
    merged = merge_indexes([_read(os.path.join(local_dir, n)) for n in names], updated_at=str(time.time()))
    write_index_atomic(merged, os.path.join(local_dir, INDEX_FILENAME))
    if remove_shards:
        for name in names:
            os.unlink(os.path.join(local_dir, name))
    return merged


def load_index(local_dir: str, *, write: bool = False) -> Index:
    """Read ``local_dir/index.json``; if it is missing, merge the writer shards instead.

    With ``write=False`` the shards are merged in memory (``updated_at`` stays ``None``) and left
    in place; with ``write=True`` :func:`merge_shards` writes ``index.json``.

    Raises
    ------
    NotOptimizedError
        Neither ``index.json`` nor any shard exists (a ``FileNotFoundError`` too).
    """
    path = os.path.join(local_dir, INDEX_FILENAME)
    if os.path.exists(path):
        return _read(path)
    names = list_shards(local_dir)
    if not names:
        raise NotOptimizedError(not_optimized_message(local_dir))
    if write:
        return merge_shards(local_dir)
    return merge_indexes([_read(os.path.join(local_dir, n)) for n in names], updated_at=None)


def not_optimized_message(where: str) -> str:
    """What a reader says about a location without any index."""
    return (
        f"{where} is not an optimized dataset: it has no index.json (nor the per-writer "
        "N.index.json files an unfinished optimize leaves). Point at the output_dir an "
        "optimize() call wrote, or create the dataset with aiolit.optimize(fn, inputs, output_dir=...)"
    )


_MissingIndexError = NotOptimizedError  # the former private name
