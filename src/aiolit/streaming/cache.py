"""``from aiolit.streaming.cache import Dir`` — LitData's import path for :class:`Dir`."""

from __future__ import annotations

from aiolit.streaming._resolve import Dir

__all__ = ["Dir"]
