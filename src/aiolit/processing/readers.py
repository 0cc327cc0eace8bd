"""Readers for ``optimize(reader=...)`` / ``map(reader=...)`` (LitData's ``litdata.processing.readers``).

A reader turns the user's ``inputs`` into work items (:meth:`BaseReader.remap_items`, once, in the
coordinator) and each work item into what ``fn`` receives (:meth:`BaseReader.read`, in the
worker that processes it). :class:`ParquetReader` streams Parquet files in slices of ``num_rows``
rows: a work item names a file and a row range, and the worker reads only the row groups that
overlap it (LitData writes each slice to a cache folder first; aiolit needs no copy).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

__all__ = ["BaseReader", "ParquetReader", "ParquetSlice"]


class BaseReader(ABC):
    """How ``optimize``/``map`` split the inputs into work items and read each one for ``fn``."""

    def get_num_nodes(self) -> int:
        return int(os.getenv("DATA_OPTIMIZER_NUM_NODES", 1))

    def get_node_rank(self) -> int:
        return int(os.getenv("DATA_OPTIMIZER_NODE_RANK", 0))

    @abstractmethod
    def remap_items(self, items: Any, num_workers: int) -> list[Any]:
        """Turn the user's inputs into the work items distributed to the workers."""

    @abstractmethod
    def read(self, item: Any) -> Any:
        """Read the data of one work item (what ``fn`` receives)."""


@dataclass(frozen=True)
class ParquetSlice:
    """Rows ``[start, end)`` of the Parquet file ``path`` (a :class:`ParquetReader` work item)."""

    path: str
    start: int
    end: int


class ParquetReader(BaseReader):
    """Stream Parquet files to ``fn`` in slices of ``num_rows`` rows.

    Parameters
    ----------
    cache_folder
        Accepted for LitData compatibility (LitData writes each slice there); aiolit reads the
        slices straight from the files and writes nothing.
    num_rows
        Rows per slice (the last slice of a file may be shorter).
    to_pandas
        ``fn`` gets a ``pandas.DataFrame`` (needs pandas). Otherwise a ``pyarrow.Table`` when
        ``columns`` or ``filters`` is set, else a ``pyarrow.parquet.ParquetFile`` of the slice
        (as LitData).
    columns
        Read only these columns.
    filters
        A pyarrow filter expression or DNF list (``[("label", "=", 1)]``), applied to each slice.
    """

    def __init__(
        self,
        cache_folder: str | None = None,
        num_rows: int = 65536,
        to_pandas: bool = True,
        columns: list[str] | None = None,
        filters: Any | None = None,
    ) -> None:
        if isinstance(num_rows, bool) or not isinstance(num_rows, int) or num_rows <= 0:
            raise ValueError(f"ParquetReader(num_rows=...) must be a positive int, got {num_rows!r}")
        self.cache_folder = cache_folder
        self.num_rows = num_rows
        self.to_pandas = to_pandas
        self.columns = columns
        self.filters = filters

    def remap_items(self, filepaths: Any, num_workers: int) -> list[Any]:
        """One :class:`ParquetSlice` per ``num_rows`` rows of each file, in file then row order.

        Raises
        ------
        ValueError
            An input is not a path to a readable Parquet file.
        """
        import pyarrow.parquet as pq

        slices: list[Any] = []
        for path in filepaths:
            if not isinstance(path, str | os.PathLike):
                raise ValueError(f"ParquetReader inputs must be Parquet file paths, got {path!r}")
            try:
                with pq.ParquetFile(os.fspath(path)) as parquet_file:
                    num_rows = int(parquet_file.metadata.num_rows)
            except (OSError, ValueError) as exc:
                raise ValueError(f"ParquetReader: cannot read {path} as Parquet: {exc}") from exc
            slices.extend(
                ParquetSlice(os.fspath(path), start, min(start + self.num_rows, num_rows))
                for start in range(0, num_rows, self.num_rows)
            )
        return slices

    def _filter(self) -> Any:
        import pyarrow.parquet as pq

        if isinstance(self.filters, list):
            return pq.filters_to_expression(self.filters)
        return self.filters

    def _read_slice(self, item: ParquetSlice) -> Any:
        import pyarrow.parquet as pq

        with pq.ParquetFile(item.path) as parquet_file:
            metadata = parquet_file.metadata
            groups: list[int] = []
            first_row = offset = 0
            for group in range(metadata.num_row_groups):
                rows = int(metadata.row_group(group).num_rows)
                if offset + rows > item.start and offset < item.end:
                    if not groups:
                        first_row = offset
                    groups.append(group)
                offset += rows
                if offset >= item.end:
                    break
            table = parquet_file.read_row_groups(groups, columns=self.columns)
        return table.slice(item.start - first_row, item.end - item.start)

    def read(self, item: Any) -> Any:
        """The rows of a :class:`ParquetSlice` (or of a whole file, for a path)."""
        import pyarrow.parquet as pq

        if isinstance(item, ParquetSlice):
            table = self._read_slice(item)
        else:
            table = pq.read_table(os.fspath(item), columns=self.columns)
        if self.filters is not None:
            table = table.filter(self._filter())
        if self.to_pandas:
            try:
                return table.to_pandas()
            except ModuleNotFoundError as exc:
                raise ModuleNotFoundError(
                    "ParquetReader(to_pandas=True) needs pandas: pip install pandas, or pass to_pandas=False"
                ) from exc
        if self.columns is not None or self.filters is not None:
            return table
        import io

        sink = io.BytesIO()
        pq.write_table(table, sink)
        return pq.ParquetFile(io.BytesIO(sink.getvalue()))


def _keep_signature(wrapper: Any, fn: Any) -> None:
    # map() passes is_last= when fn takes it: the wrapper must show fn's parameters
    import inspect

    try:
        wrapper.__signature__ = inspect.signature(fn)
    except (TypeError, ValueError):
        pass


class _ReadThen:
    """``fn(reader.read(item))`` (picklable: travels to the workers with the task)."""

    def __init__(self, reader: BaseReader, fn: Any) -> None:
        self.reader = reader
        self.fn = fn
        _keep_signature(self, fn)

    def __call__(self, item: Any, *args: Any, **kwargs: Any) -> Any:
        return self.fn(self.reader.read(item), *args, **kwargs)


def apply_reader(
    fn: Any, inputs: Any, reader: Any, num_workers: int, name: str, weights: Any
) -> tuple[Any, Any]:
    """Return ``(fn, work items)`` for ``reader`` (or the arguments unchanged when it is None).

    Raises
    ------
    ValueError
        ``reader`` is not a :class:`BaseReader`, or comes with ``weights`` (as in LitData).
    """
    if reader is None:
        return fn, inputs
    if not isinstance(reader, BaseReader):
        raise ValueError(f"{name}(reader=...) must be a BaseReader (e.g. ParquetReader()), got {reader!r}")
    if weights is not None:
        raise ValueError(f"{name}(): pass either reader= or weights=, not both")
    if inputs is None:
        raise ValueError(f"{name}(reader=...) needs `inputs`")
    return _ReadThen(reader, fn), list(reader.remap_items(inputs, num_workers))
