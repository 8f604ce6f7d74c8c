"""A small file-transfer protocol over rudp connections (used by ``rudp send``/``recv``).

rudp already delivers whole messages, in order, exactly once, so the protocol
is just a sequence of messages on one connection.  For each file::

    sender                                   receiver
    header  {"type": "file", "name", "size", "sha256", "chunk_size", "version"}  ->
    chunk, chunk, ... (raw bytes, each <= chunk_size, ``size`` bytes in all)     ->
                          <- verdict {"type": "verdict", "name", "ok", "sha256", "error"}

then the next file, or a graceful close.  The sender reports success only after
the receiver's verdict says the SHA-256 of what it wrote matches the header:
rudp's CRC-32 guards each datagram, the SHA-256 guards the whole file (disk, a
file changed while being sent, a bug anywhere in between).

Both ends stream: the sender reads one chunk at a time (``Connection.send``
blocks while the send buffer is full), and the receiver writes each chunk to
``DIR/.NAME.partial-XXXX``, fsyncs, and renames it to ``DIR/NAME`` only after
the digest matched.  A failed or interrupted transfer deletes the partial file,
so a file under its final name is always complete and verified.

The receiver treats the header as untrusted: the name is reduced to a bare file
name (no directories, no ``..``, no absolute path), sizes are bounded, and a
file it refuses is drained and answered with an error verdict, so the
connection stays usable for the next file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rudp.errors import ConnectionClosed, RudpError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "PROTOCOL_VERSION",
    "FileHeader",
    "FileTransferResult",
    "MessageConnection",
    "Progress",
    "ProgressFactory",
    "TransferError",
    "Verdict",
    "file_sha256",
    "receive_files",
    "remove_stale_partials",
    "safe_name",
    "send_file",
    "send_files",
    "serve",
]

PROTOCOL_VERSION = 1
"""Version field of the header; a receiver refuses others."""

DEFAULT_CHUNK_SIZE = 256 * 1024
"""Bytes per chunk message.  Large enough that per-message costs vanish, small
enough that the receiver's reassembly buffer (one message) stays small."""

MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 4 * 1024 * 1024
"""Largest chunk a receiver accepts (well under ``Config.max_message_size``)."""

MAX_CONTROL_MESSAGE = 64 * 1024
"""Largest header or verdict message; anything bigger is a protocol error."""


class TransferError(RudpError):
    """A file transfer failed; the message is meant for the user."""


class MessageConnection(Protocol):
    """The part of ``rudp.connect``'s connection object this module uses."""

    def send(self, data: bytes) -> Any:
        """Queue one message (blocks while the send buffer is full)."""

    def recv(self, timeout: float | None = None) -> bytes:
        """Next message; raises ``ConnectionClosed`` after the peer's close."""

    def flush(self, timeout: float | None = None) -> Any:
        """Wait until every queued message is acknowledged."""

    def close(self) -> Any:
        """Close gracefully."""


class Progress(Protocol):
    """What a progress bar must offer (``tqdm`` does)."""

    def update(self, n: int) -> Any:
        """Count ``n`` more bytes done."""

    def close(self) -> Any:
        """Finish the bar."""


ProgressFactory = Callable[[str, int], Progress]
"""Makes a progress bar for (file name, total bytes)."""


@dataclass(frozen=True)
class FileHeader:
    """The first message of a file."""

    name: str
    size: int
    sha256: str
    chunk_size: int

    def encode(self) -> bytes:
        """The header as a JSON message."""
        return json.dumps(
            {
                "type": "file",
                "version": PROTOCOL_VERSION,
                "name": self.name,
                "size": self.size,
                "sha256": self.sha256,
                "chunk_size": self.chunk_size,
            }
        ).encode()

    @classmethod
    def decode_untrusted(cls, message: bytes) -> FileHeader:
        """Parse a header from the network; raises only :class:`TransferError`."""
        obj = _decode_json(message, "file")
        if obj.get("version") != PROTOCOL_VERSION:
            raise TransferError(f"unsupported file protocol version {obj.get('version')!r}")
        name, size, digest, chunk = (obj.get(k) for k in ("name", "size", "sha256", "chunk_size"))
        if not isinstance(name, str):
            raise TransferError("header without a file name")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise TransferError("header with a bad size")
        if not isinstance(digest, str) or not _is_sha256(digest):
            raise TransferError("header with a bad sha256")
        if not isinstance(chunk, int) or not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE:
            raise TransferError("header with a bad chunk size")
        return cls(name, size, digest, chunk)


@dataclass(frozen=True)
class Verdict:
    """The receiver's answer to one file."""

    name: str
    ok: bool
    sha256: str | None = None
    """Digest of what the receiver got (``None`` if it refused the file)."""
    error: str | None = None

    def encode(self) -> bytes:
        """The verdict as a JSON message."""
        return json.dumps(
            {
                "type": "verdict",
                "name": self.name,
                "ok": self.ok,
                "sha256": self.sha256,
                "error": self.error,
            }
        ).encode()

    @classmethod
    def decode_untrusted(cls, message: bytes) -> Verdict:
        """Parse a verdict from the network; raises only :class:`TransferError`."""
        obj = _decode_json(message, "verdict")
        ok, name, digest, error = (obj.get(k) for k in ("ok", "name", "sha256", "error"))
        if not isinstance(ok, bool) or not isinstance(name, str):
            raise TransferError("malformed verdict from the receiver")
        return cls(
            name,
            ok,
            digest if isinstance(digest, str) else None,
            error if isinstance(error, str) else None,
        )


@dataclass(frozen=True)
class FileTransferResult:
    """One file moved and verified end to end."""

    name: str
    """The file name on the receiving side."""
    path: Path
    """Local path: the source (sender) or the final file (receiver)."""
    size: int
    sha256: str
    seconds: float
    """From the header to the verdict."""

    @property
    def goodput(self) -> float:
        """Payload bytes per second (file bytes only, no headers or retransmissions)."""
        return self.size / self.seconds if self.seconds > 0 else float("inf")


def _decode_json(message: bytes, kind: str) -> dict[str, Any]:
    if len(message) > MAX_CONTROL_MESSAGE:
        raise TransferError(f"oversized {kind} message")
    try:
        obj = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        raise TransferError(f"expected a {kind} message, got undecodable bytes") from None
    if not isinstance(obj, dict) or obj.get("type") != kind:
        raise TransferError(f"expected a {kind} message")
    return obj


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def safe_name(name: str) -> str:
    """Reduce a sender-chosen name to a bare file name, or raise :class:`TransferError`.

    ``dir/file.txt`` becomes ``file.txt``; absolute paths, drive letters, any
    ``..`` component, NUL and control characters, and names that are empty
    or only dots are refused: the sender never chooses where a file lands.
    """
    if not name or len(name) > 255:
        raise TransferError(f"refused file name {name!r}: empty or too long")
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise TransferError(f"refused file name {name!r}: control character")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise TransferError(f"refused file name {name!r}: absolute path")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise TransferError(f"refused file name {name!r}: '..' component")
    base = parts[-1]
    if not base.strip("."):
        raise TransferError(f"refused file name {name!r}: not a file name")
    return base


def file_sha256(path: str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


# --- sending -------------------------------------------------------------------


def send_file(
    conn: MessageConnection,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressFactory | None = None,
    verdict_timeout: float | None = None,
) -> FileTransferResult:
    """Send one file and wait for the receiver's verdict.

    Returns only when the receiver confirmed the SHA-256.  Raises
    :class:`TransferError` if the receiver refused the file or its digest
    differs, and rudp's exceptions (``PeerUnreachable``, ``ConnectionClosed``,
    ``Timeout``) if the connection fails.
    """
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be within {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    path = Path(path)
    name = path.name if name is None else name
    started = time.monotonic()
    expected = file_sha256(path, chunk_size)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        conn.send(FileHeader(name, size, expected, chunk_size).encode())
        bar = _AckedProgress(conn, progress(name, size), size) if progress is not None else None
        digest = hashlib.sha256()
        sent = 0
        try:
            # Exactly ``size`` bytes go out even if the file grows meanwhile; a
            # file that changed is caught by the digest below.
            while sent < size:
                block = f.read(min(chunk_size, size - sent))
                if not block:
                    raise TransferError(f"{path}: file shrank while being sent")
                digest.update(block)
                conn.send(block)
                sent += len(block)
                if bar is not None:
                    bar.sent(len(block))
            message = _recv_verdict(conn, bar, verdict_timeout)
        finally:
            if bar is not None:
                bar.close()
    verdict = Verdict.decode_untrusted(message)
    if not verdict.ok:
        raise TransferError(f"receiver refused {name}: {verdict.error or 'no reason given'}")
    if digest.hexdigest() != expected:
        raise TransferError(f"{path}: file changed while being sent")
    if verdict.sha256 != expected:
        raise TransferError(f"{name}: receiver reports a different sha256")
    return FileTransferResult(name, path, size, expected, time.monotonic() - started)


class _AckedProgress:
    """Drives a progress bar by bytes the peer *acknowledged*, not bytes queued.

    ``send`` returns as soon as a chunk is buffered (up to the driver's send
    buffer, megabytes), so counting queued bytes would make rate and ETA lie;
    the connection's ``stats.send_queue_bytes`` tells what is still unacknowledged.
    """

    def __init__(self, conn: MessageConnection, bar: Progress, size: int) -> None:
        self._conn = conn
        self._bar = bar
        self._size = size
        self._queued = 0
        self._shown = 0

    def sent(self, n: int) -> None:
        self._queued += n
        self.refresh()

    def refresh(self, done: bool = False) -> None:
        stats = getattr(self._conn, "stats", None)
        pending = getattr(stats, "send_queue_bytes", 0)
        acked = self._size if done else self._queued - (pending if isinstance(pending, int) else 0)
        acked = min(self._size, acked)
        if acked > self._shown:
            self._bar.update(acked - self._shown)
            self._shown = acked

    def close(self) -> None:
        self._bar.close()


def _recv_verdict(
    conn: MessageConnection, bar: _AckedProgress | None, timeout: float | None
) -> bytes:
    if bar is None:
        return conn.recv(timeout=timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    # Wake up a few times a second to move the bar while the tail is acknowledged;
    # bounded by ``timeout`` and by the connection's own peer_timeout.
    while True:
        step = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
        try:
            message = conn.recv(timeout=step)
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            bar.refresh()
            continue
        bar.refresh(done=True)
        return message


def send_files(
    conn: MessageConnection,
    paths: Iterable[str | os.PathLike[str]],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressFactory | None = None,
    on_result: Callable[[FileTransferResult], object] | None = None,
    on_error: Callable[[Path, TransferError], object] | None = None,
) -> tuple[list[FileTransferResult], list[tuple[Path, TransferError]]]:
    """Send several files on one connection, then close it gracefully.

    A file the receiver refuses (or whose digest differs) is reported through
    ``on_error`` and the others still go; connection failures propagate.
    Returns (successes, failures).
    """
    done: list[FileTransferResult] = []
    failed: list[tuple[Path, TransferError]] = []
    for raw in paths:
        path = Path(raw)
        try:
            result = send_file(conn, path, chunk_size=chunk_size, progress=progress)
        except TransferError as exc:
            failed.append((path, exc))
            if on_error is not None:
                on_error(path, exc)
            continue
        done.append(result)
        if on_result is not None:
            on_result(result)
    conn.close()
    return done, failed


# --- receiving -----------------------------------------------------------------


def receive_files(
    conn: MessageConnection,
    output_dir: str | os.PathLike[str],
    *,
    max_files: int | None = None,
    progress: ProgressFactory | None = None,
    on_error: Callable[[str, TransferError], object] | None = None,
) -> Iterator[FileTransferResult]:
    """Receive files from one connection into ``output_dir``, yielding each verified file.

    Stops when the sender closes the connection, or after ``max_files``
    verified files.  A refused or corrupt file is reported through
    ``on_error`` (and answered with an error verdict); a protocol violation
    raises :class:`TransferError`; connection failures propagate as rudp
    exceptions.  No partial file survives any of these.
    """
    out = Path(output_dir)
    received = 0
    while max_files is None or received < max_files:
        try:
            message = conn.recv()
        except ConnectionClosed:
            return
        header = FileHeader.decode_untrusted(message)
        try:
            result = _receive_one(conn, out, header, progress)
        except _Refused as refused:
            if on_error is not None:
                on_error(header.name, refused.error)
            continue
        received += 1
        yield result


class _Refused(Exception):
    """A file was answered with an error verdict; the connection stays in sync."""

    def __init__(self, error: TransferError) -> None:
        super().__init__(str(error))
        self.error = error


def _receive_one(
    conn: MessageConnection, out: Path, header: FileHeader, progress: ProgressFactory | None
) -> FileTransferResult:
    started = time.monotonic()
    try:
        name = safe_name(header.name)
        free = shutil.disk_usage(out).free
        if header.size > free:
            raise TransferError(f"{name}: {header.size} bytes do not fit ({free} free)")
    except (TransferError, OSError) as exc:
        error = exc if isinstance(exc, TransferError) else TransferError(str(exc))
        # Answer at once, then swallow the chunks so the next file lines up.
        conn.send(Verdict(header.name, ok=False, error=str(error)).encode())
        _drain(conn, header)
        raise _Refused(error) from None

    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}{PARTIAL_MARK}", dir=out)
    tmp = Path(tmp_name)
    bar = progress(name, header.size) if progress is not None else None
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            remaining = header.size
            while remaining:
                chunk = _next_chunk(conn, header, remaining)
                f.write(chunk)
                digest.update(chunk)
                remaining -= len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            f.flush()
            # Durable before it gets its final name (rename-after-fsync).
            os.fsync(f.fileno())
        actual = digest.hexdigest()
        if actual != header.sha256:
            tmp.unlink()
            conn.send(
                Verdict(header.name, ok=False, sha256=actual, error="sha256 mismatch").encode()
            )
            raise _Refused(TransferError(f"{name}: sha256 mismatch, file discarded"))
        final = out / name
        os.replace(tmp, final)
        _fsync_dir(out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        if bar is not None:
            bar.close()
    conn.send(Verdict(header.name, ok=True, sha256=actual).encode())
    return FileTransferResult(name, final, header.size, actual, time.monotonic() - started)


def _next_chunk(conn: MessageConnection, header: FileHeader, remaining: int) -> bytes:
    try:
        chunk = conn.recv()
    except ConnectionClosed:
        raise TransferError(
            f"{header.name}: sender closed with {remaining} bytes missing"
        ) from None
    if len(chunk) > header.chunk_size or len(chunk) > remaining or not chunk:
        raise TransferError(f"{header.name}: chunk of {len(chunk)} bytes violates the header")
    return chunk


def _drain(conn: MessageConnection, header: FileHeader) -> None:
    remaining = header.size
    while remaining:
        remaining -= len(_next_chunk(conn, header, remaining))


PARTIAL_MARK = ".partial-"
"""Between a partial file's name and mkstemp's random suffix: ``.NAME.partial-XXXXXXXX``."""

_STALE_PARTIAL = re.compile(r"\..+" + re.escape(PARTIAL_MARK) + r"[A-Za-z0-9_]{8}")


def remove_stale_partials(out: Path) -> list[Path]:
    """Delete the partial files a receiver killed mid-transfer left in ``out``.

    Only names of the exact form this module creates (a dot, the name,
    ``.partial-`` and mkstemp's eight random characters) and only regular files:
    a user's ``notes.partial`` or a directory is left alone.  Returns what it removed.
    """
    removed: list[Path] = []
    for entry in out.iterdir():
        if _STALE_PARTIAL.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is (POSIX); not every
    # platform can open a directory, which is fine: the data itself is synced.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class _Listener(Protocol):
    def accept(self, timeout: float | None = None) -> Any: ...


def serve(
    listener: _Listener,
    output_dir: str | os.PathLike[str],
    *,
    once: bool = False,
    timeout: float | None = None,
    progress: ProgressFactory | None = None,
    on_result: Callable[[FileTransferResult], object] | None = None,
    on_error: Callable[[str, Exception], object] | None = None,
) -> list[FileTransferResult]:
    """Accept senders one after another and receive their files into ``output_dir``.

    With ``once``, return after the first verified file (its verdict flushed to
    the sender).  ``timeout`` bounds the whole call: ``rudp.Timeout`` is raised
    if it expires first.  A failed connection is reported through ``on_error``
    and the next sender is accepted.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    results: list[FileTransferResult] = []
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        conn = listener.accept(timeout=remaining)
        try:
            for result in receive_files(
                conn,
                output_dir,
                max_files=1 if once else None,
                progress=progress,
                on_error=on_error,
            ):
                results.append(result)
                if on_result is not None:
                    on_result(result)
        except (TransferError, RudpError, OSError) as exc:
            if on_error is not None:
                on_error("connection", exc)
            with contextlib.suppress(RudpError, OSError):
                conn.close()
            continue
        if once and results:
            # The verdict must reach the sender before we go away.
            with contextlib.suppress(RudpError, OSError):
                conn.flush()
        with contextlib.suppress(RudpError, OSError):
            conn.close()
        if once and results:
            return results
