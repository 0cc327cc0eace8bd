"""The errors aiolit raises.

Every error derives from :class:`AiolitError` and from the builtin exception a caller would
naturally catch (``ValueError``, ``OSError``, ``FileNotFoundError`` ...), so ``except ValueError``
keeps working for code written against LitData. Each message says what failed and what to check.

::

    AiolitError
    ├── FormatError (ValueError)              bytes or index.json that do not follow the format
    │   ├── CorruptChunkError                 a chunk header/payload that is out of bounds or truncated
    │   ├── UnsafeFilenameError               a chunk name in an index that would escape its directory
    │   ├── PickleNotAllowedError             a `pickle` field without ``allow_pickle=True``
    │   └── NotOptimizedError (FileNotFoundError)   a folder/prefix with no index.json: not an optimized dataset
    ├── EncryptionError (ValueError)          wrong/missing key, or an index/encryption mismatch
    │   └── DecryptionError (cryptography.fernet.InvalidToken)   the key does not decrypt the data
    ├── StoreError (OSError)                  an object-store request failed
    │   ├── ObjectNotFoundError (FileNotFoundError)
    │   │   └── NoFilesFoundError (ValueError)   StreamingRawDataset: no (matching) files in input_dir
    │   ├── StorePermissionError (PermissionError)   auth / permission: not retried
    │   ├── TransientStoreError               5xx, throttling, timeouts, resets, short reads: retried
    │   ├── PreconditionFailedError           a conditional write lost: the object changed (or exists)
    │   └── RetriesExhaustedError             the retry policy gave up (names URL, range, status, attempts)
    ├── StateDictError (ValueError)           a resume state that does not match this dataset
    ├── OptimizeError (RuntimeError)          optimize/map failed: names the input and carries the traceback
    └── LoopError (RuntimeError)              misuse of the sync facade (e.g. a blocking call from inside the loop)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

__all__ = [
    "AiolitError",
    "CorruptChunkError",
    "DecryptionError",
    "EncryptionError",
    "FormatError",
    "LoopError",
    "NoFilesFoundError",
    "NotOptimizedError",
    "ObjectNotFoundError",
    "OptimizeError",
    "PickleNotAllowedError",
    "PreconditionFailedError",
    "RetriesExhaustedError",
    "StateDictError",
    "StoreError",
    "StorePermissionError",
    "TransientStoreError",
    "UnsafeFilenameError",
]


class AiolitError(Exception):
    """Base class of every error raised by aiolit."""


class FormatError(AiolitError, ValueError):
    """The on-disk data does not follow the (LitData) format."""


class CorruptChunkError(FormatError):
    """A chunk's header or payload is inconsistent (offsets out of bounds, not monotonic, truncated)."""


class UnsafeFilenameError(FormatError):
    """A file name from an index would escape the dataset or cache directory."""


class PickleNotAllowedError(FormatError):
    """A field is stored with the ``pickle`` serializer and ``allow_pickle=True`` was not given."""


class NotOptimizedError(FormatError, FileNotFoundError):
    """A folder or bucket prefix holds no ``index.json``: it is not an optimized dataset."""


class EncryptionError(AiolitError, ValueError):
    """Encrypted data without a key, a wrong key, or an encryption that does not match the index."""


if TYPE_CHECKING:
    from cryptography.fernet import InvalidToken

    class DecryptionError(EncryptionError, InvalidToken):
        """A wrong password or key file: the data does not decrypt (also a ``cryptography.fernet.InvalidToken``,
        what LitData lets through, so ``except InvalidToken`` keeps working)."""

else:

    def __getattr__(name: str) -> Any:
        # Built on first use: importing cryptography costs ~45 ms, too much for ``import aiolit``.
        if name == "DecryptionError":
            return _decryption_error()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _decryption_error() -> type[EncryptionError]:
    from cryptography.fernet import InvalidToken

    return type(
        "DecryptionError",
        (EncryptionError, InvalidToken),
        {
            "__module__": __name__,
            "__doc__": "A wrong password or key file: the data does not decrypt (also a "
            "``cryptography.fernet.InvalidToken``, what LitData lets through, so ``except InvalidToken`` "
            "keeps working).",
        },
    )


class StoreError(AiolitError, OSError):
    """An object-store request failed."""


class ObjectNotFoundError(StoreError, FileNotFoundError):
    """The object (or bucket/container) does not exist."""


class NoFilesFoundError(ObjectNotFoundError, ValueError):
    """A raw ``input_dir`` holds no (matching) files; also a ``ValueError``, what LitData raises."""


class StorePermissionError(StoreError, PermissionError):
    """Authentication or authorization failed; check credentials, endpoint and bucket policy."""


class TransientStoreError(StoreError):
    """A failure worth retrying: 5xx, throttling, timeouts, connection resets, short reads."""


class PreconditionFailedError(StoreError):
    """A conditional write was refused: the object changed since it was read, or already exists."""


class RetriesExhaustedError(StoreError):
    """The retry policy gave up; the message names the URL, byte range, status and attempt count."""


class StateDictError(AiolitError, ValueError):
    """A resume state taken from a different dataset, seed or topology."""


class OptimizeError(AiolitError, RuntimeError):
    """``optimize``/``map`` failed; the message names the input that raised and the original traceback."""


class LoopError(AiolitError, RuntimeError):
    """The sync facade was misused, e.g. a blocking call made from inside aiolit's own event loop."""
