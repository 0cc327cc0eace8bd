"""Byte sizes as users write them (``"64MB"``, ``"100GB"``, ``2**26``) and as aiolit prints them."""

from __future__ import annotations

import math
import re

__all__ = ["human_bytes", "parse_size"]

# Decimal units, as LitData parses chunk_bytes and max_cache_size; binary ones for convenience.
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9}
_UNITS.update({"t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]*)\s*$")


def parse_size(
    value: int | float | str, *, name: str, positive: bool = False, allow_float: bool = True
) -> int:
    """Convert ``"100GB"``/``"512MiB"``/``10**9`` to bytes.

    Raises
    ------
    ValueError
        For a negative (or, with ``positive``, zero) size, an unknown unit or a non-number; the
        message names ``name``.
    """
    size: int | None = None
    if isinstance(value, bool):
        size = None
    elif isinstance(value, int) or (allow_float and isinstance(value, float) and math.isfinite(value)):
        size = int(value) if value >= 0 else None
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match and match.group(2).lower() in _UNITS:
            size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size is None or (positive and size == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be a {kind} size such as 64_000_000 or '64MB', got {value!r}")
    return size


def human_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover
