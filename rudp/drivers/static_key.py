"""The per-user static key the drivers give their endpoints (specs/protocol.md section 6.6).

A stateless reset only works across a restart if the restarted program computes
the same tokens as before, so the key must outlive the process.  It lives in a
file, by default ``$XDG_STATE_HOME/rudp/static-key`` (``~/.local/state/rudp/static-key``
without ``XDG_STATE_HOME``), or wherever ``RUDP_STATIC_KEY_FILE`` points.

The file is created once, atomically: 32 bytes of ``os.urandom`` go into a
temporary file of mode 0600 in the same directory, which is then hard-linked to
the final name; ``os.link`` fails rather than replace a key another process
created meanwhile, and that key is used instead.  If the key can be neither read
nor created (a read-only home, a filesystem without hard links, a damaged file),
``load_static_key`` logs a warning and returns a random key kept in memory for the
life of the process: restart detection then works only between endpoints of that
process, and a restarted program's peers notice it only through ``peer_timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from rudp.core.tokens import STATIC_KEY_SIZE

__all__ = ["ENV_VAR", "load_static_key", "static_key_path"]

ENV_VAR = "RUDP_STATIC_KEY_FILE"
"""Environment variable naming the key file (tests point it at a temporary path)."""

logger = logging.getLogger("rudp")

_lock = threading.Lock()
_cache: dict[str, bytes] = {}  # path -> key: read once per process and path
_fallback: bytes | None = None  # the in-memory key when no file can be used


def static_key_path() -> Path:
    """Where the key file is: ``$RUDP_STATIC_KEY_FILE``, else the XDG state directory."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state else Path.home() / ".local" / "state"
    return base / "rudp" / "static-key"


def load_static_key(path: Path | None = None) -> bytes:
    """The persistent static key (created on first use); never raises.

    Falls back to a per-process random key, with a warning, when the file cannot
    be used (module docs).
    """
    with _lock:
        try:
            path = path if path is not None else static_key_path()
        except (OSError, RuntimeError) as exc:  # no home directory to be found
            return _in_memory_key(f"no key file location ({exc})")
        cached = _cache.get(str(path))
        if cached is not None:
            return cached
        try:
            key = _read(path)
            if key is None:
                key = _create(path)
        except (OSError, ValueError) as exc:
            return _in_memory_key(f"{path}: {exc}")
        _cache[str(path)] = key
        return key


def _read(path: Path) -> bytes | None:
    """The key in ``path``, None if there is no file; ValueError if it is damaged."""
    try:
        with path.open("rb") as file:
            key = file.read(STATIC_KEY_SIZE + 1)
    except FileNotFoundError:
        return None
    if len(key) != STATIC_KEY_SIZE:
        # Not overwritten: it may be another version's, or someone's mistake to look at.
        raise ValueError(f"a static key file holds {STATIC_KEY_SIZE} bytes, not {len(key)}")
    return key


def _create(path: Path) -> bytes:
    """Write a fresh key to ``path`` without ever replacing one that appeared meanwhile."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = os.urandom(STATIC_KEY_SIZE)
    # mkstemp creates the file with mode 0600: the key is never readable by others.
    fd, temporary = tempfile.mkstemp(prefix=".static-key-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(key)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # atomic, and fails if the name exists
        except FileExistsError:
            existing = _read(path)  # another process won the race: use its key
            if existing is None:  # pragma: no cover - it vanished again at once
                raise OSError("the key file appeared and vanished") from None
            return existing
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return key


def _in_memory_key(why: str) -> bytes:
    """The process's in-memory key (caller holds ``_lock``)."""
    global _fallback
    if _fallback is None:
        logger.warning(
            "rudp: cannot use a persistent static key (%s); using one in memory: peers "
            "will not detect a restart of this program by stateless reset",
            why,
        )
        _fallback = os.urandom(STATIC_KEY_SIZE)
    return _fallback
