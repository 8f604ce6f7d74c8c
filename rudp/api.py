"""The blocking connection API: ``rudp.listen`` / ``rudp.connect``.

::

    with rudp.listen(("127.0.0.1", 0)) as listener:        # server
        conn = listener.accept()
        for message in conn:                               # ends when the peer closes
            conn.send(message)

    with rudp.connect(address) as conn:                    # client
        conn.send(b"hello")
        reply = conn.recv(timeout=5)

Semantics
=========

- ``send(data)`` queues a message and returns at once unless the connection
  already holds ``send_buffer`` (option, default 4 MiB) unacknowledged bytes;
  then it blocks until acknowledgements make room (a single larger message
  is accepted when nothing is queued).
- ``recv(timeout=None)`` returns the next message, in order, exactly once.
  Once the peer has closed gracefully and every message it sent has been
  returned, it raises ``rudp.ConnectionClosed`` (iteration simply stops).
- ``flush(timeout=None)`` waits until the peer has acknowledged every message.
- When the peer stops answering, ``send``, ``recv`` and ``flush`` raise
  ``rudp.PeerUnreachable`` within ``peer_timeout`` (30 s by default, the
  keepalive makes an idle connection notice too) with ``.undelivered`` = the
  payloads never acknowledged, in send order; again on every later call.  A
  reset raises ``rudp.ConnectionReset``, a protocol violation
  ``rudp.PeerProtocolError``: all are ``rudp.ConnectionFailed`` (and
  ``ConnectionError``), none is a ``TimeoutError``, so a polling loop
  ``except TimeoutError: continue`` ends on a failure.
- ``close()`` is graceful: our FIN follows every queued message; it lingers
  up to ``linger`` seconds (option, default 5.0) for them to be acknowledged.
- Threads: one thread may read while another writes (and a third flushes);
  every call is serialised on the engine's lock only for its bookkeeping.
- Options: ``rudp.Config`` field names (or ``config=``) plus the driver
  options of ``rudp.drivers.DriverOptions`` (``linger``, ``send_buffer``,
  ``backlog``, ...; ``local_addr`` for ``connect`` only).
"""

from __future__ import annotations

import contextlib
import socket as _socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from rudp.core.endpoint import Association
from rudp.drivers._common import ConnectionLedger, default_local_address, split_options
from rudp.drivers.blocking import (
    Engine,
    acknowledged,
    close_complete,
    has_room,
    ledger,
    register_for_exit,
)
from rudp.errors import (
    ConnectionClosed,
    ConnectionFailed,
    LocalProtocolError,
    MessageTooLarge,
    Timeout,
)

__all__ = ["Connection", "Listener", "connect", "listen"]

_NOT_FOR_LISTENERS = ("timeout", "local_addr")
"""Client-side driver options: a listener binds the address it is given and waits in accept."""


def _family_and_address(address: Any) -> tuple[int, Any]:
    """Resolve ``(host, port)`` to an address family and the address ``recvfrom`` reports."""
    if not isinstance(address, tuple) or len(address) < 2:
        raise TypeError(f"address must be a (host, port) tuple, not {address!r}")
    host, port = address[0], address[1]
    if host in ("", None):
        return _socket.AF_INET, ("0.0.0.0", port)
    family, _, _, _, sockaddr = _socket.getaddrinfo(host, port, 0, _socket.SOCK_DGRAM)[0]
    return family, sockaddr


class _EngineShare:
    """Reference count of the users of one engine; the last release closes it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._users = 0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.engine.close()


class Connection:
    """One reliable, ordered message connection (see the module docs)."""

    def __init__(self, share: _EngineShare, assoc: Association) -> None:
        share.acquire()
        self._share = share
        self._engine = share.engine
        self._assoc = assoc
        self._ledger: ConnectionLedger = ledger(assoc)
        self._closed = False
        options = self._engine.options
        self.linger = options.linger
        """Seconds ``close()`` waits for unacknowledged messages."""
        self.send_buffer = options.send_buffer
        """Unacknowledged bytes after which ``send`` blocks."""
        register_for_exit(self)

    # --- addresses and stats -------------------------------------------------------

    @property
    def peer_address(self) -> Any:
        """The peer's address."""
        return self._assoc.address

    @property
    def local_address(self) -> Any:
        """The address of the UDP socket under this connection."""
        return self._engine.sock.getsockname()

    @property
    def stats(self) -> Any:
        """A snapshot of the core's ``Stats``."""
        with self._engine.cond:
            return self._assoc.connection.stats

    def __repr__(self) -> str:
        return f"<rudp.Connection peer={self.peer_address!r} closed={self._closed}>"

    # --- errors ------------------------------------------------------------------

    def _failure_error(self) -> ConnectionFailed | ConnectionClosed | None:
        """The exception the connection's end calls for, or None while it is alive."""
        led = self._ledger
        if led.failed is not None:
            if led.peer_closed and not led.failed.undelivered:
                # The peer closed and left before acknowledging our FIN: nothing lost.
                return ConnectionClosed("connection closed by peer")
            return led.error()
        if self._engine.io_error is not None:  # pragma: no cover - a driver bug
            return ConnectionFailed(f"I/O thread died: {self._engine.io_error!r}", ())
        return None

    def _check_usable(self) -> None:
        if self._closed:
            raise LocalProtocolError("the connection is closed")
        error = self._failure_error()
        if error is not None:
            raise error

    # --- sending -----------------------------------------------------------------

    def send(self, data: Any, timeout: float | None = None) -> None:
        """Queue one message; block only while the send buffer is full."""
        data = bytes(data)
        engine = self._engine
        assoc = self._assoc
        deadline = None if timeout is None else time.monotonic() + timeout
        size, limit = len(data), self.send_buffer
        with engine.cond:
            self._check_usable()
            engine.wait_until(lambda: has_room(assoc, size, limit), deadline)
            self._check_usable()
            if self._ledger.peer_closed:
                raise ConnectionClosed("the peer closed the connection")
            try:
                message_id = assoc.send(data)
            except MessageTooLarge:
                raise
            except LocalProtocolError as exc:
                raise ConnectionClosed(str(exc)) from exc
            self._ledger.track(message_id, data)
            engine.pump()

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the peer has acknowledged every message sent so far."""
        engine = self._engine
        deadline = None if timeout is None else time.monotonic() + timeout
        with engine.cond:
            self._check_usable()
            engine.wait_until(lambda: acknowledged(self._assoc), deadline)
            self._check_usable()

    # --- receiving ---------------------------------------------------------------

    def recv(self, timeout: float | None = None) -> bytes:
        """Next message; ``ConnectionClosed`` after the peer's close, ``Timeout`` on timeout."""
        engine = self._engine
        led = self._ledger
        deadline = None if timeout is None else time.monotonic() + timeout
        with engine.cond:
            engine.wait_until(
                lambda: bool(led.inbox) or led.peer_closed or led.terminated or self._closed,
                deadline,
            )
            if led.inbox:
                message = led.pop()
                engine.resume(self._assoc)
                return message
            if self._closed or engine.closed:
                raise ConnectionClosed("the connection is closed")
            error = self._failure_error()
            if error is not None:
                raise error
            raise ConnectionClosed("connection closed by peer")

    def __iter__(self) -> Iterator[bytes]:
        """Messages until the peer closes."""
        while True:
            try:
                yield self.recv()
            except ConnectionClosed:
                return

    # --- closing -----------------------------------------------------------------

    def close(self) -> None:
        """Graceful close: lingers up to ``linger`` s for queued messages to be acknowledged."""
        engine = self._engine
        with engine.cond:
            if self._closed:
                return
            self._closed = True
            assoc = self._assoc
            if not self._ledger.terminated:
                with contextlib.suppress(LocalProtocolError):  # already closing
                    assoc.close(engine.now())
                engine.pump()
                if self.linger > 0:
                    with contextlib.suppress(Timeout):
                        engine.wait_until(
                            lambda: close_complete(assoc), time.monotonic() + self.linger
                        )
            engine.cond.notify_all()
        register_for_exit(self, False)
        self._share.release()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Listener:
    """Accepts connections on one UDP socket (see ``listen``)."""

    def __init__(self, address: Any, **options: Any) -> None:
        config, driver_options = split_options(options, reject=_NOT_FOR_LISTENERS)
        family, bind_address = _family_and_address(address)
        engine = Engine(family, config, driver_options, accepting=True)
        try:
            engine.sock.bind(bind_address)
        except BaseException:
            engine.close()
            raise
        self._share = _EngineShare(engine)
        self._share.acquire()
        self._engine = engine
        self._closed = False
        self.address: Any = engine.sock.getsockname()
        """The bound address (with the real port when bound to port 0)."""
        engine.start()
        register_for_exit(self)

    def accept(self, timeout: float | None = None) -> Connection:
        """The next connection whose handshake completed; ``Timeout`` after ``timeout``."""
        engine = self._engine
        deadline = None if timeout is None else time.monotonic() + timeout
        found: list[Association] = []

        def take() -> bool:
            assoc = engine.endpoint.accept(established_only=True)
            if assoc is not None:
                found.append(assoc)
            return bool(found) or self._closed

        with engine.cond:
            if self._closed:
                raise LocalProtocolError("the listener is closed")
            engine.wait_until(take, deadline)
            if not found:
                raise LocalProtocolError("the listener is closed")
            return Connection(self._share, found[0])

    def close(self) -> None:
        """Stop accepting; connections already accepted keep working until closed."""
        engine = self._engine
        with engine.cond:
            if self._closed:
                return
            self._closed = True
            engine.endpoint.accepting = False
            while (assoc := engine.endpoint.accept()) is not None:
                assoc.abort("listener closed")
            engine.pump()
        register_for_exit(self, False)
        self._share.release()

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<rudp.Listener address={self.address!r} closed={self._closed}>"


def listen(address: Any, **options: Any) -> Listener:
    """Bind a UDP socket at ``address`` and accept rudp connections on it."""
    return Listener(address, **options)


def connect(address: Any, timeout: float | None = 10.0, **options: Any) -> Connection:
    """Open a connection to ``address``; wait up to ``timeout`` for the handshake.

    Raises ``rudp.Timeout`` if the handshake does not finish in time and
    ``rudp.PeerUnreachable`` if the give-up budget runs out first
    (``rudp.ConnectionReset`` if the peer refuses).
    """
    config, driver_options = split_options({**options, "timeout": timeout})
    family, peer = _family_and_address(address)
    engine = Engine(family, config, driver_options)
    try:
        engine.sock.bind(driver_options.local_addr or default_local_address(family, peer))
        engine.start()
        share = _EngineShare(engine)
        deadline = None if timeout is None else time.monotonic() + timeout
        with engine.cond:
            assoc = engine.endpoint.connect(peer, engine.now())
            led = ledger(assoc)
            engine.pump()
            engine.wait_until(lambda: led.connected or led.terminated, deadline)
            connection = Connection(share, assoc)
        error = connection._failure_error()
        if error is not None:
            raise error
    except BaseException:
        engine.close()
        raise
    return connection
