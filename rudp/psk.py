"""Pre-shared keys on disk: what ``--psk-file`` and ``$RUDP_PSK_FILE`` name.

A key file holds the 32-byte key as 64 hexadecimal digits (whitespace around them is
ignored) or as the 32 raw bytes.  ``write_psk_file`` makes a new one that only its owner
can read, and never replaces an existing file; ``load_psk`` refuses a file that others
can read or write, as ssh refuses such a private key.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

PSK_SIZE = 32
"""Bytes of a pre-shared key (``rudp.Config.psk``)."""
PSK_FILE_ENV = "RUDP_PSK_FILE"
"""The environment variable the ``rudp`` command reads a key file's path from when no
``--psk-file`` is given (for scripts)."""
_MAX_FILE = 4096


class PskFileError(ValueError):
    """A key file that is missing, unreadable, open to other users or not a key."""


def generate_psk() -> bytes:
    """A new random key from the operating system's CSPRNG."""
    return secrets.token_bytes(PSK_SIZE)


def write_psk_file(path: str | os.PathLike[str], psk: bytes | None = None) -> bytes:
    """Write ``psk`` (or a new key) to a new file ``path``, mode 0600; return the key."""
    key = generate_psk() if psk is None else psk
    if len(key) != PSK_SIZE:
        raise ValueError("a pre-shared key is 32 bytes")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key.hex() + "\n")
    return key


def load_psk(path: str | os.PathLike[str]) -> bytes:
    """The key in ``path``.  Raises ``PskFileError`` with the reason."""
    where = Path(path)
    try:
        info = where.stat()
        if not stat.S_ISREG(info.st_mode):
            raise PskFileError(f"{where} is not a regular file")
        if info.st_mode & 0o077:
            raise PskFileError(f"{where} can be read or written by other users (chmod 600 {where})")
        with where.open("rb") as file:
            data = file.read(_MAX_FILE + 1)
    except OSError as exc:
        raise PskFileError(f"cannot read the key file {where}: {exc.strerror or exc}") from exc
    if len(data) == PSK_SIZE:
        return data
    text = data.strip()
    if len(text) == 2 * PSK_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise PskFileError(f"{where} does not hold a key: 64 hex digits or 32 raw bytes")
