"""Serving senders: a thread per connection, a bound on how many, an idle timeout.

One stranger must not be able to stall the receiver for everybody else, so each
accepted connection gets its own worker thread, at most ``max_senders`` at
once (a connection beyond that is answered with an error verdict and closed),
and a connection that delivers no *message* for ``idle_timeout`` seconds is
told so and closed: rudp's keepalive pings keep a connection alive but do not
count as activity here.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rudp.apps.filetransfer.protocol import IdleTimeout, TransferError, Verdict
from rudp.apps.filetransfer.receiving import log, receive_files
from rudp.apps.filetransfer.sending import FileTransferResult, MessageConnection, ProgressFactory
from rudp.errors import RudpError
from rudp.errors import Timeout as RudpTimeout

DEFAULT_MAX_SENDERS = 16
"""Connections served at once; each costs a thread and a partial file."""

DEFAULT_IDLE_TIMEOUT = 30.0
"""Seconds a connection may go without delivering a message (the sender's own
``peer_timeout`` default): long enough for a sender reading a slow disk."""

CLOSE_LINGER = 10.0
"""Longest a finished connection's close waits for the sender's last acks, so a
sender that vanished after its last file frees its slot soon."""

ABORT_LINGER = 1.0
"""Longest the close of a connection we end (idle, broken, busy) waits: enough
for an error verdict to be acknowledged by a live peer."""

STOP_LINGER = 0.25
"""Per connection still open when :func:`serve` returns (interrupt, timeout, once)."""

ACCEPT_SLICE = 0.5
"""With ``once``, how often the accepting thread checks whether a worker got the file."""


class _Listener(Protocol):
    def accept(self, timeout: float | None = None) -> Any: ...


class _IdleBound:
    """A connection whose ``recv`` gives up after ``idle_timeout`` without a message."""

    def __init__(self, conn: MessageConnection, idle_timeout: float | None) -> None:
        self._conn = conn
        self._idle = idle_timeout

    @property
    def stats(self) -> Any:
        return getattr(self._conn, "stats", None)

    def send(self, data: bytes) -> Any:
        return self._conn.send(data)

    def recv(self, timeout: float | None = None) -> bytes:
        idle = self._idle
        if idle is None or (timeout is not None and timeout < idle):
            return self._conn.recv(timeout=timeout)
        try:
            return self._conn.recv(timeout=idle)
        except TimeoutError:
            raise IdleTimeout(
                f"no message from the sender for {idle:g} s "
                "(keepalives do not count): connection ended"
            ) from None

    def flush(self, timeout: float | None = None) -> Any:
        return self._conn.flush(timeout=timeout)

    def close(self) -> Any:
        return self._conn.close()


def _label(conn: object) -> str:
    peer = getattr(conn, "peer_address", None)
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = f"[{peer[0]}]" if ":" in str(peer[0]) else str(peer[0])
        return f"sender {host}:{peer[1]}"
    return "sender"


def _close(conn: Any, linger: float) -> None:
    """Close ``conn`` waiting at most ``linger`` for acks; what is lost was reported already."""
    if hasattr(conn, "linger"):
        conn.linger = linger if conn.linger is None else min(conn.linger, linger)
    with contextlib.suppress(RudpError, OSError):
        conn.close()


class _Server:
    def __init__(
        self,
        listener: _Listener,
        out: Path,
        *,
        once: bool,
        progress: ProgressFactory | None,
        on_result: Callable[[FileTransferResult], object] | None,
        on_error: Callable[[str, Exception], object] | None,
        overwrite: bool,
        max_senders: int,
        idle_timeout: float | None,
    ) -> None:
        self.listener = listener
        self.out = out
        self.once = once
        self.progress = progress
        self.on_result = on_result
        self.on_error = on_error
        self.overwrite = overwrite
        self.max_senders = max_senders
        self.idle_timeout = idle_timeout
        self.results: list[FileTransferResult] = []
        self._lock = threading.Lock()
        self._active: dict[threading.Thread, Any] = {}  # worker -> its connection
        self._got_file = threading.Event()  # with once: a worker verified its file
        self._stopping = threading.Event()

    def report(self, what: str, exc: Exception) -> None:
        if self.on_error is not None:
            self.on_error(what, exc)
        else:
            log.warning("%s failed: %s", what, exc)

    def run(self, deadline: float | None) -> list[FileTransferResult]:
        try:
            while not self._got_file.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise RudpTimeout("no file arrived in time" if self.once else "timed out")
                wait = remaining
                if self.once:  # wake up to notice a worker's verified file
                    wait = ACCEPT_SLICE if remaining is None else min(ACCEPT_SLICE, remaining)
                try:
                    conn = self.listener.accept(timeout=wait)
                except RudpTimeout:
                    if self.once:
                        continue  # the loop head checks the deadline
                    raise
                self._start(conn)
            return list(self.results)
        finally:
            self._stop()

    def _start(self, conn: Any) -> None:
        with self._lock:
            busy = len(self._active) >= self.max_senders
            if not busy:
                worker = threading.Thread(
                    target=self._work, args=(conn,), name=f"rudp recv: {_label(conn)}", daemon=True
                )
                self._active[worker] = conn
        if busy:
            # Refused here, in the accepting thread: the close is bounded by ABORT_LINGER.
            error = TransferError(
                f"receiver busy: {self.max_senders} senders are being served, try again later"
            )
            with contextlib.suppress(RudpError, OSError):
                conn.send(Verdict("", False, error=str(error)).encode())
            _close(conn, ABORT_LINGER)
            self.report(_label(conn), error)
            return
        worker.start()

    def _work(self, conn: Any) -> None:
        label = _label(conn)
        bounded = _IdleBound(conn, self.idle_timeout)
        got_file = False
        try:
            for result in receive_files(
                bounded,
                self.out,
                max_files=1 if self.once else None,
                progress=self.progress,
                on_error=lambda name, error: self.report(label, error),
                overwrite=self.overwrite,
            ):
                got_file = True
                with self._lock:
                    self.results.append(result)
                if self.on_result is not None:
                    self.on_result(result)
            if got_file and self.once:
                # The verdict must reach the sender before we go away.
                with contextlib.suppress(RudpError, OSError):
                    conn.flush(timeout=CLOSE_LINGER)
            _close(conn, CLOSE_LINGER)
        except Exception as exc:  # whatever one peer causes ends that peer only
            if self._stopping.is_set():
                exc = TransferError(f"transfer interrupted, the receiver is stopping ({exc})")
            self.report(label, exc)
            _close(conn, ABORT_LINGER)
        finally:
            with self._lock:
                self._active.pop(threading.current_thread(), None)
            if got_file and self.once:
                self._got_file.set()

    def _stop(self) -> None:
        """End every connection still served (their partial files are removed) and wait."""
        self._stopping.set()
        with self._lock:
            active = list(self._active.items())
        for _, conn in active:
            _close(conn, STOP_LINGER)  # wakes the worker's recv with ConnectionClosed
        for worker, _ in active:
            worker.join(timeout=10)


def serve(
    listener: _Listener,
    output_dir: str | os.PathLike[str],
    *,
    once: bool = False,
    timeout: float | None = None,
    progress: ProgressFactory | None = None,
    on_result: Callable[[FileTransferResult], object] | None = None,
    on_error: Callable[[str, Exception], object] | None = None,
    overwrite: bool = False,
    max_senders: int = DEFAULT_MAX_SENDERS,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
) -> list[FileTransferResult]:
    """Accept senders and receive their files into ``output_dir``, up to ``max_senders`` at once.

    Each connection is served by its own thread; one beyond ``max_senders`` is
    answered with an error verdict ("receiver busy") and closed.  A connection
    that delivers no message for ``idle_timeout`` seconds (``None``: no limit) is
    told so and closed.  Whatever a sender's input causes is reported through
    ``on_error(what, exception)`` (default: logged) and ends that connection only.

    With ``once``, return after the first verified file (its verdict flushed to
    the sender).  ``timeout`` bounds the whole call: ``rudp.Timeout`` is raised
    if it expires first.  When the call ends (``once``, ``timeout``, an
    interrupt), connections still being served are closed and their partial
    files removed.  ``overwrite``: see :func:`receive_files`.
    """
    if max_senders < 1:
        raise ValueError("max_senders must be at least 1")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError("idle_timeout must be positive (or None)")
    deadline = None if timeout is None else time.monotonic() + timeout
    server = _Server(
        listener,
        Path(output_dir),
        once=once,
        progress=progress,
        on_result=on_result,
        on_error=on_error,
        overwrite=overwrite,
        max_senders=max_senders,
        idle_timeout=idle_timeout,
    )
    return server.run(deadline)
