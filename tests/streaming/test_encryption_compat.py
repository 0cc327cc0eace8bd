"""LitData's encryption API on datasets: Fernet's two ``load`` forms, wrong keys, RSA both ways."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import InvalidToken

from aiolit import optimize
from aiolit.errors import DecryptionError, EncryptionError, OptimizeError
from aiolit.streaming import StreamingDataLoader, StreamingDataset
from aiolit.utilities.encryption import FernetEncryption, RSAEncryption

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "format"))
from _format_helpers import GOLDEN, cases
from _oracle_helpers import import_litdata, isolate_litdata, normalize

WANT = [cases.scalars(i) for i in range(cases.N)]


def golden(tmp_path: Path, case: str) -> tuple[str, str]:
    """A private copy of 0.2.76/<case> and its key file."""
    dst = tmp_path / case
    shutil.copytree(GOLDEN / "0.2.76" / case, dst)
    return str(dst), str(GOLDEN / "0.2.76" / f"{case}.key.json")


@pytest.mark.parametrize("case", ["fernet_sample", "fernet_chunk"])
def test_fernet_instance_load_reads_litdata_dataset(tmp_path: Path, case: str) -> None:
    path, key_file = golden(tmp_path, case)
    # the README's form: load into an instance, with its password; the file sets salt and level
    fernet = FernetEncryption(password=cases.FERNET_PASSWORD, level="sample")
    assert fernet.load(key_file) is fernet
    assert fernet.level == case.removeprefix("fernet_")
    classic = FernetEncryption.load(key_file, cases.FERNET_PASSWORD)
    assert fernet.key == classic.key and fernet.salt == classic.salt
    ds = StreamingDataset(path, encryption=fernet)
    assert [ds[i] for i in range(len(ds))] == WANT
    assert list(StreamingDataset(path, encryption=classic)) == WANT
    # an instance's load may name another password
    other = FernetEncryption(password="not-it").load(key_file, cases.FERNET_PASSWORD)
    assert other.key == classic.key


def test_fernet_classmethod_load_needs_a_password(tmp_path: Path) -> None:
    _, key_file = golden(tmp_path, "fernet_chunk")
    with pytest.raises(EncryptionError, match=r"needs the password: FernetEncryption.load\(path, password\)"):
        FernetEncryption.load(key_file)
    (tmp_path / "rsa.json").write_text('{"algorithm": "rsa", "level": "sample"}')
    with pytest.raises(EncryptionError, match="is a 'rsa' key file, not fernet"):
        FernetEncryption.load(str(tmp_path / "rsa.json"), "pw")


@pytest.mark.parametrize("case", ["fernet_sample", "fernet_chunk"])
def test_wrong_fernet_password_is_invalid_token(tmp_path: Path, case: str) -> None:
    path, key_file = golden(tmp_path, case)
    wrong = FernetEncryption(password="wrong-password").load(key_file)
    assert issubclass(DecryptionError, EncryptionError) and issubclass(DecryptionError, InvalidToken)
    ds = StreamingDataset(path, encryption=wrong)
    for read in (lambda: list(ds), lambda: ds[3], lambda: asyncio.run(ds.aget(3))):
        # a LitData user's `except InvalidToken` and aiolit's `except EncryptionError` both catch it
        with pytest.raises(InvalidToken) as caught:
            read()
        assert isinstance(caught.value, DecryptionError)
        assert "Fernet decryption failed: wrong password or key file" in str(caught.value)


# -- RSA ----------------------------------------------------------------------------------------


def _tiny(i: int) -> tuple[int, int]:
    return cases.ints(i)  # 48-byte chunks of 2 items: RSA (2048-bit OAEP) holds at most 190 bytes


def _keep(batch: list[Any]) -> list[Any]:
    return batch


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[RSAEncryption, str]:
    """One generated key pair (2048-bit generation takes ~0.1-1 s), saved as LitData does."""
    enc = RSAEncryption("rsa-password", level="sample")
    path = tmp_path_factory.mktemp("rsa") / "rsa.json"
    enc.save(str(path))
    return enc, str(path)


def _with_level(key: tuple[RSAEncryption, str], level: str) -> RSAEncryption:
    enc = RSAEncryption.load(key[1], "rsa-password")
    enc.level = level  # type: ignore[assignment]
    return enc


@pytest.mark.parametrize("level", ["sample", "chunk"])
def test_rsa_aiolit_writes_both_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rsa_key: tuple[RSAEncryption, str], level: str
) -> None:
    out = tmp_path / "out"
    optimize(
        fn=_tiny, inputs=list(range(9)), output_dir=str(out), chunk_size=2, num_workers=1, start_method="fork",
        encryption=_with_level(rsa_key, level), verbose=False,
    )  # fmt: skip
    want = [cases.ints(i) for i in range(9)]
    # aiolit reads with a key loaded from the saved file (class and instance forms)
    reader = RSAEncryption.load(rsa_key[1], "rsa-password")
    reader.level = level  # type: ignore[assignment]
    ds = StreamingDataset(str(out), encryption=reader)
    assert list(ds) == want
    assert [ds[i] for i in range(9)] == want
    loader = StreamingDataLoader(ds, batch_size=2, num_workers=2, collate_fn=_keep)  # pickles the key
    assert sorted(x for batch in loader for x in batch) == want
    # LitData reads it with its own RSAEncryption.load of aiolit's key file
    litdata = import_litdata()
    isolate_litdata(monkeypatch, tmp_path)
    from litdata.utilities.encryption import RSAEncryption as LitRSA

    lit = LitRSA.load(rsa_key[1], "rsa-password")
    lit.level = level
    lit_ds = litdata.StreamingDataset(str(out), encryption=lit)
    assert [normalize(lit_ds[i]) for i in range(len(lit_ds))] == want


def test_rsa_litdata_writes_aiolit_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    litdata = import_litdata()
    isolate_litdata(monkeypatch, tmp_path)
    from litdata.utilities.encryption import RSAEncryption as LitRSA

    lit = LitRSA("lit-password", level="sample")
    out = tmp_path / "out"
    litdata.optimize(
        fn=_tiny, inputs=list(range(7)), output_dir=str(out), chunk_size=3, num_workers=1,
        start_method="fork", verbose=False, encryption=lit,
    )  # fmt: skip
    lit.save(str(tmp_path / "key.json"))
    lit.save_keys(str(tmp_path / "priv.pem"), str(tmp_path / "pub.pem"))
    want = [cases.ints(i) for i in range(7)]
    enc = RSAEncryption.load(str(tmp_path / "key.json"), "lit-password")
    assert list(StreamingDataset(str(out), encryption=enc)) == want
    # the PEM pair through load_keys, into an instance with fresh keys
    other = RSAEncryption("lit-password")
    other.load_keys(str(tmp_path / "priv.pem"), str(tmp_path / "pub.pem"), "lit-password")
    ds = StreamingDataset(str(out), encryption=other)
    assert asyncio.run(ds.aget(6)) == want[6]
    # a key pair that did not write it: a DecryptionError (an InvalidToken too)
    with pytest.raises(DecryptionError, match="RSA decryption failed: wrong key"):
        list(StreamingDataset(str(out), encryption=RSAEncryption("x")))
    with pytest.raises(DecryptionError, match="cannot open the RSA keys"):
        other.load_keys(str(tmp_path / "priv.pem"), str(tmp_path / "pub.pem"), "wrong")


def test_rsa_errors(tmp_path: Path, rsa_key: tuple[RSAEncryption, str]) -> None:
    big = _with_level(rsa_key, "sample")
    with pytest.raises(EncryptionError, match=r"encrypts at most 190 bytes per sample, got 191: use Fernet"):
        big.encrypt(b"x" * 191)
    with pytest.raises((OptimizeError, EncryptionError), match="encrypts at most 190 bytes per chunk"):
        optimize(
            fn=_tiny, inputs=list(range(40)), output_dir=str(tmp_path / "o"), chunk_size=20,
            num_workers=1, start_method="fork", encryption=_with_level(rsa_key, "chunk"), verbose=False,
        )  # fmt: skip
    with pytest.raises(EncryptionError, match="level must be 'sample' or 'chunk'"):
        RSAEncryption("pw", level="file")  # type: ignore[arg-type]
    out = tmp_path / "plain"
    optimize(
        fn=_tiny, inputs=list(range(4)), output_dir=str(out), chunk_size=2, num_workers=1, start_method="fork",
        encryption=big, verbose=False,
    )  # fmt: skip
    with pytest.raises(EncryptionError, match=r"pass encryption=RSAEncryption.load\(key_file, password\)"):
        StreamingDataset(str(out))
