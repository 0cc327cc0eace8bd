# cython: language_level=3
"""Deterministic seeded permutations (shuffles of chunk lists and of items inside a chunk).

The generator is splitmix64 (Steele, Lea & Flood 2014; passes BigCrush) keyed from
``(seed, epoch, stream)``; bounded draws use Lemire's multiply-shift with rejection, so there is no
modulo bias; the shuffle is the classic Fisher-Yates from the top. Everything is defined on
unsigned 64-bit integers, so the output is identical on every platform and compiler.

This is deliberately NOT numpy's ``RandomState([seed, epoch]).permutation`` order: aiolit only
promises determinism, not LitData's exact shuffle order. Seeding ``RandomState`` with a list costs
~20 us per call (its init_by_array runs a 624-word key schedule), which is most of the price of
shuffling a 256-item chunk interval; here the key schedule is three mixes.
"""

from libc.stdint cimport int64_t, uint32_t, uint64_t

cimport numpy as cnp

import operator

import numpy as np

cnp.import_array()

cdef uint64_t _GOLDEN = 0x9E3779B97F4A7C15ULL
_MASK64 = (1 << 64) - 1


cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    # splitmix64's finalizer: a bijection on 64-bit words with full avalanche.
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t _next(uint64_t* state) noexcept nogil:
    state[0] += _GOLDEN
    return _mix64(state[0])


cdef inline uint64_t _bounded(uint64_t* state, uint64_t bound) noexcept nogil:
    """Uniform integer in [0, bound), bound >= 1."""
    cdef uint64_t m, x, threshold
    cdef uint32_t low, t, r
    if bound <= 0xFFFFFFFFULL:
        # Lemire (2019), 32-bit variant: one multiply, a division only on the rare rejection path.
        r = <uint32_t>(_next(state) >> 32)
        m = <uint64_t>r * bound
        low = <uint32_t>m
        if low < bound:
            t = <uint32_t>((0x100000000ULL - bound) % bound)
            while low < t:
                r = <uint32_t>(_next(state) >> 32)
                m = <uint64_t>r * bound
                low = <uint32_t>m
        return m >> 32
    # Arrays of more than 4G elements: plain rejection sampling, still unbiased.
    threshold = (0 - bound) % bound
    x = _next(state)
    while x < threshold:
        x = _next(state)
    return x % bound


cdef inline uint64_t _u64(object value) except? 0:
    """``value`` modulo 2**64 (two's complement for negatives); floats are a TypeError."""
    if type(value) is not int:
        value = operator.index(value)
    return <uint64_t>(value & _MASK64)


cdef uint64_t _key(object seed, object epoch, object stream) except? 0:
    """The generator's starting state for (seed, epoch, stream); ints of any size, reduced mod 2**64."""
    cdef uint64_t s = _u64(seed)
    cdef uint64_t e = _u64(epoch)
    cdef uint64_t k = _u64(stream)
    # Chained bijections: for fixed (seed, epoch) distinct streams give distinct states, etc.
    return _mix64(_mix64(_mix64(s + _GOLDEN) ^ (e + 2 * _GOLDEN)) ^ (k + 3 * _GOLDEN))


cdef void _shuffle(int64_t* a, Py_ssize_t n, uint64_t state) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef int64_t tmp
    i = n - 1
    while i > 0:
        j = <Py_ssize_t>_bounded(&state, <uint64_t>(i + 1))
        tmp = a[i]
        a[i] = a[j]
        a[j] = tmp
        i -= 1


def permutation(Py_ssize_t n, seed, epoch, stream=0):
    """A deterministic permutation of ``range(n)`` for ``(seed, epoch, stream)``.

    Parameters
    ----------
    n
        Length (>= 0).
    seed, epoch, stream
        Python ints of any size (reduced modulo 2**64, so negative seeds are fine). ``stream``
        separates independent shuffles of one epoch (e.g. the global chunk index).

    Returns
    -------
    numpy.ndarray
        int64 array; equal to ``permute_within(np.arange(n), seed, epoch, stream)``. The same on
        every platform, but not numpy's ``RandomState`` order.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cdef uint64_t state = _key(seed, epoch, stream)
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
    cdef int64_t* a = <int64_t*>cnp.PyArray_DATA(out)
    cdef Py_ssize_t i
    with nogil:
        for i in range(n):
            a[i] = i
        _shuffle(a, n, state)
    return out


def permute_within(indices, seed, epoch, stream=0):
    """A new int64 array holding ``indices`` shuffled deterministically for ``(seed, epoch, stream)``.

    ``indices`` is any 1-D integer array-like (not modified). Shuffling the same length with the
    same key moves positions identically, whatever the values.
    """
    arr = np.asarray(indices)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {arr.shape}")
    cdef cnp.ndarray out = np.array(arr, dtype=np.int64, copy=True, order="C")
    cdef uint64_t state = _key(seed, epoch, stream)
    with nogil:
        _shuffle(<int64_t*>cnp.PyArray_DATA(out), cnp.PyArray_DIMS(out)[0], state)
    return out
