"""Unit tests of ``rudp.psk``: the key files behind ``--psk-file`` and ``$RUDP_PSK_FILE``.

A key file holds 64 hex digits (whitespace around them ignored) or 32 raw bytes;
``write_psk_file`` creates one with mode 0600 and never replaces a file; ``load_psk``
refuses files other users can read or write, non-regular files and wrong contents, with a
``PskFileError`` (a ``ValueError``) that names the file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from rudp import psk as psk_files
from rudp.config import Config
from rudp.psk import PSK_FILE_ENV, PSK_SIZE, PskFileError, generate_psk, load_psk, write_psk_file

KEY = bytes(range(32))


def key_file(path: Path, content: bytes, mode: int = 0o600) -> Path:
    """``content`` in ``path`` with exactly ``mode`` (the umask does not apply)."""
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_constants() -> None:
    assert PSK_SIZE == 32
    assert PSK_FILE_ENV == "RUDP_PSK_FILE"
    assert issubclass(PskFileError, ValueError)


def test_generated_keys_are_32_fresh_bytes() -> None:
    keys = {generate_psk() for _ in range(8)}
    assert len(keys) == 8
    assert all(isinstance(key, bytes) and len(key) == PSK_SIZE for key in keys)


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "key"
    key = write_psk_file(path)
    assert len(key) == PSK_SIZE
    assert load_psk(path) == key
    assert path.read_text() == key.hex() + "\n"  # the documented form: 64 hex digits
    assert Config(psk=load_psk(path)).psk == key  # what the faces are given


def test_write_a_given_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    assert write_psk_file(path, KEY) == KEY
    assert load_psk(path) == KEY


def test_write_refuses_a_key_of_the_wrong_size_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "key"
    with pytest.raises(ValueError, match="32 bytes"):
        write_psk_file(path, b"short")
    assert not path.exists()


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_written_file_has_mode_0600_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "key"
    with umask(mask):
        write_psk_file(path)
    info = path.stat()
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600


def test_write_never_replaces_an_existing_file(tmp_path: Path) -> None:
    path = key_file(tmp_path / "key", b"precious\n", 0o644)
    with pytest.raises(FileExistsError):
        write_psk_file(path)
    assert path.read_bytes() == b"precious\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_does_not_follow_a_symlink(tmp_path: Path) -> None:
    """O_EXCL: a link planted at the key's path (even a dangling one) is refused, so the
    key cannot be written to wherever the link points."""
    target = tmp_path / "elsewhere"
    link = tmp_path / "key"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        write_psk_file(link)
    assert not target.exists()


def test_load_raw_32_bytes(tmp_path: Path) -> None:
    raw = bytes([0x0A, 0x20, 0x0D, 0x09]) * 8  # whitespace bytes: must not be stripped
    assert load_psk(key_file(tmp_path / "raw", raw)) == raw
    assert load_psk(key_file(tmp_path / "key", KEY)) == KEY


@pytest.mark.parametrize(
    "text",
    [
        KEY.hex(),
        KEY.hex() + "\n",
        KEY.hex().upper() + "\r\n",
        "  \t" + KEY.hex() + "\n\n  ",
    ],
    ids=["bare", "newline", "upper-crlf", "surrounded"],
)
def test_load_hex_with_whitespace_around(tmp_path: Path, text: str) -> None:
    assert load_psk(key_file(tmp_path / "key", text.encode())) == KEY


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        KEY.hex()[:-1].encode() + b"\n",  # 63 digits
        KEY.hex().encode() + b"00\n",  # 66 digits
        KEY[:31],  # 31 raw bytes
        KEY + b"\x00",  # 33 raw bytes
        KEY * 2,  # 64 raw bytes that are not hex digits
        b"x" * 5000,  # far too long
    ],
    ids=["empty", "blank", "63-hex", "66-hex", "31-raw", "33-raw", "64-raw", "huge"],
)
def test_load_refuses_the_wrong_length(tmp_path: Path, content: bytes) -> None:
    path = key_file(tmp_path / "key", content)
    with pytest.raises(PskFileError, match="does not hold a key") as info:
        load_psk(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "zz" + KEY.hex()[2:],
        KEY.hex()[:32] + " " + KEY.hex()[33:],  # 64 characters, one a space
        "0x" + KEY.hex()[2:],
        "\u00e9" * 32,  # 64 bytes of UTF-8, not ASCII
    ],
    ids=["zz", "inner-space", "0x", "non-ascii"],
)
def test_load_refuses_non_hex(tmp_path: Path, text: str) -> None:
    path = key_file(tmp_path / "key", text.encode())
    with pytest.raises(PskFileError, match="does not hold a key") as info:
        load_psk(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o666, 0o610])
def test_load_refuses_a_file_other_users_can_use(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path / "key", KEY.hex().encode())
    os.chmod(path, mode)
    with pytest.raises(PskFileError, match="other users") as info:
        load_psk(path)
    message = str(info.value)
    assert str(path) in message and "chmod 600" in message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_load_accepts_owner_only_modes(tmp_path: Path, mode: int) -> None:
    assert load_psk(key_file(tmp_path / "key", KEY.hex().encode(), mode)) == KEY


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    with pytest.raises(PskFileError, match="not a regular file") as info:
        load_psk(directory)
    assert str(directory) in str(info.value)


def test_load_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading would block until a writer came: it is refused first."""
    fifo = tmp_path / "key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(PskFileError, match="not a regular file"):
        load_psk(fifo)


def test_load_follows_a_symlink_to_a_good_key(tmp_path: Path) -> None:
    target = key_file(tmp_path / "real", KEY.hex().encode())
    link = tmp_path / "key"
    link.symlink_to(target)
    assert load_psk(link) == KEY


def test_load_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(PskFileError, match="cannot read the key file") as info:
        load_psk(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_load_takes_str_paths(tmp_path: Path) -> None:
    path = key_file(tmp_path / "key", KEY.hex().encode())
    assert psk_files.load_psk(str(path)) == KEY
