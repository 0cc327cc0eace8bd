"""Compression and encryption of chunks and samples (LitData's zstd and Fernet layouts).

* Whole-file zstd: ``chunk-R-I.{compression}.bin`` is one zstd frame of the plain chunk.
* Fernet: PBKDF2-HMAC-SHA256 (480 000 iterations, 16-byte salt) derives the key from a password;
  the key file LitData saves is ``{"algorithm": "fernet", "level": ..., "salt": base64url}``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
from typing import Any, Literal

from aiolit.errors import CorruptChunkError, EncryptionError, FormatError

__all__ = [
    "ZSTD_MAGIC",
    "Encryption",
    "FernetEncryption",
    "compress_file",
    "compression_level_of",
    "decompress_file",
    "plain_filename",
    "zstd_compress",
    "zstd_decompress",
]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DEFAULT_ZSTD_LEVEL = 4  # LitData's "zstd" without ":N"
_COMPRESSION_RE = re.compile(r"^zstd(?::(\d{1,2}))?$")
_PBKDF2_ITERATIONS = 480_000


def compression_level_of(compression: str) -> int:
    """The zstd level of a compression string (``"zstd"`` = 4, ``"zstd:N"`` = N)."""
    match = _COMPRESSION_RE.match(compression) if isinstance(compression, str) else None
    if match is None or not 1 <= int(match.group(1) or _DEFAULT_ZSTD_LEVEL) <= 22:
        raise FormatError(f"unsupported compression {compression!r}: use 'zstd' or 'zstd:1' ... 'zstd:22'")
    return int(match.group(1) or _DEFAULT_ZSTD_LEVEL)


def zstd_compress(data: bytes | memoryview, level: int = _DEFAULT_ZSTD_LEVEL) -> bytes:
    """One zstd frame with the content size recorded (as LitData writes it)."""
    import zstandard

    return bytes(zstandard.ZstdCompressor(level=level, write_content_size=True).compress(data))


def zstd_decompress(
    data: bytes | memoryview,
    *,
    what: str = "data",
    expected_size: int | None = None,
    max_size: int | None = None,
) -> bytes:
    """Decompress exactly one complete zstd frame; errors (truncation too) name ``what``.

    ``expected_size`` (exact) or ``max_size`` (a ceiling) bound the output before any of it is
    produced: a frame that declares more is rejected from its header, one without a declared
    size is decompressed in bounded pieces and abandoned past the limit. Either way the error is
    :class:`CorruptChunkError` and no more than the limit (plus one zstd block) is allocated.
    """
    import zstandard

    limit = expected_size if expected_size is not None else max_size
    if limit is not None:
        try:
            declared = zstandard.frame_content_size(data)
        except zstandard.ZstdError as exc:
            raise CorruptChunkError(f"{what} is not valid zstd data: {exc}") from None
        if declared > limit:
            raise CorruptChunkError(
                f"{what} declares {declared} bytes once decompressed, more than the {limit} its index allows"
            )
        if declared < 0:  # no size in the frame header: count as it inflates
            out = _zstd_capped(data, limit, what)
            if expected_size is not None and len(out) != expected_size:
                raise CorruptChunkError(f"{what} decompressed to {len(out)} bytes, expected {expected_size}")
            return out
    try:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = dobj.decompress(data)  # takes any buffer: no copy of the input
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(f"{what} is not valid zstd data: {exc}") from None
    if not dobj.eof:
        raise CorruptChunkError(f"{what} is not valid zstd data: the zstd frame is truncated")
    if dobj.unused_data:
        raise CorruptChunkError(f"{what} has {len(dobj.unused_data)} bytes after its zstd frame")
    if expected_size is not None and len(out) != expected_size:
        raise CorruptChunkError(f"{what} decompressed to {len(out)} bytes, expected {expected_size}")
    return out


def _zstd_capped(data: bytes | memoryview, limit: int, what: str) -> bytes:
    # read_to_iter yields at most write_size bytes per step, so a bomb stops at limit + 1 MiB.
    import zstandard

    pieces: list[bytes] = []
    total = 0
    try:
        for piece in zstandard.ZstdDecompressor().read_to_iter(data, write_size=1 << 20):
            total += len(piece)
            if total > limit:
                raise CorruptChunkError(
                    f"{what} inflates past the {limit} bytes its index allows; it is not the chunk listed"
                )
            pieces.append(piece)
    except zstandard.ZstdError as exc:
        raise CorruptChunkError(f"{what} is not valid zstd data: {exc}") from None
    return b"".join(pieces)


def plain_filename(filename: str) -> str:
    """The name of a chunk after whole-file decompression: ``x.zstd.bin`` -> ``x.bin``."""
    stem, dot, ext = filename.rpartition(".")
    if not dot or ext != "bin":
        return filename
    base, dot2, infix = stem.rpartition(".")
    if dot2 and _COMPRESSION_RE.match(infix):
        return f"{base}.bin"
    return filename


def compress_file(data: bytes | memoryview, compression: str) -> bytes:
    """Whole-file compression of a finished chunk."""
    return zstd_compress(data, compression_level_of(compression))


def decompress_file(data: bytes | memoryview, filename: str, *, expected_size: int | None = None) -> bytes:
    """Undo whole-file compression of ``filename``'s bytes (a plain name is returned as is).

    ``expected_size`` (the index's ``chunk_bytes``) caps the output: a chunk that inflates to
    anything else is :class:`CorruptChunkError`, found without inflating past it.
    """
    if plain_filename(filename) == filename:
        return bytes(data)
    if bytes(data[:4]) != ZSTD_MAGIC:
        raise CorruptChunkError(f"{filename} should be a zstd file but does not start with the zstd magic")
    return zstd_decompress(data, what=filename, expected_size=expected_size)


class Encryption:
    """Base class of chunk/sample encryption (LitData's interface).

    Subclasses set ``algorithm`` and ``level`` and implement :meth:`encrypt` / :meth:`decrypt`.
    """

    algorithm: str = ""
    level: str = "sample"

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt one sample payload or one whole chunk."""
        raise NotImplementedError

    def decrypt(self, data: bytes) -> bytes:
        """Decrypt what :meth:`encrypt` produced."""
        raise NotImplementedError

    def config(self) -> dict[str, str]:
        """The ``config["encryption"]`` entry of an index."""
        return {"algorithm": self.algorithm, "level": self.level}


@functools.lru_cache(maxsize=32)
def _derive_key(password: str, salt: bytes) -> bytes:
    # 480k rounds take ~0.5 s: cached so loading a key file twice costs nothing
    raw = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, _PBKDF2_ITERATIONS, 32)
    return base64.urlsafe_b64encode(raw)


class FernetEncryption(Encryption):
    """Fernet (AES-128-CBC + HMAC) with a password-derived key, as LitData's ``FernetEncryption``.

    Parameters
    ----------
    password
        The password; the key is PBKDF2-HMAC-SHA256(password, salt, 480 000 rounds).
    level
        ``"sample"`` encrypts each item payload, ``"chunk"`` each whole chunk file.
    salt
        16 random bytes by default; :meth:`load` restores a saved one.
    """

    algorithm = "fernet"

    def __init__(
        self, password: str, level: Literal["sample", "chunk"] = "sample", *, salt: bytes | None = None
    ) -> None:
        if level not in ("sample", "chunk"):
            raise EncryptionError(f"encryption level must be 'sample' or 'chunk', got {level!r}")
        if not isinstance(password, str) or not password:
            raise EncryptionError("FernetEncryption needs a non-empty password string")
        from cryptography.fernet import Fernet

        self.level = level
        self.salt = os.urandom(16) if salt is None else salt
        self._password = password
        self._fernet = Fernet(_derive_key(password, self.salt))

    @property
    def key(self) -> bytes:
        """The derived Fernet key (base64url)."""
        return _derive_key(self._password, self.salt)

    def encrypt(self, data: bytes) -> bytes:
        return bytes(self._fernet.encrypt(bytes(data)))

    def decrypt(self, data: bytes) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return bytes(self._fernet.decrypt(bytes(data)))
        except InvalidToken:
            raise EncryptionError(
                "Fernet decryption failed: wrong password or key file, or the data is not encrypted with it"
            ) from None

    def state_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "level": self.level, "salt": _b64(self.salt)}

    def save(self, file_path: str) -> None:
        """Write the key file LitData's ``FernetEncryption.load`` reads (no password in it)."""
        with open(file_path, "w") as f:
            json.dump(self.state_dict(), f)

    @classmethod
    def load(cls, file_path: str, password: str) -> FernetEncryption:
        """Restore an encryption saved by :meth:`save` (or by LitData)."""
        try:
            with open(file_path) as f:
                data = json.load(f)
            if data.get("algorithm", "fernet") != "fernet":
                raise EncryptionError(f"{file_path} is a {data.get('algorithm')!r} key file, not fernet")
            salt = base64.urlsafe_b64decode(data["salt"])
            level = data["level"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            if isinstance(exc, EncryptionError):
                raise
            raise EncryptionError(f"cannot read the Fernet key file {file_path}: {exc!r}") from None
        return cls(password, level, salt=salt)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")
