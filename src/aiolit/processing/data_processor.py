"""LitData's import path for the queue sentinel: ``from litdata.processing.data_processor import ALL_DONE``."""

from __future__ import annotations

from aiolit.processing._sources import ALL_DONE

__all__ = ["ALL_DONE"]
