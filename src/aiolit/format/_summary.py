"""The summary of a dataset's index that ``aiolit inspect`` prints and ``aiolit demo`` reports."""

from __future__ import annotations

from typing import Any

__all__ = ["summarize"]


def summarize(index: Any) -> dict[str, Any]:
    """Return the summary ``aiolit inspect`` prints, as a dict (also its ``--json`` output)."""
    config = index.config
    chunks = index.chunks
    encryption = config.get("encryption")
    return {
        "chunks": len(chunks),
        "samples": sum(c.chunk_size for c in chunks),
        "bytes": sum(c.chunk_bytes for c in chunks),
        "tokens": sum(c.dim or 0 for c in chunks) if any(c.dim is not None for c in chunks) else None,
        "item_loader": config.get("item_loader"),
        "data_format": config.get("data_format"),
        "chunk_size": config.get("chunk_size"),
        "chunk_bytes": config.get("chunk_bytes"),
        "compression": config.get("compression"),
        "compression_level": config.get("compression_level"),
        "encryption": encryption,
        "updated_at": index.updated_at,
    }
