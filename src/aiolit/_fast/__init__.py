"""Cython hot paths (compiled by setup.py): chunk headers, token blocks, permutations.

See ``README.md`` in this directory for what each function does and why it is compiled.
"""

from aiolit._fast._header import parse_header, parse_offsets
from aiolit._fast._perm import permutation, permute_within
from aiolit._fast._tokens import gather_token_blocks, token_blocks_locate

__all__ = [
    "gather_token_blocks",
    "parse_header",
    "parse_offsets",
    "permutation",
    "permute_within",
    "token_blocks_locate",
]
