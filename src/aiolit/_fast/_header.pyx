# cython: language_level=3
"""Chunk header parsing: validate a LitData offsets table and view it as a zero-copy uint32 array.

A classic chunk is ``u32 N | u32 offsets[N+1] | payloads`` (all little-endian, offsets absolute).
``parse_header`` runs once per chunk and is on the critical path of every random read, so the
per-call overhead (not the loop) is what matters: a numpy version needs ``frombuffer`` + ``diff`` +
several reductions (~10 small temporaries); here it is one pass over the raw bytes plus one array
header pointing into the caller's buffer.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport int64_t, uint32_t, uint64_t

cimport numpy as cnp

import sys

import numpy as np

from aiolit.errors import CorruptChunkError

cnp.import_array()

# The offsets are little-endian on disk; on a little-endian host we can point a native uint32 array
# straight at them, otherwise we fall back to np.frombuffer with an explicit '<u4' dtype.
cdef bint _HOST_LE = sys.byteorder == "little"
_U4LE = np.dtype("<u4")


cdef extern from *:
    """
    #include <string.h>
    /* Unaligned-safe little-endian u32 load: memcpy compiles to one plain load (and lets the
       monotonicity loop vectorise); big-endian hosts byte-swap. */
    static inline uint32_t aiolit_load_u32le(const unsigned char *p) {
        uint32_t v;
        memcpy(&v, p, 4);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        return v;
    }
    """
    uint32_t _load_u32le "aiolit_load_u32le"(const unsigned char* p) noexcept nogil


cdef inline int64_t _first_decrease(const unsigned char* p, int64_t count) noexcept nogil:
    """Index i of the first offsets[i] > offsets[i+1], or -1 if the table is non-decreasing."""
    cdef int64_t i, j, stop
    cdef uint32_t bad
    # Blocks of 512 comparisons with no early exit inside (so the compiler can vectorise them);
    # only a block that contains a decrease is rescanned to name the exact index.
    i = 1
    while i < count:
        stop = i + 512
        if stop > count:
            stop = count
        bad = 0
        for j in range(i, stop):
            bad |= _load_u32le(p + 4 * j) < _load_u32le(p + 4 * (j - 1))
        if bad:
            for j in range(i, stop):
                if _load_u32le(p + 4 * j) < _load_u32le(p + 4 * (j - 1)):
                    return j - 1
        i = stop
    return -1


cdef object _view_u32(object buf, const unsigned char* data, bint readonly, int64_t offset, int64_t count):
    """A uint32 array of ``count`` values at ``data + offset`` that keeps ``buf`` alive."""
    cdef cnp.npy_intp dims[1]
    cdef cnp.ndarray arr
    if not _HOST_LE:
        return np.frombuffer(buf, dtype=_U4LE, count=count, offset=offset)
    dims[0] = <cnp.npy_intp>count
    arr = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_UINT32, <void*>(data + offset))
    if readonly:
        cnp.PyArray_CLEARFLAGS(arr, cnp.NPY_ARRAY_WRITEABLE)
    # bytes are immutable and never move: reference them directly. Anything else (mmap, bytearray,
    # numpy, memoryview) is held through a memoryview export, which stops it from being closed or
    # resized while the offsets array is alive (the same guarantee np.frombuffer gives).
    if type(buf) is bytes:
        cnp.set_array_base(arr, buf)
    else:
        cnp.set_array_base(arr, memoryview(buf))
    return arr


cdef object _parse(object buf, int64_t table_at, int64_t n_items, int64_t first, int64_t limit,
                   int64_t expected_items, bint classic):
    """Shared body of parse_header / parse_offsets (``classic`` reads N from the buffer)."""
    cdef Py_buffer view
    cdef const unsigned char* data
    cdef int64_t size, header_end, count, bad, end
    cdef uint32_t o0
    cdef bint readonly
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        data = <const unsigned char*>view.buf
        size = view.len
        readonly = view.readonly
        if classic:
            if size < 4:
                raise CorruptChunkError(
                    f"chunk is {size} bytes, too short for its 4-byte item count"
                )
            n_items = _load_u32le(data)
            if expected_items >= 0 and n_items != expected_items:
                raise CorruptChunkError(
                    f"chunk header says {n_items} items but the index expects {expected_items}"
                )
            header_end = 4 * (n_items + 2)
            if header_end > size:
                raise CorruptChunkError(
                    f"chunk header for {n_items} items needs {header_end} bytes "
                    f"but the chunk has only {size} bytes"
                )
            first = header_end
            limit = size
        else:
            if table_at < 0 or n_items < 0:
                raise ValueError(f"offset ({table_at}) and n_items ({n_items}) must be >= 0")
            # Guard first so the int64 arithmetic below cannot overflow on absurd arguments.
            if table_at > size or n_items > size:
                header_end = size + 1
            else:
                header_end = table_at + 4 * (n_items + 1)
            if header_end > size:
                raise CorruptChunkError(
                    f"offsets table of {n_items} items at byte {table_at} ends at byte "
                    f"{int(table_at) + 4 * (int(n_items) + 1)} but the buffer has only {size} bytes"
                )
        count = n_items + 1
        o0 = _load_u32le(data + table_at)
        if o0 != first:
            if classic:
                raise CorruptChunkError(
                    f"offsets[0] = {o0} but the header of {n_items} items ends at byte {first}"
                )
            raise CorruptChunkError(f"offsets[0] = {o0} but it must be {first}")
        with nogil:
            bad = _first_decrease(data + table_at, count)
        if bad >= 0:
            raise CorruptChunkError(
                f"offsets decrease at index {bad}: offsets[{bad}] = "
                f"{_load_u32le(data + table_at + 4 * bad)} > offsets[{bad + 1}] = "
                f"{_load_u32le(data + table_at + 4 * (bad + 1))}"
            )
        end = _load_u32le(data + table_at + 4 * n_items)
        if limit >= 0 and end > limit:
            if classic:
                raise CorruptChunkError(
                    f"chunk truncated: offsets[{n_items}] = {end} (end of the last item) "
                    f"but the chunk has only {size} bytes"
                )
            raise CorruptChunkError(
                f"offsets[{n_items}] = {end} exceeds the limit of {limit} bytes"
            )
        return _view_u32(buf, data, readonly, table_at, count)
    finally:
        PyBuffer_Release(&view)


def parse_header(buf, Py_ssize_t expected_items=-1):
    """Validate a classic chunk header and return its offsets as a zero-copy uint32 array.

    Parameters
    ----------
    buf
        Any C-contiguous buffer (bytes, bytearray, memoryview, mmap, numpy array) holding the chunk
        from byte 0: ``u32 N``, ``u32 offsets[N+1]`` (absolute, little-endian), then the payloads.
        Bytes after ``offsets[N]`` are allowed (LitData's Arrow footer lives there).
    expected_items
        If >= 0, the item count the index promises for this chunk.

    Returns
    -------
    numpy.ndarray
        ``uint32`` array of the ``N+1`` offsets, viewing ``buf`` (read-only if ``buf`` is). The
        array keeps ``buf`` alive (and, for mmap/bytearray, stops it from closing or resizing).

    Raises
    ------
    CorruptChunkError
        Buffer shorter than 4 bytes, header longer than the buffer, N != ``expected_items``,
        ``offsets[0]`` != header size, offsets decreasing (the message names the index), or
        ``offsets[N]`` beyond the buffer (truncated chunk).
    """
    return _parse(buf, 4, 0, 0, -1, expected_items, True)


def parse_offsets(buf, Py_ssize_t offset, Py_ssize_t n_items, Py_ssize_t first=0,
                  Py_ssize_t limit=-1):
    """Validate and view ``n_items + 1`` little-endian u32 offsets stored at byte ``offset``.

    For layouts whose offsets are not the classic absolute ones (e.g. LDFZ01's offsets relative to
    the uncompressed payload). Checks ``offsets[0] == first``, that the table is non-decreasing and,
    if ``limit >= 0``, that ``offsets[n_items] <= limit``. Returns a zero-copy uint32 view like
    :func:`parse_header`; raises :class:`CorruptChunkError` (``ValueError`` for negative arguments).
    """
    return _parse(buf, offset, n_items, first, limit, -1, False)
