"""aiolit.format: LitData's on-disk format (index.json, chunks, serializers), both ways.

No I/O here except local files written by :class:`ChunkWriter` and :func:`merge_shards`.
``import aiolit.format`` imports neither torch nor PIL: they load when a leaf needs them.
"""

from aiolit.format._chunk import ARROW_MAGIC, FRAMED_MAGIC, ChunkView, check_encryption, open_chunk
from aiolit.format._codec import (
    Encryption,
    FernetEncryption,
    RSAEncryption,
    compress_file,
    compression_level_of,
    decompress_file,
    plain_filename,
)
from aiolit.format._dtypes import token_dtype
from aiolit.format._index import (
    ChunkEntry,
    Index,
    list_shards,
    load_index,
    merge_indexes,
    merge_shards,
    natural_sort_key,
    shard_name,
    validate_chunk_filename,
    write_index_atomic,
)
from aiolit.format._pytree import TreeSpec, flatten, treespec_dumps, treespec_loads, unflatten
from aiolit.format._sample import SampleCodec
from aiolit.format._serializers import Serializer, default_serializers, resolve_serializers
from aiolit.format._tokens import TokenBlocks
from aiolit.format._writer import ChunkWriter, parse_chunk_bytes

__all__ = [
    "ARROW_MAGIC",
    "FRAMED_MAGIC",
    "ChunkEntry",
    "ChunkView",
    "ChunkWriter",
    "Encryption",
    "FernetEncryption",
    "Index",
    "RSAEncryption",
    "SampleCodec",
    "Serializer",
    "TokenBlocks",
    "TreeSpec",
    "check_encryption",
    "compress_file",
    "compression_level_of",
    "decompress_file",
    "default_serializers",
    "flatten",
    "list_shards",
    "load_index",
    "merge_indexes",
    "merge_shards",
    "natural_sort_key",
    "open_chunk",
    "parse_chunk_bytes",
    "plain_filename",
    "resolve_serializers",
    "shard_name",
    "token_dtype",
    "treespec_dumps",
    "treespec_loads",
    "unflatten",
    "validate_chunk_filename",
    "write_index_atomic",
]
