"""Item loaders: how a chunk's items become samples (PyTree, token blocks, Parquet rows).

A loader is bound to a dataset's index with :meth:`BaseItemLoader.setup`, says how many samples
each chunk holds (:meth:`~BaseItemLoader.units`) and decodes sample ``k`` of an open chunk
(:meth:`~BaseItemLoader.load`). Decoding happens in the consumer's thread, from an mmap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from aiolit._fast import gather_token_blocks
from aiolit._torch import worker_info

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy.typing as npt
    import torch

    from aiolit.format import ChunkEntry, Index, SampleCodec
    from aiolit.streaming._source import OpenChunk

__all__ = ["BaseItemLoader", "ParquetLoader", "PyTreeLoader", "TokensLoader"]


class BaseItemLoader:
    """Base class; ``name`` is the value LitData writes as ``config["item_loader"]``."""

    name = "BaseItemLoader"

    def state_dict(self) -> dict[str, Any]:
        """What must match on resume (LitData's ``item_loader`` state entry)."""
        return {}

    def setup(
        self, index: Index, *, serializers: dict[str, Any] | None = None, allow_pickle: bool = False
    ) -> None:
        """Bind to a dataset's index (data format, dtypes); called once per dataset."""

    def units(self, entry: ChunkEntry) -> int:
        """Samples chunk ``entry`` yields."""
        return int(entry.chunk_size)

    def load(self, chunk: OpenChunk, k: int) -> Any:
        """Decode sample ``k`` of ``chunk``."""
        raise NotImplementedError(f"{type(self).__name__} cannot read chunks")

    def load_many(self, chunk: OpenChunk, ks: Sequence[int]) -> list[Any]:
        """Samples ``ks`` of ``chunk``: ``[load(chunk, k) for k in ks]``, maybe in one call."""
        load = self.load
        return [load(chunk, k) for k in ks]

    @property
    def supports_range_reads(self) -> bool:
        """Whether one sample can be read with a byte-range request (no whole-chunk download)."""
        return False


class PyTreeLoader(BaseItemLoader):
    """The default: each item is a pytree of serialized leaves."""

    name = "PyTreeLoader"

    def __init__(self) -> None:
        self._codec: SampleCodec | None = None
        self._codec_args: tuple[list[str], Any, dict[str, Any] | None, bool] | None = None

    def setup(
        self, index: Index, *, serializers: dict[str, Any] | None = None, allow_pickle: bool = False
    ) -> None:
        config = index.config
        self._codec_args = (
            list(config.get("data_format") or []),
            config.get("data_spec"),
            serializers,
            allow_pickle,
        )
        self._codec = None
        self._build()

    def _build(self) -> SampleCodec:
        from aiolit.format import SampleCodec

        assert self._codec_args is not None, "PyTreeLoader.setup() was not called"
        data_format, data_spec, serializers, allow_pickle = self._codec_args
        self._codec = SampleCodec(data_format, data_spec, serializers=serializers, allow_pickle=allow_pickle)
        return self._codec

    def __getstate__(self) -> dict[str, Any]:
        # The codec holds unpicklable parsers; workers rebuild it from the arguments.
        state = self.__dict__.copy()
        state["_codec"] = None
        return state

    def decode(self, payload: bytes | memoryview) -> Any:
        """Decode one item payload (as stored, after decryption/decompression)."""
        codec = self._codec or self._build()
        return codec.decode(payload)

    def load(self, chunk: OpenChunk, k: int) -> Any:
        view = chunk.view
        if view.footer_only:  # LitData >= 0.2.7x with pyarrow: the rows are in an Arrow footer
            return view.footer_rows([k])[0]
        return self.decode(view.item(k))

    def load_many(self, chunk: OpenChunk, ks: Sequence[int]) -> list[Any]:
        """Samples ``ks`` of ``chunk``, decoded in one call when the chunk is plain.

        Plain chunks (no frames, no encryption, no per-sample zstd) go through
        :meth:`SampleCodec.decode_many`, Arrow-footer chunks through one Arrow ``take``; the others, and subclasses overriding :meth:`load` or
        :meth:`decode`, are loaded item by item.
        """
        cls = type(self)
        view = chunk.view
        if view.footer_only and cls.load is PyTreeLoader.load:
            return view.footer_rows(ks) if ks else []
        plain = view.plain()
        if (
            plain is None
            or cls.load is not PyTreeLoader.load
            or cls.decode is not PyTreeLoader.decode
            or (ks and min(ks) < 0)  # negative indices count from the end, as load() does
        ):
            return super().load_many(chunk, ks)
        codec = self._codec or self._build()
        return codec.decode_many(plain[0], plain[1], ks)

    @property
    def supports_range_reads(self) -> bool:
        return True


class TokensLoader(BaseItemLoader):
    """Token datasets: items are 1-D token arrays read back as fixed-size blocks of ``block_size``.

    Block ``j`` of a chunk is tokens ``[j * block_size, (j + 1) * block_size)`` of the chunk's
    concatenated token stream: blocks cross sequence boundaries but never chunk boundaries, and
    each chunk's ``dim % block_size`` tail is dropped (LitData's lengths). Blocks come back as a
    ``torch.Tensor`` for ``no_header_tensor`` data and a ``numpy.ndarray`` for ``no_header_numpy``,
    always copies (never views of the mmap).
    """

    name = "TokensLoader"

    def __init__(self, block_size: int | None = None) -> None:
        if block_size is not None and (
            isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0
        ):
            raise ValueError(f"TokensLoader(block_size=...) must be a positive int, got {block_size!r}")
        self.block_size = block_size
        self._dtype: np.dtype[Any] | None = None
        self._torch_dtype: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"block_size": self.block_size}

    def setup(
        self, index: Index, *, serializers: dict[str, Any] | None = None, allow_pickle: bool = False
    ) -> None:
        from aiolit.errors import FormatError
        from aiolit.format import token_dtype

        if self.block_size is None:
            raise ValueError("TokensLoader(block_size=...) is required to read a dataset")
        fmt = list(index.config.get("data_format") or [])
        if len(fmt) != 1:
            raise FormatError(f"TokensLoader needs a dataset of 1-D token arrays, got data_format {fmt}")
        self._dtype = token_dtype(fmt[0])  # raises FormatError for anything but no_header_*:N
        # no_header_tensor data comes back as tensors, no_header_numpy as arrays (as LitData).
        self._torch_dtype = self._dtype.name if fmt[0].startswith("no_header_tensor") else None
        for entry in index.chunks:
            if entry.dim is None:
                raise FormatError(f"TokensLoader: chunk {entry.filename} has no 'dim' in the index")
            if entry.chunk_bytes and entry.dim * self._dtype.itemsize > entry.chunk_bytes:
                raise FormatError(
                    f"TokensLoader: chunk {entry.filename} has 'dim' {entry.dim} tokens, more than its "
                    f"'chunk_bytes' {entry.chunk_bytes} can hold"
                )

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy dtype of the token stream."""
        assert self._dtype is not None, "TokensLoader.setup() was not called"
        return self._dtype

    def units(self, entry: ChunkEntry) -> int:
        assert self.block_size is not None
        return int(entry.dim or 0) // self.block_size

    def block(self, chunk: OpenChunk, k: int) -> npt.NDArray[Any]:
        """Block ``k`` of ``chunk`` as a numpy view of the mmap (not a copy)."""
        assert self.block_size is not None
        tokens = chunk.tokens(self.dtype)
        return tokens[k * self.block_size : (k + 1) * self.block_size]

    def wrap(self, array: npt.NDArray[Any]) -> Any:
        """Turn a (copied) token array into what the loader yields."""
        if self._torch_dtype is None:
            return array
        import torch

        return torch.from_numpy(array)

    def load(self, chunk: OpenChunk, k: int) -> Any:
        return self.wrap(self.block(chunk, k).copy())

    def batch_buffer(
        self, rows: int, *, as_numpy: bool = False
    ) -> tuple[torch.Tensor | npt.NDArray[Any], torch.Tensor | npt.NDArray[Any]]:
        """An uninitialized ``(rows, block_size)`` batch and a view of it to fill (:meth:`gather`).

        The batch is a tensor, what ``default_collate`` makes of ``rows`` blocks (numpy blocks
        become a tensor too); in a DataLoader worker it lives in shared memory, as
        ``default_collate``'s does, so handing it to the main process copies nothing, and the
        view is a numpy array of it; in the main process the view is the tensor itself.
        ``as_numpy``: a numpy array instead (the receiver turns it into that tensor with
        ``torch.from_numpy``).
        """
        return self.batch_allocator(as_numpy=as_numpy)(rows)

    def batch_allocator(self, *, as_numpy: bool = False) -> Callable[[int], tuple[Any, Any]]:
        """``rows -> batch_buffer(rows, as_numpy=as_numpy)`` for the process it is called in.

        A reader allocating one batch after another binds everything once: in the main process
        a batch then costs one ``torch.empty`` call (~1 µs) and little else.
        """
        assert self.block_size is not None
        block, np_dtype = self.block_size, self.dtype
        if as_numpy:
            return lambda rows: (a := np.empty((rows, block), np_dtype), a)
        import torch

        dtype = self.__dict__.get("_batch_dtype")
        if dtype is None:
            dtype = self.__dict__["_batch_dtype"] = torch.from_numpy(np.empty(0, np_dtype)).dtype
        if worker_info() is None:
            empty = torch.empty

            def alloc(rows: int) -> tuple[Any, Any]:
                # Sizes as separate ints: torch parses them faster than a tuple (~1 µs vs ~1.7 µs).
                batch = empty(rows, block, dtype=dtype)
                return batch, batch

            return alloc

        def shared(rows: int) -> tuple[Any, Any]:
            storage = torch.UntypedStorage._new_shared(rows * block * np_dtype.itemsize)  # type: ignore[no-untyped-call]
            batch = torch.empty(0, dtype=dtype).set_(storage, 0, (rows, block), (block, 1))
            return batch, batch.numpy()

        return shared

    def gather(
        self, chunk: OpenChunk, order: npt.NDArray[np.int64], pos: int, take: int, out: Any, row: int
    ) -> None:
        """Copy blocks ``order[pos : pos + take]`` of ``chunk`` into rows ``row...`` of ``out``.

        ``out`` is a view from :meth:`batch_buffer` (a numpy array or a CPU tensor); one
        ``memcpy`` per block (``gather_token_blocks``).
        """
        gather_token_blocks(chunk.tokens(self._dtype), order, pos, take, self.block_size, out, row)  # type: ignore[arg-type]


class ParquetLoader(BaseItemLoader):
    """Rows of Parquet files indexed by ``index_parquet_dataset``, as dicts (needs pyarrow).

    Each file is one chunk; sample ``k`` of a chunk is row ``k`` of the file.

    Parameters
    ----------
    pre_load_chunk : bool
        Decode the whole file the first time one of its rows is read.
    low_memory : bool
        Decode one row group at a time (``to_pylist``) and keep it until each of its rows
        has been read once (the sequential and shuffled walks read every row once). False
        decodes the whole file at once, as ``pre_load_chunk``.
    columns : list of str, optional
        Read only these columns.
    """

    name = "ParquetLoader"

    def __init__(
        self, pre_load_chunk: bool = False, low_memory: bool = True, columns: list[str] | None = None
    ) -> None:
        for arg, value in (("pre_load_chunk", pre_load_chunk), ("low_memory", low_memory)):
            if not isinstance(value, bool):
                raise ValueError(f"ParquetLoader({arg}=...) must be a bool, got {value!r}")
        if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
            raise ValueError(f"ParquetLoader(columns=...) must be a list of column names, got {columns!r}")
        self.pre_load_chunk = pre_load_chunk
        self.low_memory = low_memory
        self.columns = list(columns) if columns is not None else None

    def setup(
        self, index: Index, *, serializers: dict[str, Any] | None = None, allow_pickle: bool = False
    ) -> None:
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as e:  # pragma: no cover - pyarrow is a test dependency
            raise ImportError("ParquetLoader needs pyarrow: pip install pyarrow") from e

    def _file(self, chunk: OpenChunk) -> _ParquetChunk:
        state: _ParquetChunk | None = chunk.__dict__.get("_parquet")
        if state is None:
            state = chunk.__dict__["_parquet"] = _ParquetChunk(chunk, self.columns)
        return state

    def load(self, chunk: OpenChunk, k: int) -> Any:
        state = self._file(chunk)
        if self.pre_load_chunk or not self.low_memory:
            return state.all_rows()[k]
        return state.row(k)


class _ParquetChunk:
    """One open Parquet file: its row groups, decoded on demand and dropped once consumed."""

    def __init__(self, chunk: OpenChunk, columns: list[str] | None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.file = pq.ParquetFile(pa.BufferReader(pa.py_buffer(chunk.data)))
        meta = self.file.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self.columns = columns
        self.groups: dict[int, tuple[list[dict[str, Any]], list[int]]] = {}
        self.rows: list[dict[str, Any]] | None = None

    def all_rows(self) -> list[dict[str, Any]]:
        if self.rows is None:
            self.rows = self.file.read(columns=self.columns, use_threads=False).to_pylist()
        return self.rows

    def row(self, k: int) -> dict[str, Any]:
        if not 0 <= k < int(self.starts[-1]):
            raise IndexError(f"row {k} is out of range for a Parquet file of {int(self.starts[-1])} rows")
        g = int(np.searchsorted(self.starts, k, side="right")) - 1
        cached = self.groups.get(g)
        if cached is None:
            table = self.file.read_row_group(g, columns=self.columns, use_threads=False)
            cached = self.groups[g] = (table.to_pylist(), [table.num_rows])
        rows, left = cached
        left[0] -= 1
        if left[0] <= 0:
            del self.groups[g]
        return rows[k - int(self.starts[g])]
