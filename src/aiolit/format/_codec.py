"""Compression and encryption of chunks and samples (LitData's zstd and Fernet layouts).

* Whole-file zstd: ``chunk-R-I.{compression}.bin`` is one zstd frame of the plain chunk.
* Fernet: PBKDF2-HMAC-SHA256 (480 000 iterations, 16-byte salt) derives the key from a password;
  the key file LitData saves is ``{"algorithm": "fernet", "level": ..., "salt": base64url}``.
* RSA: RSA-OAEP (SHA-256) of each item (``sample``) or whole chunk (``chunk``) with a 2048-bit
  key, so at most 190 bytes each; the key file holds both PEM keys (the private one encrypted
  with the password), the password and the level, as LitData's ``RSAEncryption.save``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from aiolit.errors import CorruptChunkError, EncryptionError, FormatError

__all__ = [
    "ZSTD_MAGIC",
    "Encryption",
    "FernetEncryption",
    "RSAEncryption",
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


class _ClassOrInstance:
    """A method callable on the class (returns a new instance) or on an instance (loads into it).

    ``FernetEncryption.load(path, password)`` is LitData's form; ``enc.load(path)`` is the form
    LitData's README shows: it fills ``enc`` (password from ``enc`` unless given) and returns it.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self._func = func

    def __get__(self, obj: Any, objtype: type | None = None) -> Callable[..., Any]:
        owner = objtype if objtype is not None else type(obj)
        func = self._func

        def load(file_path: str, password: str | None = None) -> Any:
            return func(owner, obj, file_path, password)

        load.__doc__ = _ClassOrInstance.__doc__
        return load


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

        from aiolit.errors import DecryptionError

        try:
            return bytes(self._fernet.decrypt(bytes(data)))
        except InvalidToken:
            raise DecryptionError(
                "Fernet decryption failed: wrong password or key file, or the data is not encrypted with it"
            ) from None

    def state_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "level": self.level, "salt": _b64(self.salt)}

    def save(self, file_path: str) -> None:
        """Write the key file LitData's ``FernetEncryption.load`` reads (no password in it)."""
        with open(file_path, "w") as f:
            json.dump(self.state_dict(), f)

    if TYPE_CHECKING:

        @classmethod
        def load(cls, file_path: str, password: str | None = None) -> FernetEncryption:
            """See :func:`_fernet_load`."""

    else:
        load = _ClassOrInstance(
            lambda cls, into, file_path, password=None: _fernet_load(cls, into, file_path, password)
        )


def _read_key_file(file_path: str, algorithm: str) -> dict[str, Any]:
    try:
        with open(file_path) as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
    except (OSError, ValueError, TypeError) as exc:
        raise EncryptionError(f"cannot read the {algorithm} key file {file_path}: {exc!r}") from None
    found = data.get("algorithm", algorithm)
    if found != algorithm:
        raise EncryptionError(f"{file_path} is a {found!r} key file, not {algorithm}")
    return data


def _fernet_load(
    cls: type[FernetEncryption], into: FernetEncryption | None, file_path: str, password: str | None
) -> FernetEncryption:
    """Restore an encryption saved by :meth:`FernetEncryption.save` (or by LitData)."""
    data = _read_key_file(file_path, "fernet")
    try:
        salt = base64.urlsafe_b64decode(data["salt"])
        level = data["level"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EncryptionError(f"cannot read the Fernet key file {file_path}: {exc!r}") from None
    if into is None:
        if password is None:
            raise EncryptionError(
                f"FernetEncryption.load({file_path!r}) needs the password: FernetEncryption.load(path, password)"
            )
        return cls(password, level, salt=salt)
    loaded = cls(into._password if password is None else password, level, salt=salt)
    into.__dict__.update(loaded.__dict__)
    return into


_RSA_KEY_BITS = 2048
_RSA_MAX_PLAIN = _RSA_KEY_BITS // 8 - 2 * 32 - 2  # OAEP with SHA-256: 190 bytes


class RSAEncryption(Encryption):
    """RSA-OAEP (SHA-256, 2048-bit key), as LitData's ``RSAEncryption``.

    Each item (``level="sample"``) or each whole chunk (``"chunk"``) is one RSA block, so it must
    fit in 190 bytes: RSA suits tiny samples only (use :class:`FernetEncryption` otherwise).
    A new instance generates a key pair; :meth:`load` / :meth:`load_keys` restore saved keys.

    Parameters
    ----------
    password
        Protects the private key in saved files (``""``: saved unencrypted).
    level
        ``"sample"`` or ``"chunk"``.
    """

    algorithm = "rsa"

    def __init__(self, password: str, level: Literal["sample", "chunk"] = "sample") -> None:
        if level not in ("sample", "chunk"):
            raise EncryptionError(f"encryption level must be 'sample' or 'chunk', got {level!r}")
        if not isinstance(password, str):
            raise EncryptionError(f"RSAEncryption(password=...) must be a str, got {type(password).__name__}")
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.password = password
        self.level = level
        self.private_key: Any = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_KEY_BITS)
        self.public_key: Any = self.private_key.public_key()

    @staticmethod
    def _padding() -> Any:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return padding.OAEP(
            mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
        )

    def encrypt(self, data: bytes) -> bytes:
        if self.public_key is None:
            raise EncryptionError("RSAEncryption has no public key to encrypt with")
        limit = self.public_key.key_size // 8 - 2 * 32 - 2
        if len(data) > limit:
            raise EncryptionError(
                f"RSA ({self.public_key.key_size}-bit, OAEP SHA-256) encrypts at most {limit} bytes per "
                f"{'sample' if self.level == 'sample' else 'chunk'}, got {len(data)}: use FernetEncryption"
                + (" or level='sample'" if self.level == "chunk" else "")
            )
        return bytes(self.public_key.encrypt(bytes(data), self._padding()))

    def decrypt(self, data: bytes) -> bytes:
        from aiolit.errors import DecryptionError

        if self.private_key is None:
            raise EncryptionError("RSAEncryption has no private key: load it with load_keys() or load()")
        try:
            return bytes(self.private_key.decrypt(bytes(data), self._padding()))
        except ValueError:
            raise DecryptionError(
                "RSA decryption failed: wrong key, or the data is not encrypted with it"
            ) from None

    def state_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "level": self.level}

    def __getstate__(self) -> dict[str, Any]:
        """PEM keys (private one encrypted with the password), password and level: LitData's layout."""
        from cryptography.hazmat.primitives import serialization

        protect: Any = (
            serialization.BestAvailableEncryption(self.password.encode())
            if self.password
            else serialization.NoEncryption()
        )
        private = None
        if self.private_key is not None:
            private = self.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, protect
            ).decode()
        public = None
        if self.public_key is not None:
            public = self.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
        return {"private_key": private, "public_key": public, "password": self.password, "level": self.level}

    def __setstate__(self, state: dict[str, Any]) -> None:
        from cryptography.hazmat.primitives import serialization

        self.password = state.get("password") or ""
        self.level = state["level"]
        if self.level not in ("sample", "chunk"):
            raise EncryptionError(f"encryption level must be 'sample' or 'chunk', got {self.level!r}")
        password = self.password.encode() if self.password else None
        try:
            self.private_key = (
                serialization.load_pem_private_key(state["private_key"].encode(), password=password)
                if state.get("private_key")
                else None
            )
        except (ValueError, TypeError) as exc:
            from aiolit.errors import DecryptionError

            raise DecryptionError(f"cannot open the RSA private key: {exc}") from None
        self.public_key = (
            serialization.load_pem_public_key(state["public_key"].encode())
            if state.get("public_key")
            else None
        )

    def save(self, file_path: str) -> None:
        """Write LitData's key file: both PEM keys, the level and (as LitData) the password."""
        with open(file_path, "w") as f:
            json.dump(self.__getstate__(), f)

    if TYPE_CHECKING:

        @classmethod
        def load(cls, file_path: str, password: str | None = None) -> RSAEncryption:
            """See :func:`_rsa_load`."""

    else:
        load = _ClassOrInstance(
            lambda cls, into, file_path, password=None: _rsa_load(cls, into, file_path, password)
        )

    def save_keys(self, private_key_path: str, public_key_path: str) -> None:
        """Write the two PEM files (the private key encrypted with the password)."""
        state = self.__getstate__()
        if not state["private_key"] or not state["public_key"]:
            raise EncryptionError("RSAEncryption.save_keys needs both keys")
        with open(private_key_path, "w") as f:
            f.write(state["private_key"])
        with open(public_key_path, "w") as f:
            f.write(state["public_key"])

    def load_keys(self, private_key_path: str, public_key_path: str, password: str) -> None:
        """Replace this instance's keys with the two PEM files (``password`` opens the private one)."""
        from cryptography.hazmat.primitives import serialization

        try:
            with open(private_key_path, "rb") as f:
                self.private_key = serialization.load_pem_private_key(
                    f.read(), password=password.encode() if password else None
                )
            with open(public_key_path, "rb") as f:
                self.public_key = serialization.load_pem_public_key(f.read())
        except (ValueError, TypeError) as exc:
            from aiolit.errors import DecryptionError

            raise DecryptionError(f"cannot open the RSA keys: {exc}") from None


def _rsa_load(
    cls: type[RSAEncryption], into: RSAEncryption | None, file_path: str, password: str | None
) -> RSAEncryption:
    """Restore an encryption saved by :meth:`RSAEncryption.save` (or by LitData).

    The file's password opens the private key, as LitData; ``password`` is used when the file has none.
    """
    state = dict(_read_key_file(file_path, "rsa"))
    if not state.get("password") and password:
        state["password"] = password
    if "level" not in state:
        raise EncryptionError(f"cannot read the rsa key file {file_path}: no 'level'")
    target = into if into is not None else cls.__new__(cls)
    target.__setstate__(state)
    return target


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")
