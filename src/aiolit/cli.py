"""The ``aiolit`` command: inspect datasets and run the demo.

``aiolit inspect PATH_OR_URL``   summary of an optimized dataset's index.json
``aiolit demo [--dir DIR]``      optimize a small dataset into a local folder and stream it back
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from aiolit._units import human_bytes
from aiolit.errors import AiolitError

__all__ = ["main"]


def summarize(index: Any) -> dict[str, Any]:
    """Return the summary ``aiolit inspect`` prints, as a dict (also used by ``--json``)."""
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


async def _read_index(url: str, storage_options: dict[str, Any] | None) -> Any:
    from aiolit.format import Index
    from aiolit.stores import open_store

    store = open_store(url, storage_options=storage_options)
    try:
        data = await store.get("index.json")
    finally:
        await store.aclose()
    return Index.from_json(data, source=f"{url.rstrip('/')}/index.json")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from aiolit import _loop

    options = json.loads(args.storage_options) if args.storage_options else None
    index = _loop.run(_read_index(args.path, options))
    summary = summarize(index)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    enc = summary["encryption"]
    lines = [
        f"dataset      {args.path}",
        f"chunks       {summary['chunks']}",
        f"samples      {summary['samples']}",
        f"bytes        {summary['bytes']} ({human_bytes(summary['bytes'])}, before compression)",
        f"item_loader  {summary['item_loader']}",
        f"data_format  {summary['data_format']}",
        f"compression  {summary['compression'] or 'none'}"
        + (f" ({summary['compression_level']})" if summary["compression_level"] else ""),
        f"encryption   {enc['algorithm'] + ' / ' + enc['level'] if enc else 'none'}",
    ]
    if summary["tokens"] is not None:
        lines.insert(4, f"tokens       {summary['tokens']}")
    print("\n".join(lines))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from aiolit.demo import run_demo

    return run_demo(args.dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiolit", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "inspect", help="summarize an optimized dataset (local path or s3://, gs://, azure:// URL)"
    )
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--storage-options", help="JSON object of storage options (e.g. endpoint_url)")
    p.set_defaults(func=_cmd_inspect)
    d = sub.add_parser("demo", help="optimize a small dataset into a local folder and stream it back")
    d.add_argument("--dir", default=None, help="folder to write into (default: a fresh temp folder)")
    d.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiolit`` console script and ``python -m aiolit``."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (AiolitError, FileNotFoundError, ValueError) as exc:
        print(f"aiolit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return result
