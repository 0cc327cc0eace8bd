"""The aiolit command: inspect datasets, manage the chunk cache, run the demo.

aiolit inspect PATH_OR_URL      summary of an optimized dataset's index.json
aiolit cache path               where the chunk cache lives
aiolit cache ls                 the cached datasets, their versions and sizes
aiolit cache clear [URL]        delete the cache of one dataset, or all of it
aiolit demo [--dir DIR]         optimize a small dataset into a local folder and stream it back
aiolit --version
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiolit._units import human_bytes
from aiolit.errors import AiolitError
from aiolit.format._summary import summarize

__all__ = ["main", "summarize"]


async def _read_index(url: str, storage_options: dict[str, Any] | None) -> Any:
    from aiolit.errors import NotOptimizedError, ObjectNotFoundError
    from aiolit.format import Index
    from aiolit.format._index import not_optimized_message
    from aiolit.stores import open_store

    if "://" not in url and not os.path.isdir(url):
        raise FileNotFoundError(f"no such directory: {url}")
    store = open_store(url, storage_options=storage_options)
    try:
        data = await store.get("index.json")
    except ObjectNotFoundError:
        raise NotOptimizedError(not_optimized_message(url)) from None
    finally:
        await store.aclose()
    return Index.from_json(data, source=f"{url.rstrip('/')}/index.json")


def _storage_options(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--storage-options is not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--storage-options must be a JSON object, got {type(value).__name__}: {text!r}")
    return value


def _cmd_inspect(args: argparse.Namespace) -> int:
    from aiolit import _loop

    options = _storage_options(args.storage_options)
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


def _cache_root(args: argparse.Namespace) -> Path:
    from aiolit._paths import cache_root

    return cache_root(args.cache_dir)


def _cmd_cache_path(args: argparse.Namespace) -> int:
    print(_cache_root(args))
    return 0


def _cmd_cache_ls(args: argparse.Namespace) -> int:
    from aiolit.streaming._resolve import cached_datasets

    root = _cache_root(args)
    entries = cached_datasets(root)
    if args.json:
        print(json.dumps({"root": str(root), "datasets": entries}, indent=2))
        return 0
    if not entries:
        print(f"{root}: empty")
        return 0
    print(f"{root}")
    width = max(len(e["url"]) for e in entries)
    for e in entries:
        versions = ", ".join(v["version"] for v in e["versions"]) or "-"
        print(f"  {e['url']:{width}}  {human_bytes(e['bytes']):>10}  versions: {versions}")
    total = sum(e["bytes"] for e in entries)
    print(f"  {len(entries)} dataset(s), {human_bytes(total)}")
    return 0


def _cmd_cache_clear(args: argparse.Namespace) -> int:
    from aiolit.streaming._resolve import clear_cache

    root = _cache_root(args)
    removed, freed = clear_cache(root, args.url)
    if args.url and not removed:
        raise FileNotFoundError(f"{args.url} has no cache under {root}")
    what = args.url or f"{removed} dataset(s)"
    print(f"cleared {what}: {human_bytes(freed)} freed ({root})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from aiolit.demo import run_demo

    return run_demo(args.dir)


def build_parser() -> argparse.ArgumentParser:
    from aiolit import __version__

    parser = argparse.ArgumentParser(
        prog="aiolit",
        description="aiolit: LitData-compatible streaming datasets. Inspect datasets, manage the "
        "chunk cache, run the demo.",
    )
    parser.add_argument("--version", action="version", version=f"aiolit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "inspect",
        help="summarize an optimized dataset (local path or s3://, gs://, azure://, hf:// URL)",
        description="Print the summary of an optimized dataset's index.json: chunks, samples, bytes, "
        "format, compression and encryption.",
    )
    p.add_argument("path", help="the dataset: a local folder or a URL")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--storage-options",
        metavar="JSON",
        help='storage options as a JSON object, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'',
    )
    p.set_defaults(func=_cmd_inspect)
    c = sub.add_parser(
        "cache",
        help="show or clear the chunk cache of remote datasets",
        description="The chunk cache of remote datasets: $AIOLIT_CACHE_DIR, else ~/.cache/aiolit/chunks "
        "(or --cache-dir, as passed to StreamingDataset(cache_dir=...)).",
    )
    csub = c.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("path", _cmd_cache_path, "print the cache directory"),
        ("ls", _cmd_cache_ls, "list the cached datasets: URL, bytes, versions"),
        ("clear", _cmd_cache_clear, "delete the cache of one dataset URL, or everything"),
    ):
        a = csub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        a.add_argument("--cache-dir", default=None, help="the cache root (default: see 'aiolit cache -h')")
        if name == "ls":
            a.add_argument("--json", action="store_true", help="print the listing as JSON")
        if name == "clear":
            a.add_argument(
                "url", nargs="?", help="the dataset URL as given to StreamingDataset (default: all)"
            )
        a.set_defaults(func=func)
    d = sub.add_parser("demo", help="optimize a small dataset into a local folder and stream it back")
    d.add_argument("--dir", default=None, help="folder to write into (default: a fresh temp folder)")
    d.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiolit`` console script and ``python -m aiolit``."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except (AiolitError, OSError, ValueError) as exc:
        command = " ".join(filter(None, [args.command, getattr(args, "cache_command", None)]))
        print(f"aiolit {command}: error: {exc}", file=sys.stderr)
        return 2
    return result
