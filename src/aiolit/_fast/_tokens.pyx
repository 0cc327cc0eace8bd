# cython: language_level=3
"""Token blocks (TokensLoader): map global block ids to chunks, and gather a batch of blocks.

A token dataset is read as fixed-size blocks of ``block_size`` tokens; block ``j`` of a chunk is
tokens ``[j*B, (j+1)*B)`` of that chunk's token stream. A training step asks for 8-64 random
blocks, so what matters is the per-call cost: numpy's ``searchsorted`` + ``np.stack`` of 32
slices allocate ~35 temporary objects; here it is one loop over raw pointers and one ``memcpy``
per block into a caller-owned (possibly pinned) buffer.
"""

from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t
from libc.string cimport memcpy

cimport numpy as cnp

import numpy as np

cnp.import_array()


cdef cnp.ndarray _as_i64(object values):
    """``values`` as a 1-D contiguous int64 array; no copy (and almost no cost) if it already is one."""
    if (cnp.PyArray_Check(values) and cnp.PyArray_TYPE(<cnp.ndarray>values) == cnp.NPY_INT64
            and cnp.PyArray_NDIM(<cnp.ndarray>values) == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>values)):
        return <cnp.ndarray>values
    arr = np.asarray(values)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"expected an integer array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


cdef inline cnp.ndarray _empty_i64(Py_ssize_t n):
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    return cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)


def token_blocks_locate(block_ids, cumulative_blocks, Py_ssize_t block_size=1):
    """For each global block id, the chunk holding it and its position inside that chunk.

    Parameters
    ----------
    block_ids
        1-D int64 array of global block ids (``0 <= id < cumulative_blocks[-1]``).
    cumulative_blocks
        1-D int64 array of length ``n_chunks + 1``: ``[0, b0, b0+b1, ...]`` where ``b_c`` is the
        number of blocks of chunk ``c`` (``dim_c // block_size``). Must start at 0 and be
        non-decreasing (only the first is checked, the rest would cost O(n_chunks) per call);
        empty chunks are allowed. Each answer satisfies ``cum[c] <= id < cum[c+1]``.
    block_size
        Multiplier applied to the in-chunk position. The default 1 returns block indices; pass
        the block size in tokens to get token offsets inside the chunk's token stream.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        ``(chunk_ids, in_chunk)``, both int64 and of the same length as ``block_ids``.

    Raises
    ------
    ValueError
        A malformed ``cumulative_blocks`` or ``block_size < 1``.
    IndexError
        A block id out of range (the message names its position and the valid range).
    """
    cdef cnp.ndarray ids_arr = _as_i64(block_ids)
    cdef cnp.ndarray cum_arr = _as_i64(cumulative_blocks)
    cdef const int64_t* ids = <const int64_t*>cnp.PyArray_DATA(ids_arr)
    cdef const int64_t* cum = <const int64_t*>cnp.PyArray_DATA(cum_arr)
    cdef Py_ssize_t n = cnp.PyArray_DIMS(ids_arr)[0]
    cdef Py_ssize_t m = cnp.PyArray_DIMS(cum_arr)[0]
    cdef Py_ssize_t i, lo, hi, mid, bad = -1
    cdef int64_t b, total
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if m < 1 or cum[0] != 0:
        raise ValueError("cumulative_blocks must be [0, b0, b0+b1, ...] (length n_chunks + 1, starting at 0)")
    total = cum[m - 1]
    cdef cnp.ndarray out_chunks = _empty_i64(n)
    cdef cnp.ndarray out_pos = _empty_i64(n)
    cdef int64_t* chunks = <int64_t*>cnp.PyArray_DATA(out_chunks)
    cdef int64_t* pos = <int64_t*>cnp.PyArray_DATA(out_pos)
    with nogil:
        for i in range(n):
            b = ids[i]
            if b < 0 or b >= total:
                bad = i
                break
            # Invariant cum[lo] <= b < cum[hi] (true at the start: cum[0] = 0 <= b < total), so
            # the answer always satisfies cum[c] <= b < cum[c+1] and the position is inside chunk
            # c, even if a caller passes a non-monotonic table (which is not re-checked: O(chunks)).
            lo = 0
            hi = m - 1
            while hi - lo > 1:
                mid = (lo + hi) >> 1
                if cum[mid] <= b:
                    lo = mid
                else:
                    hi = mid
            chunks[i] = lo
            pos[i] = (b - cum[lo]) * block_size
    if bad >= 0:
        raise IndexError(f"block_ids[{bad}] = {ids[bad]} is out of range [0, {total})")
    return out_chunks, out_pos


def gather_token_blocks(cnp.ndarray tokens, order, Py_ssize_t pos, Py_ssize_t take,
                        Py_ssize_t block_size, out, Py_ssize_t row=0):
    """Copy blocks ``order[pos : pos + take]`` of one token stream into rows ``row...`` of ``out``.

    The per-batch gather of a token loader: row ``row + i`` of ``out`` receives tokens
    ``[order[pos + i] * block_size, (order[pos + i] + 1) * block_size)`` of ``tokens``, one
    ``memcpy`` each, with no temporary arrays (no slices, source lists or offset arrays).

    Parameters
    ----------
    tokens
        1-D contiguous numpy array: a chunk's token stream (any dtype; ``out`` has its item size).
    order
        1-D int64 array of block indices inside ``tokens``.
    pos, take
        The blocks to copy: ``order[pos : pos + take]``.
    block_size
        Tokens per block (and per row of ``out``).
    out
        A C-contiguous, writeable ``(rows, block_size)`` numpy array, or a contiguous CPU
        ``torch.Tensor`` of that shape (written through its ``data_ptr()``), of the tokens' item
        size.
    row
        First row of ``out`` written.

    Raises
    ------
    ValueError
        Shape, dtype or contiguity mismatches.
    IndexError
        ``order[pos : pos + take]`` or the rows outside their arrays, or a block outside ``tokens``
        (the message names it).
    """
    cdef cnp.ndarray ord_arr = _as_i64(order)
    cdef const int64_t* ks = <const int64_t*>cnp.PyArray_DATA(ord_arr)
    cdef Py_ssize_t n_order = cnp.PyArray_DIMS(ord_arr)[0]
    cdef Py_ssize_t itemsize = cnp.PyArray_ITEMSIZE(tokens)
    cdef Py_ssize_t rows, out_itemsize, i, row_bytes
    cdef int64_t length, k
    cdef char* dst
    cdef const char* src
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if cnp.PyArray_NDIM(tokens) != 1:
        raise ValueError(f"tokens must be 1-D, got {cnp.PyArray_NDIM(tokens)} dimensions")
    length = cnp.PyArray_DIMS(tokens)[0]
    if length > 1 and cnp.PyArray_STRIDES(tokens)[0] != itemsize:
        raise ValueError(f"tokens must be contiguous (stride {cnp.PyArray_STRIDES(tokens)[0]})")
    if cnp.PyArray_Check(out):
        arr = <cnp.ndarray>out
        if cnp.PyArray_NDIM(arr) != 2 or cnp.PyArray_DIMS(arr)[1] != block_size:
            raise ValueError(f"out must have shape (rows, {block_size}), got {(<object>arr).shape}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISWRITEABLE(arr):
            raise ValueError("out must be C-contiguous and writeable")
        rows = cnp.PyArray_DIMS(arr)[0]
        out_itemsize = cnp.PyArray_ITEMSIZE(arr)
        dst = <char*>cnp.PyArray_DATA(arr)
    else:
        shape = out.shape
        if len(shape) != 2 or shape[1] != block_size:
            raise ValueError(f"out must have shape (rows, {block_size}), got {tuple(shape)}")
        if not out.is_cpu or not out.is_contiguous():
            raise ValueError("out must be a contiguous CPU tensor")
        rows = shape[0]
        out_itemsize = out.element_size()
        dst = <char*><size_t>out.data_ptr()
    if out_itemsize != itemsize:
        raise ValueError(f"out has {out_itemsize}-byte items, tokens {itemsize}-byte ones")
    if take < 0 or pos < 0 or pos + take > n_order:
        raise IndexError(f"blocks [{pos}, {pos + take}) are outside an order of {n_order}")
    if row < 0 or row + take > rows:
        raise IndexError(f"rows [{row}, {row + take}) are outside out's {rows} rows")
    row_bytes = itemsize * block_size
    for i in range(take):
        k = ks[pos + i]
        if k < 0 or k >= length // block_size:
            raise IndexError(
                f"block {k} (order[{pos + i}]) is outside a token stream of {length} tokens "
                f"({length // block_size} blocks of {block_size})"
            )
    src = <const char*>cnp.PyArray_DATA(tokens)
    dst += row * row_bytes
    # The GIL stays held: a batch is a few µs of copying, less than a GIL hand-over can cost.
    for i in range(take):
        memcpy(dst + i * row_bytes, src + ks[pos + i] * row_bytes, row_bytes)
