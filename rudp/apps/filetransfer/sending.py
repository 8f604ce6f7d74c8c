"""The sending half: one file or several on one connection (see the package docs)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rudp.apps.filetransfer.protocol import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    FileHeader,
    FileTrailer,
    TransferError,
    Verdict,
)
from rudp.errors import ConnectionClosed, ConnectionFailed, Timeout


class MessageConnection(Protocol):
    """The part of ``rudp.connect``'s connection object this package uses."""

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

FILE_CHANGED = "file changed while being sent"
"""The sender's reason in the trailer of a file modified while it was read."""
FILE_SHRANK = "file shrank while being sent"
"""The sender's reason in the trailer of a file that ended before its announced size."""


@dataclass(frozen=True)
class FileTransferResult:
    """One file moved and verified end to end."""

    name: str
    """The file name on the receiving side (the one it was stored under)."""
    path: Path
    """Local path: the source (sender) or the final file (receiver)."""
    size: int
    sha256: str
    seconds: float
    """From the header to the verdict."""
    requested_name: str | None = None
    """The name the sender asked for, when the receiver stored it under another."""

    @property
    def goodput(self) -> float:
        """Payload bytes per second (file bytes only, no headers or retransmissions)."""
        return self.size / self.seconds if self.seconds > 0 else float("inf")


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

    The file is read once, hashed as it is sent; its SHA-256 follows the last
    chunk.  Returns only when the receiver confirmed that digest; the result's
    ``name`` is the name the receiver stored it under.  Raises
    :class:`TransferError` if the receiver refused the file (its reason in the
    message) or its digest differs, if the file changed or shrank while being
    sent (the receiver is told to discard it; the connection stays usable for
    the next file), and rudp's exceptions (``PeerUnreachable``,
    ``ConnectionClosed``, ``Timeout``) if the connection fails without a verdict
    explaining why.
    """
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be within {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    path = Path(path)
    name = path.name if name is None else name
    started = time.monotonic()
    with open(path, "rb") as f:
        opened = os.fstat(f.fileno())
        size = opened.st_size
        bar = _AckedProgress(conn, progress(name, size), size) if progress is not None else None
        digest = hashlib.sha256()
        try:
            try:
                conn.send(FileHeader(name, size, chunk_size).encode())
                # Exactly ``size`` bytes go out even if the file grows meanwhile; a
                # file that changed is caught by the fstat below.
                sent = 0
                shrank = False
                while sent < size:
                    block = f.read(min(chunk_size, size - sent))
                    if not block:
                        # The header promised ``size`` bytes: zeros make up the rest, so
                        # the connection stays in step for the next file, and the trailer
                        # tells the receiver to discard this one.
                        shrank = True
                        block = bytes(min(chunk_size, size - sent))
                    digest.update(block)
                    conn.send(block)
                    sent += len(block)
                    if bar is not None:
                        bar.sent(len(block))
                # What we read may mix old and new bytes if the file was written
                # meanwhile: its digest would match on the receiver and vouch for a
                # file that never existed, so the trailer aborts it instead.
                changed = _identity(os.fstat(f.fileno())) != _identity(opened)
                problem = FILE_SHRANK if shrank else FILE_CHANGED if changed else None
                trailer = (
                    FileTrailer(digest.hexdigest())
                    if problem is None
                    else FileTrailer(None, problem)
                )
                conn.send(trailer.encode())
            except (ConnectionClosed, ConnectionFailed) as exc:
                # A receiver that refuses (busy, disk full, bad header) answers and
                # closes; its reason is in our inbox and beats "peer closed".
                _raise_pending_refusal(conn, name, exc)
                raise
            message = _recv_verdict(conn, bar, verdict_timeout)
        finally:
            if bar is not None:
                bar.close()
    if problem is not None:  # the receiver refused it, as asked: our reason is what matters
        raise TransferError(f"{path}: {problem}")
    verdict = Verdict.decode_untrusted(message)
    if not verdict.ok:
        raise TransferError(f"receiver refused {name}: {verdict.error or 'no reason given'}")
    expected = digest.hexdigest()
    if verdict.sha256 != expected:
        raise TransferError(f"{name}: receiver reports a different sha256")
    stored = verdict.stored_as if verdict.stored_as not in (None, name) else None
    return FileTransferResult(
        stored or name, path, size, expected, time.monotonic() - started, name if stored else None
    )


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is written to.

    A write updates mtime and ctime; a file system with coarse timestamps can
    miss a write within the same tick as the one before the open, which is as
    close as fstat can get without reading the file twice.
    """
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _raise_pending_refusal(conn: MessageConnection, name: str, cause: Exception) -> None:
    """Raise the receiver's refusal if one arrived before the connection ended."""
    try:
        message = conn.recv(timeout=0)
    except (ConnectionClosed, ConnectionFailed, Timeout, TimeoutError):
        return
    try:
        verdict = Verdict.decode_untrusted(message)
    except TransferError:
        return
    if not verdict.ok:
        raise TransferError(
            f"receiver refused {name}: {verdict.error or 'no reason given'}"
        ) from cause


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

    A file the receiver refuses (or whose digest differs, or that changed while
    being sent) is reported through ``on_error`` and the others still go;
    connection failures propagate.
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
