"""dtype index tables of LitData's ``numpy``/``tensor`` serializers (torch names, no torch import)."""

from __future__ import annotations

from typing import Any

import numpy as np

from aiolit.errors import FormatError

__all__ = ["NUMPY_DTYPES", "TORCH_DTYPE_NAMES", "token_dtype"]

# numpy dtype index (LitData's _NUMPY_DTYPES_MAPPING); object/bytes/str/void (14-17) are not raw data
NUMPY_DTYPES: tuple[np.dtype[Any], ...] = tuple(
    np.dtype(name)
    for name in [
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        "bool",
    ]
)
# torch dtype index (LitData's _TORCH_DTYPES_MAPPING), as torch attribute names; aliases included
TORCH_DTYPE_NAMES: tuple[str, ...] = tuple(
    [
        "float32",
        "float32",
        "float64",
        "float64",
        "complex64",
        "complex64",
        "complex128",
        "complex128",
        "float16",
        "float16",
        "bfloat16",
        "uint8",
        "int8",
        "int16",
        "int16",
        "int32",
        "int32",
        "int64",
        "int64",
        "bool",
        "uint16",
    ]
)
# the index LitData writes for each torch dtype: the last alias wins
_TORCH_WRITE_INDEX = {name: i for i, name in enumerate(TORCH_DTYPE_NAMES)}


def _numpy_index(dtype: np.dtype[Any]) -> int:
    for i, known in enumerate(NUMPY_DTYPES):
        if dtype == known and dtype.isnative:
            return i
    raise FormatError(
        f"numpy dtype {dtype} cannot be stored (LitData stores only native-order numeric and bool arrays)"
    )


def _numpy_dtype(index: int, fmt: str) -> np.dtype[Any]:
    if not 0 <= index < len(NUMPY_DTYPES):
        raise FormatError(f"unsupported numpy dtype index {index} in {fmt!r}")
    return NUMPY_DTYPES[index]


def _torch() -> Any:
    import torch  # lazy: only tensor leaves need torch

    return torch


def _torch_dtype(index: int, fmt: str) -> Any:
    if not 0 <= index < len(TORCH_DTYPE_NAMES):
        raise FormatError(f"unsupported torch dtype index {index} in {fmt!r}")
    return getattr(_torch(), TORCH_DTYPE_NAMES[index])


def _torch_index(tensor: Any) -> int:
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in _TORCH_WRITE_INDEX:
        raise FormatError(f"tensor dtype {tensor.dtype} has no LitData dtype index")
    return _TORCH_WRITE_INDEX[name]


def _suffix_index(data_format: str) -> int:
    _, _, suffix = data_format.partition(":")
    try:
        return int(suffix)
    except ValueError:
        raise FormatError(f"format {data_format!r} needs an integer dtype index after ':'") from None


def token_dtype(data_format: str) -> np.dtype[Any]:
    """The numpy dtype of a TokensLoader field (``no_header_numpy:N`` or ``no_header_tensor:N``)."""
    name, _, _ = data_format.partition(":")
    index = _suffix_index(data_format)
    if name == "no_header_numpy":
        return _numpy_dtype(index, data_format)
    if name == "no_header_tensor":
        if not 0 <= index < len(TORCH_DTYPE_NAMES) or TORCH_DTYPE_NAMES[index] == "bfloat16":
            raise FormatError(f"token format {data_format!r} has no numpy dtype")
        return np.dtype(TORCH_DTYPE_NAMES[index])
    raise FormatError(f"{data_format!r} is not a token format (no_header_numpy:N / no_header_tensor:N)")
