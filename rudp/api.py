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
- ``shutdown()`` is the half-close: our FIN follows every queued message and
  ``send`` raises ``LocalProtocolError`` from then on, but the connection keeps
  receiving: ``recv`` and iteration go on returning the peer's messages until
  the peer's own FIN ends them.  (The peer's direction closes when it reads our
  FIN: the core has no half-closed state on that side, specs/protocol.md
  section 6.3, so the peer must have queued what it has to say by then; it can
  still be delivered after our FIN.)
- ``close()`` is the full close and never loses data silently.  Our FIN
  follows every queued message and ``close()`` waits until the peer has
  acknowledged every message, or the core gives up (``peer_timeout`` of
  silence, ``max_retransmits``): then it raises the ``ConnectionFailed`` the
  failure calls for (``PeerUnreachable``, ...) with ``.undelivered``.  It also
  raises when messages were lost before the close (even if an earlier call
  already reported it): ``close()`` answers "did everything I sent arrive?".
  Then it waits at most ``close_linger`` (6 s) more for our FIN's
  acknowledgement, so the peer knows we are done (no error if it does not
  come: nothing of ours is at stake).  ``linger`` (option, seconds) bounds
  the whole wait: when it runs out with messages unacknowledged the
  connection is reset and ``rudp.LingerExpired`` (a ``PeerUnreachable``)
  lists them.  ``linger=0`` never waits.  A second ``close()`` returns at
  once.  Unread messages are dropped by the close.  Once the last connection
  (and listener) of a socket is closed, its I/O thread may stay up to
  ``close_linger`` longer, as TCP's TIME_WAIT does, to acknowledge again
  what the peer retransmits because our last acknowledgement was lost.
- ``with`` closes on exit.  When the block is left by an exception, an error
  from that close does not replace it: it is added to the exception as a note
  and logged (``rudp`` logger).
- A ``Connection`` (or ``Listener``) dropped without ``close()`` is closed
  gracefully in the background when it is garbage-collected (with a
  ``ResourceWarning``, as for an unclosed socket): its I/O thread and
  descriptors go once that close is done.  One still open at interpreter exit
  is closed then.  Either way a message never acknowledged is named in a
  warning on stderr (``rudp: warning: ... N message(s) never acknowledged
  ...``).
- Threads: one thread may read while another writes (and a third flushes);
  every call is serialised on the engine's lock only for its bookkeeping.
- Options: ``rudp.Config`` field names (or ``config=``) plus the driver
  options of ``rudp.drivers.DriverOptions`` (``linger``, ``send_buffer``,
  ``backlog``, ``retry``, ...; ``local_addr`` for ``connect`` only).
"""

from __future__ import annotations

import contextlib
import socket as _socket
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from rudp.core.endpoint import Association
from rudp.drivers._common import (
    ConnectionLedger,
    attach_close_error,
    default_local_address,
    split_options,
)
from rudp.drivers.blocking import (
    Engine,
    acknowledged,
    finish_close,
    has_room,
    ledger,
)
from rudp.drivers.lifetime import finalize_dropped, register_for_exit
from rudp.errors import (
    ConnectionClosed,
    ConnectionFailed,
    LocalProtocolError,
    MessageTooLarge,
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


class Connection:
    """One reliable, ordered message connection (see the module docs)."""

    def __init__(self, engine: Engine, assoc: Association) -> None:
        """(Made by ``connect`` and ``Listener.accept``, with ``engine.cond`` held.)"""
        engine.acquire()
        self._engine = engine
        self._assoc = assoc
        self._ledger: ConnectionLedger = ledger(assoc)
        self._closed = False
        self._shut_down = False
        options = engine.options
        self.linger = options.linger
        """Longest ``close()`` waits, in seconds; None: until acknowledged or given up."""
        self.send_buffer = options.send_buffer
        """Unacknowledged bytes after which ``send`` blocks."""
        self.label = f"rudp.Connection on {engine.sock.getsockname()!r} to {assoc.address!r}"
        """How warnings name this connection."""
        self._finalizer = finalize_dropped(self, engine, [assoc], self.label)
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
        """Queue one message; block only while the send buffer is full.

        Raises ``LocalProtocolError`` after ``shutdown()`` or ``close()``,
        ``ConnectionClosed`` once the peer has closed, a ``ConnectionFailed``
        after a failure and ``rudp.Timeout`` if no room came within ``timeout``.
        """
        data = bytes(data)
        engine = self._engine
        assoc = self._assoc
        deadline = None if timeout is None else time.monotonic() + timeout
        size, limit = len(data), self.send_buffer
        with engine.cond:
            self._check_sendable()
            engine.wait_until(lambda: has_room(assoc, size, limit), deadline)
            self._check_sendable()
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

    def _check_sendable(self) -> None:
        self._check_usable()
        if self._shut_down:
            raise LocalProtocolError("send() after shutdown()")

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the peer has acknowledged every message sent so far."""
        engine = self._engine
        deadline = None if timeout is None else time.monotonic() + timeout
        with engine.cond:
            self._check_usable()
            engine.wait_until(lambda: acknowledged(self._assoc), deadline)
            self._check_usable()

    def shutdown(self) -> None:
        """Half-close: send our FIN after every queued message, and keep receiving.

        ``send`` raises ``LocalProtocolError`` from now on; ``recv`` and
        iteration return the peer's messages until its own FIN ends them.
        Returns at once (``close()`` or ``flush()`` wait for the
        acknowledgements).  Idempotent; raises the failure if the connection
        already failed and ``LocalProtocolError`` after ``close()``.
        """
        engine = self._engine
        with engine.cond:
            self._check_usable()
            if self._shut_down:
                return
            self._shut_down = True
            if not self._ledger.terminated:
                with contextlib.suppress(LocalProtocolError):  # the peer's FIN closed it
                    self._assoc.close(engine.now())
                engine.pump()

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
        """Full close: FIN after every queued message; wait until all is acknowledged.

        Raises the ``ConnectionFailed`` the failure calls for (with
        ``undelivered``) if any message was never acknowledged, and
        ``LingerExpired`` if ``linger`` ran out first (see the module docs).
        A second call returns at once.
        """
        errors = self._close_all()
        if errors:
            raise errors[0]

    def _close_all(self) -> list[ConnectionFailed]:
        """``close()`` returning, instead of raising, what was lost (at-exit closes)."""
        engine = self._engine
        try:
            with engine.cond:
                if self._closed:
                    return []
                self._closed = self._shut_down = True
                errors = finish_close(engine, [self._assoc], self.linger)
                engine.cond.notify_all()
        finally:
            if self._finalizer.detach() is not None:  # only the first close releases
                register_for_exit(self, False)
                engine.release()
        return errors

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as error:
            attach_close_error(exc, error, self.label)


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
        with engine.cond:
            engine.acquire()
        self._engine = engine
        self._closed = False
        self.address: Any = engine.sock.getsockname()
        """The bound address (with the real port when bound to port 0)."""
        self.label = f"rudp.Listener on {self.address!r}"
        """How warnings name this listener."""
        engine.start()
        self._finalizer = finalize_dropped(self, engine, [], self.label, stop_accepting=True)
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
            return Connection(engine, found[0])

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
        self._finalizer.detach()
        register_for_exit(self, False)
        engine.release()

    def _close_all(self) -> list[ConnectionFailed]:
        """``close()`` for the at-exit registry (a listener sends nothing: it loses nothing)."""
        self.close()
        return []

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as error:  # pragma: no cover - closing a listener raises nothing
            attach_close_error(exc, error, self.label)

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
        deadline = None if timeout is None else time.monotonic() + timeout
        with engine.cond:
            assoc = engine.endpoint.connect(peer, engine.now())
            led = ledger(assoc)
            engine.pump()
            engine.wait_until(lambda: led.connected or led.terminated, deadline)
            if led.failed is not None:
                raise led.error()
            if not led.connected:  # pragma: no cover - the engine died under us (a bug)
                raise ConnectionFailed("connect() failed: the I/O thread stopped", ())
            return Connection(engine, assoc)
    except BaseException:
        engine.close()
        raise
