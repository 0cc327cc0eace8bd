"""``from aiolit.utilities.encryption import FernetEncryption, RSAEncryption`` — LitData's import path."""

from __future__ import annotations

from aiolit.format import Encryption, FernetEncryption, RSAEncryption

__all__ = ["Encryption", "FernetEncryption", "RSAEncryption"]
