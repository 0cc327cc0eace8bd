"""``from aiolit.utilities.encryption import FernetEncryption`` — LitData's import path."""

from __future__ import annotations

from aiolit.format import Encryption, FernetEncryption

__all__ = ["Encryption", "FernetEncryption"]
